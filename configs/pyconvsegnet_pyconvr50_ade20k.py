# PyConvSegNet with a PyConvResNet-50 backbone (output stride 8) on ADE20K (Table 6).
# As in the authors' code, stages 3 and 4 keep stride 1 (their shortcut max pools too) and
# dilate the PyConv levels by 2 and 4. ImageNet weights: convert the authors' file with
#   python tools/convert/official_to_mmpretrain.py pyconvresnet50.pth \
#       checkpoints/pyconvresnet50_backbone.pth --backbone-only
_base_ = './pyconvsegnet_r50_ade20k.py'
model = dict(
    backbone=dict(
        _delete_=True,
        type='PyConvResNet',
        depth=50,
        strides=(2, 2, 1, 1),
        dilations=(1, 1, 2, 4),
        out_indices=(0, 1, 2, 3),
        norm_cfg={{_base_.norm_cfg}},
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/pyconvresnet50_backbone.pth')))
