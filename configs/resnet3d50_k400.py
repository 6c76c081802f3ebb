# ResNet3D-50 baseline (Tables 9-10) on Kinetics-400, the paper's recipe; mmaction2's ResNet3d.
#   bash tools/dist_train.sh configs/resnet3d50_k400.py 8
_base_ = [
    '_base_/models/resnet3d50_k400.py',
    '_base_/datasets/kinetics400_16x4.py',
    '_base_/schedules/k400_90e.py',
    'mmaction::_base_/default_runtime.py',
]
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=5, max_keep_ckpts=3))
