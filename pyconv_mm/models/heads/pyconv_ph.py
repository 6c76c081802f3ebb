"""PyConvPH: the PyConv parsing head of PyConvSegNet (Duta et al., 2020, Section 5, Fig. 5-6).

Structure follows the authors' code (https://github.com/iduta/pyconvsegnet, MIT licence):

* LocalPyConv: 1x1 conv C->512, PyConv4 512->512 (3, 5, 7, 9 / G 1, 4, 8, 16), 1x1 conv
  512->512, each with BN and ReLU: local details at four scales.
* GlobalPyConv: adaptive average pooling to 9x9, then the same three convolutions, then
  bilinear upsampling back: global context, where the 9x9 level sees the whole scene.
* Merge: concatenation (1024), 3x3 conv ->256, BN, ReLU; then mmseg's dropout and 1x1
  classifier (``cls_seg``).

Example:
    >>> head = PyConvPH(in_channels=2048, channels=256, num_classes=150)
    >>> head([torch.randn(1, 2048, 60, 60)]).shape
    torch.Size([1, 150, 60, 60])
"""
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from torch import nn

PAPER_PYRAMID = dict(pyconv_kernels=(3, 5, 7, 9), pyconv_groups=(1, 4, 8, 16))


class PyConvContext(nn.Sequential):
    """1x1 reduce, PyConv, 1x1 fuse (each conv + norm + act): the core of both context blocks.

    Shapes: (N, in_channels, H, W) -> (N, channels, H, W).
    """

    def __init__(self, in_channels: int, channels: int, pyramid: dict,
                 conv_cfg: Optional[dict], norm_cfg: Optional[dict], act_cfg: dict) -> None:
        common = dict(norm_cfg=norm_cfg, act_cfg=act_cfg)
        kernel = max(pyramid['pyconv_kernels'])
        super().__init__(
            ConvModule(in_channels, channels, 1, conv_cfg=conv_cfg, **common),
            ConvModule(channels, channels, kernel, padding=kernel // 2,
                       conv_cfg=dict(type='PyConv', **pyramid), **common),
            ConvModule(channels, channels, 1, conv_cfg=conv_cfg, **common))


class GlobalPyConvContext(PyConvContext):
    """:class:`PyConvContext` over the input pooled to ``pool_size``, upsampled back."""

    def __init__(self, *args, pool_size: int = 9, align_corners: bool = True) -> None:
        super().__init__(*args)
        self.pool = nn.AdaptiveAvgPool2d(pool_size)
        self.align_corners = align_corners

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(self.pool(x))
        return F.interpolate(out, size=x.shape[2:], mode='bilinear',
                             align_corners=self.align_corners)


class PyConvPH(BaseDecodeHead):
    """PyConv Parsing Head (PyConvSegNet).

    Args:
        reduction_channels: width of the local and global context blocks (512).
        pyramid: the PyConv of both blocks, as ``conv_cfg`` keys of the ``PyConv`` layer:
            ``dict(pyconv_kernels=..., pyconv_groups=..., pyconv_shares=...)``.
        pool_size: output size of the global block's adaptive average pooling (9).
        **kwargs: :class:`BaseDecodeHead` arguments: ``in_channels`` (2048), ``channels``
            (256, the merge output), ``num_classes``, ``dropout_ratio`` (0.1), ``norm_cfg``,
            ``align_corners`` (the authors use True; also used by the global upsampling).

    Shapes: inputs[in_index] (N, in_channels, H, W) -> logits (N, num_classes, H, W).
    """

    def __init__(self,
                 reduction_channels: int = 512,
                 pyramid: dict = PAPER_PYRAMID,
                 pool_size: int = 9,
                 **kwargs) -> None:
        kwargs.setdefault('init_cfg', [
            dict(type='Kaiming', layer='Conv2d', mode='fan_out', nonlinearity='relu'),
            dict(type='Normal', std=0.01, override=dict(name='conv_seg'))
        ])
        super().__init__(**kwargs)
        if not isinstance(self.in_channels, int):
            raise ValueError(f'PyConvPH: in_channels={self.in_channels} must be one int '
                             '(the last backbone stage); select it with in_index')
        unknown = set(pyramid) - {'pyconv_kernels', 'pyconv_groups', 'pyconv_shares'}
        if unknown or 'pyconv_kernels' not in pyramid:
            raise ValueError(f'PyConvPH: pyramid={pyramid} needs pyconv_kernels and may have '
                             'pyconv_groups, pyconv_shares')
        if pool_size < 1:
            raise ValueError(f'PyConvPH: pool_size={pool_size} must be >= 1')
        args = (self.in_channels, reduction_channels, dict(pyramid), self.conv_cfg,
                self.norm_cfg, self.act_cfg)
        self.local_context = PyConvContext(*args)
        self.global_context = GlobalPyConvContext(*args, pool_size=pool_size,
                                                  align_corners=self.align_corners)
        self.merge_context = ConvModule(2 * reduction_channels, self.channels, 3, padding=1,
                                        conv_cfg=self.conv_cfg, norm_cfg=self.norm_cfg,
                                        act_cfg=self.act_cfg)

    def _forward_feature(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """Backbone features -> merged context (N, channels, H, W), before ``cls_seg``."""
        x = self._transform_inputs(inputs)
        return self.merge_context(torch.cat([self.local_context(x), self.global_context(x)], 1))

    def forward(self, inputs: List[torch.Tensor]) -> torch.Tensor:
        return self.cls_seg(self._forward_feature(inputs))
