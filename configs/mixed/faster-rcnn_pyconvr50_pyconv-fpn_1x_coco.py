# The conv_cfg drop-in on an upstream module: the FPN's 3x3 output convs become PyConvs
# (4 levels: 3x3, 5x5, 7x7, 9x9 with groups 1, 4, 8, 16), its 1x1 lateral convs stay plain.
_base_ = './faster-rcnn_pyconvr50_fpn_1x_coco.py'
model = dict(neck=dict(conv_cfg=dict(type='PyConv', levels=4)))
