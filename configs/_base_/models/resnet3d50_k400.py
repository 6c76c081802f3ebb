# The baseline ResNet3D-50 of Table 9 (Appendix A.2) with mmaction2's ResNet3d: a 5x7x7 stem
# (stride 1, 2, 2), a 1x3x3 max pool (stride 1, 2, 2), every 3x3 inflated to 3x3x3, temporal
# stride 2 in stages 3 and 4 (maps 16x56x56, 16x28x28, 8x14x14, 4x7x7 for 16x224x224),
# dropout 0.5 before the 400-way fc. 46,999,760 parameters.
custom_imports = dict(imports=['pyconv_mm'], allow_failed_imports=False)
model = dict(
    type='Recognizer3D',
    backbone=dict(
        type='ResNet3d',
        depth=50,
        pretrained=None,
        pretrained2d=False,
        conv1_kernel=(5, 7, 7),
        conv1_stride_t=1,
        pool1_stride_t=1,
        with_pool2=False,
        inflate=((1, 1, 1), (1, 1, 1, 1), (1, 1, 1, 1, 1, 1), (1, 1, 1)),
        inflate_style='3x3x3',
        spatial_strides=(1, 2, 2, 2),
        temporal_strides=(1, 1, 2, 2),
        norm_eval=False,
        zero_init_residual=False),
    cls_head=dict(
        type='I3DHead',
        num_classes=400,
        in_channels=2048,
        spatial_type='avg',
        dropout_ratio=0.5,
        init_std=0.01,
        average_clips='prob'),
    data_preprocessor=dict(
        type='ActionDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        format_shape='NCTHW'))
