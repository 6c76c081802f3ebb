# The paper's improved recipe (Table 4): 300 epochs, cosine schedule, batch 1024, mixed
# precision (CutMix is set in the model of the configs that use it). The paper gives no
# learning rate: we scale the baseline's 0.1 @ 256 linearly to 0.4 @ 1024 and warm up for
# 5 epochs (usual for batch 1024).
optim_wrapper = dict(
    type='AmpOptimWrapper',
    loss_scale='dynamic',
    optimizer=dict(type='SGD', lr=0.4, momentum=0.9, weight_decay=1e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=True, begin=0, end=5,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=295, by_epoch=True, begin=5, end=300,
         convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=300, val_interval=1)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=1024)
