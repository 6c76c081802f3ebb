# PyConvResNet3D-101 on Kinetics-400 (same design and recipe as the 50-layer model).
_base_ = './pyconvresnet3d50_k400.py'
model = dict(backbone=dict(depth=101))
