# PyConvSegNet, PyConvResNet-50 with output stride 16 (stage 4: stride 1, dilation 2).
_base_ = './pyconvsegnet_pyconvr50_ade20k.py'
model = dict(backbone=dict(strides=(2, 2, 2, 1), dilations=(1, 1, 1, 2)))
