# PyConvHGResNet-152 on ImageNet-1k with the paper's recipe.
_base_ = './pyconvhgresnet50_8xb32_in1k.py'
model = dict(backbone=dict(depth=152))
