# mmseg's UPerNet recipe on ADE20K with PyConvResNet-50 (output stride 32, stages 1-4).
_base_ = 'mmseg::upernet/upernet_r50_4xb4-80k_ade20k-512x512.py'
custom_imports = dict(imports=['pyconv_mm'], allow_failed_imports=False)
complexity_input_shape = (3, 512, 512)
model = dict(
    pretrained=None,  # the base's model-level 'pretrained' is for ResNetV1c; PyConvResNet uses init_cfg
    backbone=dict(
        _delete_=True,
        type='PyConvResNet',
        depth=50,
        out_indices=(0, 1, 2, 3),
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/pyconvresnet50_backbone.pth')))
