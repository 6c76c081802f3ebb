"""PyConvResNet3D: PyConvResNet extended to video (Duta et al., 2020, Appendix A.2, Table 9).

Every convolution gains a temporal dimension; the PyConv levels get kernels ``t x k x k``
(time first). Stage 1 uses the paper's 3x3x3, 3x5x5, 5x7x7 and 7x9x9. The paper gives neither
the temporal sizes of the later stages nor the stem of this network. We searched all odd
temporal sizes 1-9 per level of stages 2-4 and stems 1-7 x 7 x 7 against Table 10 (44.91M
parameters, 91.81 GFLOPs for a 16x224x224 clip, 400 classes). No choice that keeps the
baseline's 5x7x7 stem meets both; the simplest that does is
stage 2 ``t = k - 2`` (1x3x3, 3x5x5, 5x7x7), stage 3 3x3x3 and 3x5x5, stage 4 3x3x3, and a
7x7x7 stem: 45.10M (+0.4%) and 91.4 GFLOPs (-0.5%, the offset our counter shows on every
model of the paper). Measured alternatives are in the README ("Video"); e.g. stage 1's rule
for stage 2 (3x3x3, 3x5x5, 5x7x7) with the 5x7x7 stem gives 45.37M (+1.0%) / 91.3 GFLOPs,
and 3x3x3-everywhere 44.97M / 86.3 GFLOPs (-6%).

Like the 2D network there is no max pool after the stem and every stage downsamples in its
first block (PyConv stride, max pool on the projection shortcut); stages 3 and 4 also halve
time, giving 16x56x56, 16x28x28, 8x14x14, 4x7x7 maps for a 16x224x224 clip.

Initialisation from 2D ImageNet weights inflates each 2D kernel along time (I3D), as mmaction2's
``ResNet3d`` does: ``pretrained='checkpoints/pyconvresnet50_backbone.pth', pretrained2d=True``.

Example:
    >>> model = PyConvResNet3D(depth=50)
    >>> model(torch.randn(1, 3, 16, 224, 224))[0].shape
    torch.Size([1, 2048, 4, 7, 7])
"""
from typing import List, Optional, Sequence, Tuple, Union

import torch
from mmcv.cnn import build_conv_layer, build_norm_layer
from mmengine.logging import MMLogger
from mmengine.model import BaseModule
from mmengine.runner.checkpoint import _load_checkpoint
from torch import nn

from .pyconv_blocks import make_stage
from .pyconv_resnet import BackboneConventions, PyConvResNet

#: (kernels time-first, groups, shares) per stage
PAPER_PYRAMIDS_3D = (
    dict(kernel_sizes=[(3, 3, 3), (3, 5, 5), (5, 7, 7), (7, 9, 9)], groups=[1, 4, 8, 16]),
    dict(kernel_sizes=[(1, 3, 3), (3, 5, 5), (5, 7, 7)], groups=[1, 4, 8],
         shares=[0.25, 0.25, 0.5]),
    dict(kernel_sizes=[(3, 3, 3), (3, 5, 5)], groups=[1, 4]),
    dict(kernel_sizes=[(3, 3, 3)], groups=[1]),
)


class PyConvResNet3D(BackboneConventions, BaseModule):
    """PyConvResNet3D backbone for mmaction2.

    Args:
        depth: 18, 34 (basic blocks; small video models) or 50, 101, 152.
        pyramids: per stage ``dict(kernel_sizes, groups, shares)`` with 3D (t, k, k) kernels.
        in_channels: input channels.
        stem_kernel: kernel of the stem convolution (t, h, w); its stride is (1, 2, 2).
        stem_channels: output channels of the stem.
        base_channels: width of the first stage's PyConv; doubles each stage.
        spatial_strides / temporal_strides: stride of each stage's first block.
        out_indices: stages whose outputs are returned.
        frozen_stages: freeze the stem and stages up to this index (-1: nothing).
        pretrained: a 2D checkpoint (PyConvResNet backbone, or classifier with ``backbone.``
            keys) to inflate, or a 3D checkpoint when ``pretrained2d=False``.
        pretrained2d: inflate ``pretrained`` from 2D.
        conv_cfg / norm_cfg / norm_eval / with_cp / entrance_cp / zero_init_residual /
            init_cfg: as in :class:`PyConvResNet`.

    Shapes: (N, C, T, H, W) -> tuple of (N, C_i, T_i, H_i, W_i) for ``out_indices``.
    """
    arch_settings = PyConvResNet.arch_settings

    def __init__(self,
                 depth: int = 50,
                 pyramids: Sequence[dict] = PAPER_PYRAMIDS_3D,
                 in_channels: int = 3,
                 stem_kernel: Tuple[int, int, int] = (7, 7, 7),
                 stem_channels: int = 64,
                 base_channels: int = 64,
                 spatial_strides: Sequence[int] = (2, 2, 2, 2),
                 temporal_strides: Sequence[int] = (1, 1, 2, 2),
                 out_indices: Sequence[int] = (3, ),
                 frozen_stages: int = -1,
                 pretrained: Optional[str] = None,
                 pretrained2d: bool = True,
                 conv_cfg: dict = dict(type='Conv3d'),
                 norm_cfg: dict = dict(type='BN3d', requires_grad=True),
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 entrance_cp: bool = True,
                 zero_init_residual: bool = False,
                 init_cfg: Optional[Union[dict, List[dict]]] = None) -> None:
        if init_cfg is None:
            init_cfg = [
                dict(type='Kaiming', layer=['Conv3d'], mode='fan_out', nonlinearity='relu'),
                dict(type='Constant', val=1, layer=['_BatchNorm'])
            ]
        super().__init__(init_cfg=init_cfg)
        if depth not in self.arch_settings:
            raise ValueError(f'PyConvResNet3D: depth={depth!r}; valid: '
                             f'{sorted(self.arch_settings)}')
        for name, value in (('pyramids', pyramids), ('spatial_strides', spatial_strides),
                            ('temporal_strides', temporal_strides)):
            if len(value) != 4:
                raise ValueError(f'PyConvResNet3D: {name} has {len(value)} entries; give 4')
        if any(not 0 <= i < 4 for i in out_indices):
            raise ValueError(f'PyConvResNet3D: out_indices={tuple(out_indices)}; valid: 0..3')
        if len(stem_kernel) != 3 or any(k % 2 == 0 for k in stem_kernel):
            raise ValueError(f'PyConvResNet3D: stem_kernel={stem_kernel} must be 3 odd sizes')
        block, stage_blocks = self.arch_settings[depth]
        self.depth = depth
        self.out_indices = tuple(out_indices)
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.zero_init_residual = zero_init_residual
        self.pretrained = pretrained
        self.pretrained2d = pretrained2d

        self.conv1 = build_conv_layer(conv_cfg, in_channels, stem_channels, stem_kernel,
                                      stride=(1, 2, 2),
                                      padding=tuple(k // 2 for k in stem_kernel), bias=False)
        self.norm1_name, norm1 = build_norm_layer(norm_cfg, stem_channels, postfix=1)
        self.add_module(self.norm1_name, norm1)
        self.relu = nn.ReLU(inplace=True)
        self.res_layers = []
        channels = stem_channels
        for i, num_blocks in enumerate(stage_blocks):
            width = base_channels * 2**i
            layer = make_stage(
                block, num_blocks, channels, width, width * block.expansion, dict(pyramids[i]),
                stride=(temporal_strides[i], spatial_strides[i], spatial_strides[i]),
                dilation=1, shortcut_pool=True, ndim=3, with_cp=with_cp, conv_cfg=conv_cfg,
                norm_cfg=norm_cfg,
                first_block_cp_pyconv_input=entrance_cp and i == 0 and spatial_strides[0] > 1)
            channels = width * block.expansion
            self.add_module(f'layer{i + 1}', layer)
            self.res_layers.append(f'layer{i + 1}')
        self.feat_dim = channels
        self._freeze_stages()

    def inflate_weights(self, logger: MMLogger) -> None:
        """Inflate a 2D checkpoint: each ``k x k`` kernel is repeated ``t`` times along time
        and divided by ``t`` (I3D); norms are copied. Keys missing from the checkpoint are
        reported and keep their initialisation."""
        state_2d = _load_checkpoint(self.pretrained, map_location='cpu', logger=logger)
        state_2d = state_2d.get('state_dict', state_2d)
        if any(k.startswith('backbone.') for k in state_2d):
            state_2d = {k[len('backbone.'):]: v for k, v in state_2d.items()
                        if k.startswith('backbone.')}
        inflated, missing = 0, []
        with torch.no_grad():
            for name, tensor in self.state_dict().items():
                if name not in state_2d:
                    missing.append(name)
                    continue
                source = state_2d[name]
                if tensor.dim() == 5 and source.dim() == 4:
                    if source.shape != tensor.shape[:2] + tensor.shape[3:]:
                        raise ValueError(f'inflate {name}: 2D {tuple(source.shape)} does not '
                                         f'match 3D {tuple(tensor.shape)}')
                    t = tensor.shape[2]
                    tensor.copy_(source.unsqueeze(2).expand_as(tensor) / t)
                elif source.shape == tensor.shape:
                    tensor.copy_(source)
                else:
                    raise ValueError(f'inflate {name}: {tuple(source.shape)} vs '
                                     f'{tuple(tensor.shape)}')
                inflated += 1
        logger.info(f'PyConvResNet3D: inflated {inflated} tensors from {self.pretrained}'
                    + (f'; not in the checkpoint: {missing}' if missing else ''))

    def init_weights(self) -> None:
        if self.pretrained and self.pretrained2d:
            super().init_weights()
            self.inflate_weights(MMLogger.get_current_instance())
            return
        if self.pretrained:
            self.init_cfg = dict(type='Pretrained', checkpoint=self.pretrained)
        super().init_weights()
        if self.zero_init_residual and not self.pretrained:
            self._zero_init_residual()

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, Tuple[torch.Tensor, ...]]:
        """(N, C, T, H, W) -> outputs of ``out_indices`` (a tensor when there is one)."""
        outs = self._run_stages(self._stem(x))
        return outs[0] if len(outs) == 1 else tuple(outs)
