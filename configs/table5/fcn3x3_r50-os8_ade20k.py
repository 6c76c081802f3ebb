# Table 5 baseline head: one 3x3 conv (2048->512) over the dilated ResNet-50 (PSPNet's
# baseline), same auxiliary head, schedule and data as PyConvSegNet. mmseg's FCNHead.
_base_ = '../pyconvsegnet_r50_ade20k.py'
model = dict(
    decode_head=dict(
        _delete_=True,
        type='FCNHead',
        in_channels=2048,
        in_index=3,
        channels=512,
        num_convs=1,
        kernel_size=3,
        concat_input=False,
        dropout_ratio=0.1,
        num_classes=150,
        norm_cfg={{_base_.norm_cfg}},
        align_corners=True,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)))
