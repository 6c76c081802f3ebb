"""Point a full config (ImageNet, ADE20K, COCO, Kinetics) at the embedded demo data, small
enough for a few CPU iterations. Only data, class counts, input sizes and the schedule
change; the model and the codebase's pipeline types stay those of the config."""
from mmengine.config import Config

from pyconv_mm.datasets.demo import prepare
from pyconv_mm.datasets.demo.detection import DEMO_CLASSES as DET_CLASSES
from pyconv_mm.datasets.demo.segmentation import DEMO_CLASSES as SEG_CLASSES


def _short_schedule(cfg: Config, iters: int) -> None:
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=iters, val_interval=iters)
    cfg.val_cfg = dict(type='ValLoop')
    cfg.test_cfg = dict(type='TestLoop')
    cfg.param_scheduler = []
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', by_epoch=False, interval=iters)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1, log_metric_by_epoch=False)
    cfg.log_processor = dict(by_epoch=False)
    cfg.optim_wrapper.type = 'OptimWrapper'
    cfg.optim_wrapper.pop('loss_scale', None)
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].num_workers = 0
        cfg[loader].persistent_workers = False
        cfg[loader].batch_size = 2
    cfg.train_dataloader.sampler = dict(type='InfiniteSampler', shuffle=True)
    cfg.pop('auto_scale_lr', None)


def _seg(cfg: Config) -> None:
    root = prepare('ade20k')
    for head in ('decode_head', 'auxiliary_head'):
        if cfg.model.get(head):
            cfg.model[head].num_classes = len(SEG_CLASSES)
            cfg.model[head].norm_cfg = dict(type='BN', requires_grad=True)
    cfg.model.backbone.norm_cfg = dict(type='BN', requires_grad=True)
    cfg.model.data_preprocessor.size = (96, 96)
    cfg.model.test_cfg = dict(mode='whole')
    cfg.train_dataloader.dataset.pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations', reduce_zero_label=True),
        dict(type='RandomFlip', prob=0.5),
        dict(type='PackSegInputs')]
    test_pipeline = [dict(type='LoadImageFromFile'),
                     dict(type='LoadAnnotations', reduce_zero_label=True),
                     dict(type='PackSegInputs')]
    for loader, split in (('train_dataloader', 'training'), ('val_dataloader', 'validation'),
                          ('test_dataloader', 'validation')):
        dataset = cfg[loader].dataset
        dataset.update(data_root=root, metainfo=dict(classes=SEG_CLASSES), indices=8,
                       data_prefix=dict(img_path=f'images/{split}',
                                        seg_map_path=f'annotations/{split}'))
        if loader != 'train_dataloader':
            dataset.pipeline = test_pipeline


def _det(cfg: Config) -> None:
    root = prepare('coco') + '/'
    cfg.model.roi_head.bbox_head.num_classes = len(DET_CLASSES)
    scale = dict(type='Resize', scale=(160, 128), keep_ratio=True)
    for loader, split in (('train_dataloader', 'train2017'), ('val_dataloader', 'val2017'),
                          ('test_dataloader', 'val2017')):
        dataset = cfg[loader].dataset
        dataset.update(data_root=root, metainfo=dict(classes=DET_CLASSES), indices=8,
                       ann_file=f'annotations/instances_{split}.json',
                       data_prefix=dict(img=f'{split}/'))
        dataset.pipeline = [scale if step['type'] == 'Resize' else step
                            for step in dataset.pipeline]
    for evaluator in ('val_evaluator', 'test_evaluator'):
        cfg[evaluator].ann_file = root + 'annotations/instances_val2017.json'


def _cls(cfg: Config) -> None:
    root = prepare('imagenet')
    cfg.model.head.num_classes = 10
    cfg.data_preprocessor.num_classes = 10
    cfg.model.pop('data_preprocessor', None)
    for loader, split in (('train_dataloader', 'train'), ('val_dataloader', 'val'),
                          ('test_dataloader', 'val')):
        cfg[loader].dataset = dict(
            type='CustomDataset', data_root=root, data_prefix=split, indices=8,
            pipeline=[dict(type='LoadImageFromFile'), dict(type='PackInputs')])


def _video(cfg: Config) -> None:
    root = prepare('kinetics')
    cfg.model.cls_head.num_classes = 6
    pipeline = [dict(type='SampleFrames', clip_len=8, frame_interval=2, num_clips=1),
                dict(type='RawFrameDecode'),
                dict(type='FormatShape', input_format='NCTHW'),
                dict(type='PackActionInputs')]
    for loader, split in (('train_dataloader', 'train'), ('val_dataloader', 'val'),
                          ('test_dataloader', 'val')):
        cfg[loader].dataset = dict(
            type='RawframeDataset', ann_file=f'{root}/{split}_list.txt', indices=8,
            data_prefix=dict(img=f'{root}/rawframes/{split}'), pipeline=pipeline,
            test_mode=loader != 'train_dataloader')


ADAPTERS = dict(mmseg=_seg, mmdet=_det, mmpretrain=_cls, mmaction=_video)


def to_demo(cfg: Config, iters: int = 2) -> Config:
    """The config on demo data, without pretrained files (tests have none)."""
    backbone = cfg.model.get('backbone', cfg.model.get('module', {}).get('backbone'))
    backbone.pop('init_cfg', None)
    if 'pretrained' in backbone:
        backbone.pretrained = None
    ADAPTERS[cfg.default_scope](cfg)
    _short_schedule(cfg, iters)
    return cfg
