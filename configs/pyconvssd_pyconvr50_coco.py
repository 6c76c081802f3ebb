# PyConvSSD-50 (Appendix A.1, Table 8): PyConvResNet-50 cut after stage 3 (stage 3 stride 1:
# 1024x38x38) and the PyConvSSD neck, whose extra layers downsample with PyConvs of 4, 3 and 2
# levels (38->19->10->5), then two plain 3x3 convs without padding (5->3->1). Same head,
# default boxes, data and schedule as configs/ssd_r50_coco.py.
# ImageNet weights: tools/convert/official_to_mmpretrain.py SRC
#   checkpoints/pyconvresnet50_backbone.pth --backbone-only
_base_ = './ssd_r50_coco.py'
model = dict(
    backbone=dict(
        _delete_=True,
        type='PyConvResNet',
        depth=50,
        num_stages=3,
        strides=(2, 2, 1),
        out_indices=(2, ),
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/pyconvresnet50_backbone.pth')),
    neck=dict(_delete_=True, type='PyConvSSDNeck', pyramids=(4, 3, 2, 1, 1)))
