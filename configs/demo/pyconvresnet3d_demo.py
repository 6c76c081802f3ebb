# Demo: a small PyConvResNet3D (18 layers) learns six motion classes (a shape moving left,
# right, up, down, rotating or pulsing, at different speeds and sizes) from raw frames on CPU.
# The data are generated on first use (pyconv_mm/datasets/demo).
#   python tools/train.py configs/demo/pyconvresnet3d_demo.py
#   python tools/test.py configs/demo/pyconvresnet3d_demo.py \
#       work_dirs/pyconvresnet3d_demo/epoch_20.pth
_base_ = 'mmaction::_base_/default_runtime.py'
custom_imports = dict(imports=['pyconv_mm'], allow_failed_imports=False)

data_root = __import__('pyconv_mm.datasets.demo', fromlist=['prepare']).prepare('kinetics')
num_classes = 6

model = dict(
    type='Recognizer3D',
    backbone=dict(
        type='PyConvResNet3D',
        depth=18,
        stem_kernel=(3, 7, 7),
        stem_channels=32,
        base_channels=32,
        pyramids=(
            dict(kernel_sizes=[(3, 3, 3), (3, 5, 5), (5, 7, 7), (7, 9, 9)], groups=[1, 2, 4, 8]),
            dict(kernel_sizes=[(3, 3, 3), (3, 5, 5), (5, 7, 7)], groups=[1, 4, 8],
                 shares=[0.25, 0.25, 0.5]),
            dict(kernel_sizes=[(3, 3, 3), (3, 5, 5)], groups=[1, 4]),
            dict(kernel_sizes=[(3, 3, 3)], groups=[1]),
        )),
    cls_head=dict(
        type='I3DHead',
        num_classes=num_classes,
        in_channels=256,
        spatial_type='avg',
        dropout_ratio=0.2,
        init_std=0.01,
        average_clips='prob'),
    data_preprocessor=dict(
        type='ActionDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        format_shape='NCTHW'))

# no flips: left and right are classes
train_pipeline = [
    dict(type='SampleFrames', clip_len=8, frame_interval=2, num_clips=1),
    dict(type='RawFrameDecode'),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs'),
]
test_pipeline = [
    dict(type='SampleFrames', clip_len=8, frame_interval=2, num_clips=1, test_mode=True),
    dict(type='RawFrameDecode'),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs'),
]
train_dataloader = dict(
    batch_size=16,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type='RawframeDataset',
        ann_file=data_root + '/train_list.txt',
        data_prefix=dict(img=data_root + '/rawframes/train'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=10,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='RawframeDataset',
        ann_file=data_root + '/val_list.txt',
        data_prefix=dict(img=data_root + '/rawframes/val'),
        pipeline=test_pipeline,
        test_mode=True))
test_dataloader = val_dataloader
val_evaluator = dict(type='AccMetric')
test_evaluator = val_evaluator

optim_wrapper = dict(optimizer=dict(type='AdamW', lr=2e-3, weight_decay=1e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=True, begin=0, end=1,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=1, T_max=19, eta_min=1e-5,
         convert_to_iter_based=True),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=20, val_begin=1, val_interval=10)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(type='CheckpointHook', interval=10, max_keep_ckpts=2))
randomness = dict(seed=0)
