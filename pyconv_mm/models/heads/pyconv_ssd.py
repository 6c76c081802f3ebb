"""PyConvSSD's extra layers (Duta et al., 2020, Appendix A.1, Fig. 8) as an mmdet neck.

The neck takes the backbone's last map (stage 3, 1024x38x38 for a 300x300 input) and adds one
map per extra layer: a 1x1 reduce (to half the output width) then a 3x3 convolution, each with
BN and ReLU, as mmdet's ``SSDNeck``. In PyConvSSD the 3x3 convolutions are PyConvs that also
downsample, with fewer levels as the maps shrink; the last two are plain 3x3 convolutions with
stride 1 and no padding (5 -> 3 -> 1).

The paper does not list the levels of each extra layer. ``pyramids=(4, 3, 2, 1, 1)``, the
paper's default pyramids (Section 3) of 4, 3 and 2 levels for 38->19, 19->10 and 10->5, is the
choice that reproduces Table 8: with PyConvResNet-50 21,548,662 parameters (paper 21.55M) and
with PyConvResNet-101 39.01M (paper 39.01M). Measured alternatives (PyConvResNet-50):
(4, 4, 3, 1, 1) 21.49M, (4, 3, 1, 1, 1) 21.59M, (4, 2, 1, 1, 1) 21.69M, (3, 2, 1, 1, 1) 21.73M.
FLOPs cannot tell the choices apart (18.99-19.02 GFLOPs for all of them).
With ``pyramids=(1, 1, 1, 1, 1)`` the neck is the SSD-ResNet baseline's (= mmdet's ``SSDNeck``
with BN).

Example:
    >>> neck = PyConvSSDNeck(in_channels=(1024, ), out_channels=(1024, 512, 512, 256, 256, 256))
    >>> [tuple(o.shape[1:]) for o in neck((torch.randn(1, 1024, 38, 38), ))]
    [(1024, 38, 38), (512, 19, 19), (512, 10, 10), (256, 5, 5), (256, 3, 3), (256, 1, 1)]
"""
from typing import List, Optional, Sequence, Tuple, Union

import torch
from mmcv.cnn import ConvModule
from mmengine.model import BaseModule
from torch import nn


class PyConvSSDNeck(BaseModule):
    """Extra feature layers of PyConvSSD.

    Args:
        in_channels: channels of the backbone outputs (passed through unchanged).
        out_channels: channels of all outputs: the backbone's, then one per extra layer.
        level_strides: stride of each extra layer's 3x3 (PyConv) convolution.
        level_paddings: padding of each; PyConv layers keep ``k // 2`` padding per level.
        pyramids: levels of each extra layer's PyConv (the paper's default pyramids); 1 gives a
            plain 3x3 convolution with the given padding.
        conv_cfg / norm_cfg / act_cfg: of the ConvModules.

    Shapes: (N, C_i, H_i, W_i) backbone maps -> those maps plus one per extra layer.
    """

    def __init__(self,
                 in_channels: Sequence[int] = (1024, ),
                 out_channels: Sequence[int] = (1024, 512, 512, 256, 256, 256),
                 level_strides: Sequence[int] = (2, 2, 2, 1, 1),
                 level_paddings: Sequence[int] = (1, 1, 1, 0, 0),
                 pyramids: Sequence[int] = (4, 3, 2, 1, 1),
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: Optional[dict] = dict(type='BN'),
                 act_cfg: dict = dict(type='ReLU'),
                 init_cfg: Optional[Union[dict, List[dict]]] = dict(
                     type='Xavier', distribution='uniform', layer='Conv2d')) -> None:
        super().__init__(init_cfg=init_cfg)
        in_channels, out_channels = tuple(in_channels), tuple(out_channels)
        if out_channels[:len(in_channels)] != in_channels:
            raise ValueError(f'PyConvSSDNeck: out_channels={out_channels} must start with '
                             f'in_channels={in_channels}')
        extra = out_channels[len(in_channels):]
        for name, value in (('level_strides', level_strides),
                            ('level_paddings', level_paddings), ('pyramids', pyramids)):
            if len(value) != len(extra):
                raise ValueError(f'PyConvSSDNeck: {name}={tuple(value)} needs one entry per '
                                 f'extra layer ({len(extra)}: out_channels {extra})')
        common = dict(norm_cfg=norm_cfg, act_cfg=act_cfg)
        self.extra_layers = nn.ModuleList()
        channels = in_channels[-1]
        for out, stride, padding, levels in zip(extra, level_strides, level_paddings, pyramids):
            spatial_cfg = dict(type='PyConv', levels=levels) if levels > 1 else conv_cfg
            self.extra_layers.append(nn.Sequential(
                ConvModule(channels, out // 2, 1, conv_cfg=conv_cfg, **common),
                ConvModule(out // 2, out, 3, stride=stride, padding=padding,
                           conv_cfg=spatial_cfg, **common)))
            channels = out

    def forward(self, inputs: Tuple[torch.Tensor, ...]) -> Tuple[torch.Tensor, ...]:
        outs = list(inputs)
        feat = outs[-1]
        for layer in self.extra_layers:
            feat = layer(feat)
            outs.append(feat)
        return tuple(outs)
