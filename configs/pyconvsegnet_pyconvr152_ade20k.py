# PyConvSegNet with a PyConvResNet-152 backbone (output stride 8) on ADE20K (Table 6).
_base_ = './pyconvsegnet_pyconvr50_ade20k.py'
model = dict(
    backbone=dict(
        depth=152,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/pyconvresnet152_backbone.pth')))
