# Table 2, "(5, 4, 3, 2)": one more level per stage, the fifth with an 11x11 kernel
# (see pyconv_mm.ops.pyramid.DEFAULT_PYRAMIDS), ResNet's max pool after the stem.
_base_ = '../pyconvresnet50_8xb32_in1k.py'
model = dict(backbone=dict(pyramids=(5, 4, 3, 2), maxpool='stem'))
