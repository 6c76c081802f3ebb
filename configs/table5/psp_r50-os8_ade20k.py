# Table 5, PSPNet's pyramid pooling module (bins 1, 2, 3, 6; 512 channels) over the dilated
# ResNet-50; same auxiliary head, schedule and data as PyConvSegNet. mmseg's PSPHead.
_base_ = '../pyconvsegnet_r50_ade20k.py'
model = dict(
    decode_head=dict(
        _delete_=True,
        type='PSPHead',
        in_channels=2048,
        in_index=3,
        channels=512,
        pool_scales=(1, 2, 3, 6),
        dropout_ratio=0.1,
        num_classes=150,
        norm_cfg={{_base_.norm_cfg}},
        align_corners=True,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)))
