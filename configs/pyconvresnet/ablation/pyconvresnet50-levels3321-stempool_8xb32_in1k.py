# Table 2, "(3, 3, 2, 1)": PyConv levels per stage, ResNet's max pool after the stem.
_base_ = '../pyconvresnet50_8xb32_in1k.py'
model = dict(backbone=dict(pyramids=(3, 3, 2, 1), maxpool='stem'))
