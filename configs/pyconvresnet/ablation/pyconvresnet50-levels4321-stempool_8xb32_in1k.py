# Table 2, "(4, 3, 2, 1)": the paper's pyramid, ResNet's max pool after the stem.
_base_ = '../pyconvresnet50_8xb32_in1k.py'
model = dict(backbone=dict(pyramids=(4, 3, 2, 1), maxpool='stem'))
