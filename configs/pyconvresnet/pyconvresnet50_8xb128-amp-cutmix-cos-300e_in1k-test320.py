# Test PyConvResNet-50 (Table 4 recipe) on 320x320 centre crops, as in the paper's Table 4.
#   python tools/test.py configs/pyconvresnet/pyconvresnet50_8xb128-amp-cutmix-cos-300e_in1k-test320.py CKPT
_base_ = './pyconvresnet50_8xb128-amp-cutmix-cos-300e_in1k.py'
complexity_input_shape = (3, 320, 320)  # for tools/analysis/complexity.py
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=366, edge='short'),  # 320 / 0.875, as 256 is for 224
    dict(type='CenterCrop', crop_size=320),
    dict(type='PackInputs'),
]
val_dataloader = dict(batch_size=64, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
