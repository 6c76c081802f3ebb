# mmseg's DeepLabV3 recipe on ADE20K with a dilated PyConvResNet-50 (output stride 8: stages
# 3-4 stride 1 with PyConv levels dilated 2 and 4, as in PyConvSegNet).
_base_ = 'mmseg::deeplabv3/deeplabv3_r50-d8_4xb4-80k_ade20k-512x512.py'
custom_imports = dict(imports=['pyconv_mm'], allow_failed_imports=False)
complexity_input_shape = (3, 512, 512)
model = dict(
    pretrained=None,  # the base's model-level 'pretrained' is for ResNetV1c; PyConvResNet uses init_cfg
    backbone=dict(
        _delete_=True,
        type='PyConvResNet',
        depth=50,
        strides=(2, 2, 1, 1),
        dilations=(1, 1, 2, 4),
        out_indices=(0, 1, 2, 3),
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/pyconvresnet50_backbone.pth')))
