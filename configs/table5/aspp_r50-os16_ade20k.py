# Table 5 at output stride 16: the aspp head over ResNet-50 with stage 4 dilated (2) only.
_base_ = './aspp_r50-os8_ade20k.py'
model = dict(backbone=dict(strides=(1, 2, 2, 1), dilations=(1, 1, 1, 2)))
