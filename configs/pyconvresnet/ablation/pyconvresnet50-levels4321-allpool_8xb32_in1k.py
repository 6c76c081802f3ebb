# Table 2, "(4, 3, 2, 1) final": a max pool on the projection shortcut of every stage; this is
# the final PyConvResNet-50 (same network as ../pyconvresnet50_8xb32_in1k.py).
_base_ = '../pyconvresnet50_8xb32_in1k.py'
model = dict(backbone=dict(pyramids=(4, 3, 2, 1), maxpool='all'))
