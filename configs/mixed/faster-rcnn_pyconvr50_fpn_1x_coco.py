# mmdet's Faster R-CNN + FPN recipe with the ResNet-50 backbone swapped for PyConvResNet-50.
# Only the backbone differs; FPN takes the same 256/512/1024/2048 channels.
_base_ = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['pyconv_mm'], allow_failed_imports=False)
complexity_input_shape = (3, 800, 1333)  # mmdet's usual size for FLOPs
model = dict(
    backbone=dict(
        _delete_=True,  # drop the ResNet-only keys (style, num_stages, ...) of the base
        type='PyConvResNet',
        depth=50,
        out_indices=(0, 1, 2, 3),
        frozen_stages=1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=True,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/pyconvresnet50_backbone.pth')))
