"""PyConvResNet and PyConvHGResNet backbones (Duta et al., 2020, Table 1).

One class covers the image classification networks, their Table 2 ablations, the dilated
backbones of PyConvSegNet (output stride 8/16) and the cut backbone of PyConvSSD.

Example:
    >>> backbone = PyConvResNet(depth=50, out_indices=(0, 1, 2, 3))
    >>> [f.shape[1:] for f in backbone(torch.randn(1, 3, 224, 224))]
    [torch.Size([256, 56, 56]), torch.Size([512, 28, 28]), torch.Size([1024, 14, 14]),
     torch.Size([2048, 7, 7])]
"""
from typing import List, Optional, Sequence, Tuple, Union

import torch
from mmcv.cnn import build_conv_layer, build_norm_layer
from mmengine.model import BaseModule
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from pyconv_mm.ops import batch_norm_act, default_pyramid, fused_inference, packed_weights
from pyconv_mm.ops.pool import IndexFreeMaxPool2d
from .pyconv_blocks import PyConvBasicBlock, PyConvBottleneck, make_stage

PyramidArg = Union[int, dict]

#: Where the max pool of the network sits (Table 2):
#: ``'stem'``: after the stem, as in ResNet (stage 1 keeps the resolution);
#: ``'first'``: on the projection shortcut of stage 1 only (Table 2, "max");
#: ``'all'``: on the projection shortcut of every stage (Table 2, "final"; the paper's network).
MAXPOOL_PLACEMENTS = ('stem', 'first', 'all')


def resolve_pyramid(stage: int, pyramid: PyramidArg) -> dict:
    """A stage's pyramid from an int (levels of the paper's default) or a dict."""
    if isinstance(pyramid, int):
        return default_pyramid(pyramid)
    if isinstance(pyramid, dict) and 'kernel_sizes' in pyramid:
        unknown = set(pyramid) - {'kernel_sizes', 'groups', 'shares'}
        if unknown:
            raise ValueError(f'pyramids[{stage}] has unknown keys {sorted(unknown)}; '
                             'valid: kernel_sizes, groups, shares')
        return dict(pyramid)
    raise ValueError(f'pyramids[{stage}]={pyramid!r} must be a number of levels (1-5) or '
                     'dict(kernel_sizes=[...], groups=[...], shares=[...])')


class BackboneConventions:
    """OpenMMLab conventions shared by the 2D and 3D backbones (a stem ``conv1``/``norm1`` and
    stages ``layer1..N``): ``frozen_stages``, ``norm_eval`` and ``zero_init_residual``."""
    frozen_stages: int
    norm_eval: bool
    zero_init_residual: bool
    res_layers: List[str]

    @property
    def norm1(self) -> nn.Module:
        return getattr(self, self.norm1_name)

    def _freeze_stages(self) -> None:
        if self.frozen_stages < 0:
            return
        frozen = [self.conv1, self.norm1] + [getattr(self, f'layer{i}')
                                             for i in range(1, self.frozen_stages + 1)]
        for module in frozen:
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def _zero_init_residual(self) -> None:
        for module in self.modules():
            if isinstance(module, (PyConvBottleneck, PyConvBasicBlock)):
                nn.init.constant_(module.last_norm.weight, 0)

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        """conv1, norm1, ReLU: in inference one fused convolution where ``auto`` timed that
        faster (:mod:`pyconv_mm.ops.fused_inference`)."""
        modules = (self.conv1, self.norm1, self.relu)
        if fused_inference.usable(x, modules) and fused_inference.prefer_fused(
                self.conv1, x, self._stem_fused, self._stem_as_written):
            return self._stem_fused(x)
        return self._stem_as_written(x)

    def _stem_fused(self, x: torch.Tensor) -> torch.Tensor:
        return fused_inference.conv_norm_act(x, self.conv1, self.norm1, relu=True)

    def _stem_as_written(self, x: torch.Tensor) -> torch.Tensor:
        # in training the norm and the ReLU in one op where it can (batch_norm_act)
        return batch_norm_act.norm_act(self.conv1(x), self.norm1, self.relu)

    def _run_stages(self, x: torch.Tensor) -> List[torch.Tensor]:
        outs = []
        for i, layer_name in enumerate(self.res_layers):
            x = getattr(self, layer_name)(x)
            if i in self.out_indices:
                outs.append(x)
        return outs

    def train(self, mode: bool = True):
        """Switch to train mode, keeping frozen stages and (with ``norm_eval``) norms in eval."""
        super().train(mode)
        if mode:  # oneDNN-layout weights serve inference only
            packed_weights.release(self)
        self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()
        return self


class PyConvResNet(BackboneConventions, BaseModule):
    """PyConvResNet backbone: a ResNet whose spatial convolutions are pyramidal.

    Args:
        depth: 18, 34 (basic blocks), 50, 101 or 152 (bottlenecks).
        pyramids: per stage, a number of levels of the paper's default pyramid (Section 3)
            or ``dict(kernel_sizes, groups, shares)``. Default ``(4, 3, 2, 1)``;
            ``(1, 1, 1, 1)`` with ``maxpool='stem'`` is the ResNet baseline.
        maxpool: where the max pool sits, one of :data:`MAXPOOL_PLACEMENTS`. Default ``'all'``.
        in_channels: channels of the input image.
        stem_channels: output channels of the 7x7 stem.
        base_channels: width of the first stage's PyConv; doubles each stage.
        expansion: stage output = width * expansion (default: the block's, 4 or 1).
        num_stages: stages to build (1-4); 3 gives the detection backbone cut after stage 3.
        strides: stride of each stage's first block. Default 2 everywhere (1 for stage 1 when
            ``maxpool='stem'``).
        dilations: dilation of each stage's PyConv levels (segmentation: ``(1, 1, 2, 4)``).
        out_indices: stages whose outputs are returned.
        frozen_stages: freeze the stem and stages up to this index (-1: nothing, 0: stem only).
        conv_cfg / norm_cfg: configs of the plain convolutions and of the norms.
        norm_eval: keep norm layers in eval mode during training (frozen statistics).
        with_cp: gradient checkpointing in every block.
        entrance_cp: when stage 1 strides (no max pool after the stem), its first bottleneck
            runs its 1x1 reduce, norm and strided PyConv at the stem's resolution, 4x the
            pixels of any later block. In training, do not keep the activated tensors its
            PyConv and its expansion read, but recompute them in backward from the norms'
            inputs (:mod:`pyconv_mm.ops.reduced_pyconv`, :mod:`pyconv_mm.ops.norm_relu_conv`;
            CPU, 2D, float32): 31 MiB less at the peak of a PyConvResNet-50 step (batch 8,
            224x224; 61 MiB for PyConvHGResNet-50) for two passes over memory. Elsewhere the
            reduce, the norm and the PyConv are checkpointed (49 and 98 MiB less, for about 1%
            of the step's time). Outputs, gradients and running statistics are as without it
            (within rounding).
        zero_init_residual: zero the last norm of every block at initialisation.
        init_cfg: mmengine initialisation, e.g. ``dict(type='Pretrained', checkpoint=...)``.

    Shapes:
        input (N, in_channels, H, W) -> tuple of (N, C_i, H / s_i, W / s_i) for ``out_indices``,
        with C_i = 256, 512, 1024, 2048 and s_i = 4, 8, 16, 32 at the defaults.
    """
    arch_settings = {
        18: (PyConvBasicBlock, (2, 2, 2, 2)),
        34: (PyConvBasicBlock, (3, 4, 6, 3)),
        50: (PyConvBottleneck, (3, 4, 6, 3)),
        101: (PyConvBottleneck, (3, 4, 23, 3)),
        152: (PyConvBottleneck, (3, 8, 36, 3)),
    }
    default_pyramids: Tuple[PyramidArg, ...] = (4, 3, 2, 1)
    default_base_channels = 64
    default_expansion: Optional[int] = None

    def __init__(self,
                 depth: int,
                 pyramids: Optional[Sequence[PyramidArg]] = None,
                 maxpool: str = 'all',
                 in_channels: int = 3,
                 stem_channels: int = 64,
                 base_channels: Optional[int] = None,
                 expansion: Optional[int] = None,
                 num_stages: int = 4,
                 strides: Optional[Sequence[int]] = None,
                 dilations: Sequence[int] = (1, 1, 1, 1),
                 out_indices: Sequence[int] = (3, ),
                 frozen_stages: int = -1,
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: dict = dict(type='BN', requires_grad=True),
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 entrance_cp: bool = True,
                 zero_init_residual: bool = False,
                 init_cfg: Optional[Union[dict, List[dict]]] = None) -> None:
        if init_cfg is None:
            init_cfg = [
                dict(type='Kaiming', layer=['Conv2d'], mode='fan_out', nonlinearity='relu'),
                dict(type='Constant', val=1, layer=['_BatchNorm', 'GroupNorm'])
            ]
        super().__init__(init_cfg=init_cfg)
        name = type(self).__name__
        if depth not in self.arch_settings:
            raise ValueError(f'{name}: depth={depth!r} is not supported; '
                             f'valid: {sorted(self.arch_settings)}')
        if maxpool not in MAXPOOL_PLACEMENTS:
            raise ValueError(f'{name}: maxpool={maxpool!r}; valid: {MAXPOOL_PLACEMENTS}')
        if not 1 <= num_stages <= 4:
            raise ValueError(f'{name}: num_stages={num_stages}; valid: 1, 2, 3 or 4')
        pyramids = tuple(self.default_pyramids if pyramids is None else pyramids)
        if strides is None:
            strides = (1 if maxpool == 'stem' else 2, 2, 2, 2)
        for arg_name, value in (('pyramids', pyramids), ('strides', strides),
                                ('dilations', dilations)):
            if len(value) < num_stages:
                raise ValueError(f'{name}: {arg_name}={tuple(value)} has {len(value)} entries; '
                                 f'give one per stage ({num_stages})')
        for index in out_indices:
            if not 0 <= index < num_stages:
                raise ValueError(f'{name}: out_indices={tuple(out_indices)} contains {index}; '
                                 f'valid: 0..{num_stages - 1}')
        if not -1 <= frozen_stages <= num_stages:
            raise ValueError(f'{name}: frozen_stages={frozen_stages}; valid: -1..{num_stages}')

        block, stage_blocks = self.arch_settings[depth]
        self.depth = depth
        self.block = block
        self.stage_blocks = stage_blocks[:num_stages]
        self.num_stages = num_stages
        self.maxpool_placement = maxpool
        self.out_indices = tuple(out_indices)
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.zero_init_residual = zero_init_residual
        base_channels = base_channels or self.default_base_channels
        expansion = expansion or self.default_expansion or block.expansion
        self.pyramids = [resolve_pyramid(i, p) for i, p in enumerate(pyramids[:num_stages])]

        self.conv1 = build_conv_layer(conv_cfg, in_channels, stem_channels, 7, stride=2,
                                      padding=3, bias=False)
        self.norm1_name, norm1 = build_norm_layer(norm_cfg, stem_channels, postfix=1)
        self.add_module(self.norm1_name, norm1)
        self.relu = nn.ReLU(inplace=True)
        # index-free: its input, the stem's ReLU output, is saved for backward anyway
        self.maxpool = IndexFreeMaxPool2d(3, stride=2, padding=1) if maxpool == 'stem' else None

        self.res_layers = []
        channels = stem_channels
        for i in range(num_stages):
            width = base_channels * 2**i
            layer = make_stage(
                block, self.stage_blocks[i], channels, width, width * expansion,
                self.pyramids[i], stride=strides[i], dilation=dilations[i],
                shortcut_pool=maxpool == 'all' or (maxpool == 'first' and i == 0),
                first_block_cp_pyconv_input=entrance_cp and i == 0 and strides[0] > 1,
                with_cp=with_cp, conv_cfg=conv_cfg, norm_cfg=norm_cfg)
            channels = width * expansion
            self.add_module(f'layer{i + 1}', layer)
            self.res_layers.append(f'layer{i + 1}')
        self.feat_dim = channels
        self._freeze_stages()

    def init_weights(self) -> None:
        super().init_weights()
        pretrained = isinstance(self.init_cfg, dict) and self.init_cfg.get('type') == 'Pretrained'
        if self.zero_init_residual and not pretrained:
            self._zero_init_residual()

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """(N, 3, H, W) -> tuple of stage outputs selected by ``out_indices``."""
        x = self._stem(x)
        if self.maxpool is not None:
            x = self.maxpool(x)
        return tuple(self._run_stages(x))


class PyConvHGResNet(PyConvResNet):
    """PyConvHGResNet: PyConvResNet with higher grouping (Table 1, right).

    PyConv widths are doubled (128, 256, 512, 1024; expansion 2, same stage outputs) and the
    groups are 32-64 per level. Arguments as :class:`PyConvResNet`; depth 50, 101 or 152.
    """
    arch_settings = {d: PyConvResNet.arch_settings[d] for d in (50, 101, 152)}
    default_pyramids = (
        dict(kernel_sizes=[3, 5, 7, 9], groups=[32, 32, 32, 32]),
        dict(kernel_sizes=[3, 5, 7], groups=[32, 64, 64], shares=[0.25, 0.25, 0.5]),
        dict(kernel_sizes=[3, 5], groups=[32, 64]),
        dict(kernel_sizes=[3], groups=[32]),
    )
    default_base_channels = 128
    default_expansion = 2
