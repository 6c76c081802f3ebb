# mmaction2's I3D recipe (32x2 clips) with PyConvResNet3D-50, its weights inflated from the
# authors' 2D ImageNet PyConvResNet-50 (converted with tools/convert/official_to_mmpretrain.py).
_base_ = ('mmaction::recognition/i3d/'
          'i3d_imagenet-pretrained-r50_8xb8-32x2x1-100e_kinetics400-rgb.py')
custom_imports = dict(imports=['pyconv_mm'], allow_failed_imports=False)
complexity_input_shape = (1, 3, 32, 224, 224)  # one 32-frame clip
model = dict(
    backbone=dict(
        _delete_=True,
        type='PyConvResNet3D',
        depth=50,
        pretrained='checkpoints/pyconvresnet50_backbone.pth',
        pretrained2d=True))
