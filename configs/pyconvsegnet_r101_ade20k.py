# PyConvSegNet with a ResNet-101 backbone (output stride 8) on ADE20K (Table 6).
_base_ = './pyconvsegnet_r50_ade20k.py'
model = dict(
    backbone=dict(depth=101, init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet101')))
