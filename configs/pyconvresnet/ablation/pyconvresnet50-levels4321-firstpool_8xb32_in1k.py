# Table 2, "(4, 3, 2, 1) max": the max pool moved from the stem to the projection shortcut of
# stage 1, so stage 1 downsamples with its PyConv; stages 2-4 keep strided 1x1 shortcuts.
_base_ = '../pyconvresnet50_8xb32_in1k.py'
model = dict(backbone=dict(pyramids=(4, 3, 2, 1), maxpool='first'))
