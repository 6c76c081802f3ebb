# mmpretrain's ResNet-50 ImageNet recipe with the backbone swapped for PyConvResNet-50.
_base_ = 'mmpretrain::resnet/resnet50_8xb32_in1k.py'
custom_imports = dict(imports=['pyconv_mm'], allow_failed_imports=False)
model = dict(backbone=dict(_delete_=True, type='PyConvResNet', depth=50, out_indices=(3, )))
