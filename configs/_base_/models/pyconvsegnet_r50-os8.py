# PyConvSegNet (Section 5): a dilated ResNet-50 (output stride 8) with the PyConvPH head and
# an auxiliary FCN head on stage 3 (loss weight 0.4), bilinear upsampling with
# align_corners=True, as in the authors' code. The backbone is the authors' plain ResNet
# baseline (7x7 stem and max pool: mmseg's ResNet with style 'pytorch'); its ImageNet weights
# are torchvision's.
custom_imports = dict(imports=['pyconv_mm'], allow_failed_imports=False)
norm_cfg = dict(type='SyncBN', requires_grad=True)  # plain BN when not distributed

data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size=(473, 473))
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='ResNet',
        depth=50,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        strides=(1, 2, 1, 1),
        dilations=(1, 1, 2, 4),
        style='pytorch',
        contract_dilation=False,
        norm_cfg=norm_cfg,
        norm_eval=False,
        init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet50')),
    decode_head=dict(
        type='PyConvPH',
        in_channels=2048,
        in_index=3,
        channels=256,
        reduction_channels=512,
        pool_size=9,
        dropout_ratio=0.1,
        num_classes=150,
        norm_cfg=norm_cfg,
        align_corners=True,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    auxiliary_head=dict(
        type='FCNHead',
        in_channels=1024,
        in_index=2,
        channels=256,
        num_convs=1,
        kernel_size=3,
        concat_input=False,
        dropout_ratio=0.1,
        num_classes=150,
        norm_cfg=norm_cfg,
        align_corners=True,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4)),
    train_cfg=dict(),
    test_cfg=dict(mode='slide', crop_size=(473, 473), stride=(316, 316)))
