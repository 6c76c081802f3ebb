# The conv_cfg drop-in on upstream heads: mmseg's FCN recipe with the 3x3 convs of its decode
# and auxiliary heads turned into 4-level PyConvs by config alone (1x1 convs stay plain).
_base_ = 'mmseg::fcn/fcn_r50-d8_4xb4-80k_ade20k-512x512.py'
custom_imports = dict(imports=['pyconv_mm'], allow_failed_imports=False)
complexity_input_shape = (3, 512, 512)
model = dict(
    decode_head=dict(conv_cfg=dict(type='PyConv', levels=4)),
    auxiliary_head=dict(conv_cfg=dict(type='PyConv', levels=4)))
