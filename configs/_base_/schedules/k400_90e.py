# The paper's Kinetics schedule: SGD lr 0.1, momentum 0.9, wd 1e-4, 90 epochs, x0.1 at 30, 60,
# 80; 64 clips per batch (8 GPUs x 8), trained from scratch.
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=90, val_begin=1, val_interval=5)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = [
    dict(type='MultiStepLR', begin=0, end=90, by_epoch=True, milestones=[30, 60, 80], gamma=0.1)
]
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-4),
    clip_grad=dict(max_norm=40, norm_type=2))
auto_scale_lr = dict(enable=False, base_batch_size=64)
