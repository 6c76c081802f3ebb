# Table 2, "top (4, 3, 2, 1)": only the top level of each stage's pyramid
# (9x9/G16, 7x7/G8, 5x5/G4, 3x3/G1), ResNet's max pool after the stem.
_base_ = '../pyconvresnet50_8xb32_in1k.py'
model = dict(
    backbone=dict(
        pyramids=(dict(kernel_sizes=[9], groups=[16]), dict(kernel_sizes=[7], groups=[8]),
                  dict(kernel_sizes=[5], groups=[4]), dict(kernel_sizes=[3], groups=[1])),
        maxpool='stem'))
