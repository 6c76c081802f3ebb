# PyConvHGResNet-50 (higher grouping, Table 1 right) on ImageNet-1k, the paper's recipe.
_base_ = './pyconvresnet50_8xb32_in1k.py'
model = dict(backbone=dict(type='PyConvHGResNet'))
