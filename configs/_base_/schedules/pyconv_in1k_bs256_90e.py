# The paper's ImageNet recipe (Section 6): SGD 0.1, momentum 0.9, wd 1e-4, batch 256,
# 90 epochs, learning rate x0.1 at epochs 30, 60 and 80.
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-4))
param_scheduler = dict(type='MultiStepLR', by_epoch=True, milestones=[30, 60, 80], gamma=0.1)
train_cfg = dict(by_epoch=True, max_epochs=90, val_interval=1)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=256)
