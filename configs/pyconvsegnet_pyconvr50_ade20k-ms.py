# Multi-scale + flip testing of PyConvSegNet / PyConvResNet-50 (Table 6 "MS"): scales 0.5,
# 0.75, 1.0, 1.25, 1.5, 1.75 of the single-scale size, each flipped, logits averaged.
#   python tools/test.py configs/pyconvsegnet_pyconvr50_ade20k-ms.py CKPT
_base_ = './pyconvsegnet_pyconvr50_ade20k.py'
img_ratios = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
tta_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(
        type='TestTimeAug',
        transforms=[
            [dict(type='Resize', scale_factor=r, keep_ratio=True) for r in img_ratios],
            [dict(type='RandomFlip', prob=0., direction='horizontal'),
             dict(type='RandomFlip', prob=1., direction='horizontal')],
            [dict(type='LoadAnnotations', reduce_zero_label=True)],
            [dict(type='PackSegInputs')],
        ])
]
test_dataloader = dict(dataset=dict(pipeline=tta_pipeline))
model = dict(_delete_=True, type='SegTTAModel', module={{_base_.model}})
