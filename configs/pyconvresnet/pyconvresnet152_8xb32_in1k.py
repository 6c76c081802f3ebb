# PyConvResNet-152 on ImageNet-1k with the paper's recipe: 8 GPUs x 32 images, 90 epochs.
_base_ = './pyconvresnet50_8xb32_in1k.py'
model = dict(backbone=dict(depth=152))
