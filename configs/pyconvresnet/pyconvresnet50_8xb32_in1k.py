# PyConvResNet-50 on ImageNet-1k with the paper's recipe: 8 GPUs x 32 images, 90 epochs.
#   bash tools/dist_train.sh configs/pyconvresnet/pyconvresnet50_8xb32_in1k.py 8
_base_ = [
    '../_base_/models/pyconvresnet50_in1k.py',
    'mmpretrain::_base_/datasets/imagenet_bs32.py',
    '../_base_/schedules/pyconv_in1k_bs256_90e.py',
    'mmpretrain::_base_/default_runtime.py',
]
