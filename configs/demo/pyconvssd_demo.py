# Demo: a small PyConvSSD (PyConvResNet-18 cut after stage 3, PyConvSSD neck, SSD head) learns
# to detect three shape categories at very different scales (COCO format) on CPU.
# The data are generated on first use (pyconv_mm/datasets/demo).
#   python tools/train.py configs/demo/pyconvssd_demo.py
#   python tools/test.py configs/demo/pyconvssd_demo.py work_dirs/pyconvssd_demo/epoch_40.pth \
#       --show-dir work_dirs/pyconvssd_demo/show
_base_ = 'mmdet::_base_/default_runtime.py'
custom_imports = dict(imports=['pyconv_mm'], allow_failed_imports=False)

data_root = __import__('pyconv_mm.datasets.demo', fromlist=['prepare']).prepare('coco') + '/'
classes = ('circle', 'square', 'triangle')
input_size = 128

model = dict(
    type='SingleStageDetector',
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_size_divisor=1),
    backbone=dict(
        type='PyConvResNet', depth=18, num_stages=3, strides=(2, 2, 1), out_indices=(2, )),
    neck=dict(
        type='PyConvSSDNeck',
        in_channels=(256, ),
        out_channels=(256, 256, 256, 128, 128),  # maps 16, 8, 4, 2, 1
        level_strides=(2, 2, 2, 2),
        level_paddings=(1, 1, 1, 1),
        pyramids=(3, 2, 1, 1)),
    bbox_head=dict(
        type='SSDHead',
        in_channels=(256, 256, 256, 128, 128),
        num_classes=len(classes),
        anchor_generator=dict(
            type='SSDAnchorGenerator',
            scale_major=False,
            input_size=input_size,
            min_sizes=[10, 20, 40, 70, 100],  # objects are 8-80 pixels wide
            max_sizes=[20, 40, 70, 100, 128],
            strides=[8, 16, 32, 64, 128],
            ratios=[[2], [2, 3], [2, 3], [2], [2]]),
        bbox_coder=dict(
            type='DeltaXYWHBBoxCoder',
            target_means=[.0, .0, .0, .0],
            target_stds=[0.1, 0.1, 0.2, 0.2])),
    train_cfg=dict(
        assigner=dict(
            type='MaxIoUAssigner',
            pos_iou_thr=0.5,
            neg_iou_thr=0.5,
            min_pos_iou=0.,
            ignore_iof_thr=-1,
            gt_max_assign_all=False),
        sampler=dict(type='PseudoSampler'),
        smoothl1_beta=1.,
        allowed_border=-1,
        pos_weight=-1,
        neg_pos_ratio=3,
        debug=False),
    test_cfg=dict(
        nms_pre=1000,
        nms=dict(type='nms', iou_threshold=0.45),
        min_bbox_size=0,
        score_thr=0.02,
        max_per_img=100))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='Resize', scale=(input_size, input_size), keep_ratio=False),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(input_size, input_size), keep_ratio=False),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=16,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    batch_sampler=None,
    dataset=dict(
        type='CocoDataset',
        data_root=data_root,
        metainfo=dict(classes=classes),
        ann_file='annotations/instances_train2017.json',
        data_prefix=dict(img='train2017/'),
        filter_cfg=dict(filter_empty_gt=True),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8,
    num_workers=2,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='CocoDataset',
        data_root=data_root,
        metainfo=dict(classes=classes),
        ann_file='annotations/instances_val2017.json',
        data_prefix=dict(img='val2017/'),
        test_mode=True,
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(
    type='CocoMetric', ann_file=data_root + 'annotations/instances_val2017.json', metric='bbox')
test_evaluator = val_evaluator

optim_wrapper = dict(
    type='OptimWrapper', optimizer=dict(type='AdamW', lr=2e-3, weight_decay=1e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=1, T_max=39, eta_min=1e-5,
         convert_to_iter_based=True),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=40, val_interval=20)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(type='CheckpointHook', interval=20, max_keep_ckpts=2))
randomness = dict(seed=0)
