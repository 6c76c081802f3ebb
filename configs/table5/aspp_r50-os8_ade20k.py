# Table 5, DeepLabv3's ASPP (rates 12, 24, 36 with image pooling, 256 channels, 1x1 projection)
# over the dilated ResNet-50; same auxiliary head, schedule and data as PyConvSegNet.
_base_ = '../pyconvsegnet_r50_ade20k.py'
model = dict(
    decode_head=dict(
        _delete_=True,
        type='DeepLabV3ASPPHead',
        in_channels=2048,
        in_index=3,
        channels=256,
        dilations=(1, 12, 24, 36),
        bottleneck_kernel_size=1,
        dropout_ratio=0.1,
        num_classes=150,
        norm_cfg={{_base_.norm_cfg}},
        align_corners=True,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)))
