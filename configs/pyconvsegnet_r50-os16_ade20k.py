# PyConvSegNet, ResNet-50 with output stride 16 (stage 4 only: stride 1, dilation 2), Table 5.
_base_ = './pyconvsegnet_r50_ade20k.py'
model = dict(backbone=dict(strides=(1, 2, 2, 1), dilations=(1, 1, 1, 2)))
