# Table 2, "(1, 1, 1, 1) baseline": one 3x3 level per stage and the max pool after the stem,
# which is ResNet-50 itself (25.56M parameters, 4.14 GFLOPs).
_base_ = '../pyconvresnet50_8xb32_in1k.py'
model = dict(backbone=dict(pyramids=(1, 1, 1, 1), maxpool='stem'))
