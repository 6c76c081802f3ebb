# PyConvSegNet with a ResNet-50 backbone (output stride 8) on ADE20K: Table 6, first row.
#   bash tools/dist_train.sh configs/pyconvsegnet_r50_ade20k.py 8
_base_ = [
    '_base_/models/pyconvsegnet_r50-os8.py',
    '_base_/datasets/ade20k_473.py',
    '_base_/schedules/pyconvsegnet_ade20k_100e.py',
    'mmseg::_base_/default_runtime.py',
]
