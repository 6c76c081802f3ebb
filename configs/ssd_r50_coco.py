# The baseline "SSD-50" of Table 8: SSD300 with ResNet-50 cut after stage 3 (stage 3 stride 1:
# 1024x38x38), mmdet's SSDNeck with BN (extra layers 512, 512, 256, 256, 256) and SSDHead
# (default boxes 4, 6, 6, 6, 4, 4 on maps 38, 19, 10, 5, 3, 1 = 8732; 80 classes + background).
# The paper's COCO recipe: 130 epochs, 8 GPUs x 32 images, SGD 0.02 (x0.1 before epochs 86
# and 108), momentum 0.9, wd 5e-4, 1 epoch linear warm-up; SSD's random crop and expansion,
# colour jitter and flip come from mmdet's ssd300_coco.py.
#   bash tools/dist_train.sh configs/ssd_r50_coco.py 8
_base_ = 'mmdet::ssd/ssd300_coco.py'
custom_imports = dict(imports=['pyconv_mm'], allow_failed_imports=False)
model = dict(
    data_preprocessor=dict(std=[58.395, 57.12, 57.375]),  # torchvision-style ImageNet weights
    backbone=dict(
        _delete_=True,
        type='ResNet',
        depth=50,
        num_stages=3,
        strides=(1, 2, 1),
        dilations=(1, 1, 1),
        out_indices=(2, ),
        frozen_stages=-1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=False,
        style='pytorch',
        init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet50')),
    neck=dict(
        _delete_=True,
        type='SSDNeck',
        in_channels=(1024, ),
        out_channels=(1024, 512, 512, 256, 256, 256),
        level_strides=(2, 2, 2, 1, 1),
        level_paddings=(1, 1, 1, 0, 0),
        l2_norm_scale=None,
        norm_cfg=dict(type='BN')),
    bbox_head=dict(in_channels=(1024, 512, 512, 256, 256, 256)))

train_dataloader = dict(batch_size=32, num_workers=4, dataset=dict(times=1))  # no repeats
optim_wrapper = dict(optimizer=dict(lr=0.02, momentum=0.9, weight_decay=5e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=True, begin=0, end=1,
         convert_to_iter_based=True),
    dict(type='MultiStepLR', by_epoch=True, begin=0, end=130, milestones=[85, 107], gamma=0.1),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=130, val_interval=5)
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=5, max_keep_ckpts=3))
auto_scale_lr = dict(enable=False, base_batch_size=256)
