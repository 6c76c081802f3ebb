# PyConvSSD-101 (Table 8): PyConvResNet-101 cut after stage 3 with the PyConvSSD neck.
_base_ = './pyconvssd_pyconvr50_coco.py'
model = dict(
    backbone=dict(
        depth=101,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/pyconvresnet101_backbone.pth')))
