# The baseline "SSD-101" of Table 8 (ResNet-101 cut after stage 3, stage 3 stride 1).
_base_ = './ssd_r50_coco.py'
model = dict(
    backbone=dict(depth=101, init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet101')))
