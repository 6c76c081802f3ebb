# PyConvResNet-50 with the improved recipe of Table 4: CutMix, 300 epochs, cosine, batch
# 1024 (8 GPUs x 128), mixed precision.
_base_ = [
    '../_base_/models/pyconvresnet50_in1k.py',
    'mmpretrain::_base_/datasets/imagenet_bs32.py',
    '../_base_/schedules/pyconv_in1k_bs1024_amp_cutmix_cos_300e.py',
    'mmpretrain::_base_/default_runtime.py',
]
model = dict(
    backbone=dict(depth=50),
    head=dict(loss=dict(type='CrossEntropyLoss', loss_weight=1.0, use_soft=True)),
    train_cfg=dict(augments=dict(type='CutMix', alpha=1.0)))
train_dataloader = dict(batch_size=128)
val_dataloader = dict(batch_size=128)
test_dataloader = val_dataloader
