"""Fold batch norms into the convolutions before them: the deployment form of a network.

``fuse_conv_bn(model)`` walks every module's children in registration order and folds each
``BatchNorm`` into the convolution registered just before it, as mmcv's ``fuse_conv_bn``
does, and also into PyConvs (each level takes its slice of the norm's channels). The fused
model computes the same function in eval mode with fewer operations; it cannot be trained.

Example:
    >>> model = fuse_conv_bn(PyConvResNet(50).eval())
"""
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .direct import batch_norm_affine
from .pyconv import _PyConvNd


def _fold(conv: nn.modules.conv._ConvNd, bn: _BatchNorm, start: int = 0) -> None:
    """Fold channels ``start:start + conv.out_channels`` of ``bn`` into ``conv`` in place."""
    end = start + conv.out_channels
    scale, shift = (t[start:end] for t in batch_norm_affine(bn, bn.num_features))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(shift)
    with torch.no_grad():
        conv.weight.mul_(scale.reshape(-1, *([1] * (conv.weight.dim() - 1))))
        conv.bias = nn.Parameter(bias * scale + shift)


def fuse_conv_bn(module: nn.Module) -> nn.Module:
    """Fold each BN into the (Py)Conv registered just before it; returns ``module``."""
    last_conv, last_name = None, None
    for name, child in list(module.named_children()):
        if isinstance(child, _BatchNorm) and last_conv is not None \
                and child.track_running_stats and child.affine:
            if isinstance(last_conv, _PyConvNd):
                start = 0
                for level in last_conv.levels:
                    _fold(level, child, start)
                    start += level.out_channels
            else:
                _fold(last_conv, child)
            setattr(module, name, nn.Identity())
            last_conv = None
        elif isinstance(child, (nn.modules.conv._ConvNd, _PyConvNd)):
            last_conv, last_name = child, name
        else:
            fuse_conv_bn(child)
    return module
