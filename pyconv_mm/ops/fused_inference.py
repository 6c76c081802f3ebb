"""Inference with a block's batch norms, ReLUs and residual add inside its convolutions (CPU).

In a ResNet block every convolution is followed by a batch norm, most by a ReLU, and the last
one by the residual add: each a pass over an activation in memory. Timed with
``torch.profiler`` on 2 CPU cores (batch 8, channels_last), those passes are about a tenth of
a ResNet-50 or PyConvResNet-50 inference step. In eval mode without autograd, a
``conv -> BN (-> + residual) (-> ReLU)`` chain here is one oneDNN convolution: the norm is folded
into the convolution's weight and bias for the call (``w * scale``, ``b * scale + shift``, the
fold of :func:`~pyconv_mm.ops.fuse_conv_bn`), and the add and the ReLU run as oneDNN post-ops
(``torch.ops.mkldnn._convolution_pointwise``, the op PyTorch's inductor emits for this fusion
when it compiles with frozen weights). Each chain then writes its output once.

The fold is computed from the modules' current tensors: for 2D channels_last inputs the
folded weight is kept in oneDNN's own layout between calls (:mod:`~pyconv_mm.ops.packed_weights`)
while a fingerprint of those tensors' bytes, taken on every call, is unchanged; otherwise it is
folded on every call. Either way a weight changed in any way (an optimizer step,
``load_state_dict``, EMA hooks that swap ``param.data``) is seen at the next call. The fused
chains compute what the modules compute, up to float rounding (the fold reorders a
multiplication).

A fused chain is not faster everywhere (folding and reordering a weight for a small
activation cost more than the passes it saves, where nothing is kept). So a module (a
residual block, the stem) that can run fused is timed once per input shape both ways, fused
and as written, like the forms of a PyConv (:func:`prefer_fused`, through
:func:`pyconv_mm.ops.algorithms.choose`), and runs the faster one.
``PYCONV_FUSED_INFERENCE=0`` or :func:`set_enabled` turns fusing off; a forced PyConv
algorithm policy (``set_algorithm('native')``, ...) runs the modules as written.

Example:
    >>> with torch.no_grad():
    ...     out = conv_norm_act(x, block.conv3, block.bn3, relu=True, residual=identity)
"""
import os
from typing import Callable, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.module import _global_forward_hooks, _global_forward_pre_hooks

from . import algorithms, packed_weights
from .algorithms import _compiling, channels_last_kind
from .direct import _cpu_autocast, batch_norm_affine

#: True when this torch has oneDNN's fused convolution (CPU builds with MKLDNN).
AVAILABLE = (torch.backends.mkldnn.is_available()
             and hasattr(torch.ops.mkldnn, '_convolution_pointwise'))
_STATE = {'enabled': os.environ.get('PYCONV_FUSED_INFERENCE', '1') != '0'}


def set_enabled(enabled: bool) -> None:
    """Let blocks fuse their norms, ReLUs and adds in inference (default) or not."""
    _STATE['enabled'] = bool(enabled)


def enabled() -> bool:
    """Whether blocks may fuse here and now (available and not turned off)."""
    return AVAILABLE and _STATE['enabled']


def _plain_convolutions() -> Tuple[type, ...]:
    """Convolution classes whose forward is the plain convolution: torch's, and mmcv's
    wrappers (which differ only on empty inputs, which never fuse)."""
    classes = [nn.Conv2d, nn.Conv3d]
    try:
        from mmcv.cnn.bricks import wrappers
        classes += [wrappers.Conv2d, wrappers.Conv3d]
    except ImportError:
        pass
    return tuple(classes)


PLAIN_CONVOLUTIONS = _plain_convolutions()


def hooked(module: nn.Module) -> bool:
    """Whether ``module`` has forward or forward pre-hooks of its own."""
    return bool(module._forward_hooks or module._forward_pre_hooks)


def usable(x: torch.Tensor, bypassed: Sequence[nn.Module]) -> bool:
    """Whether fused chains may stand in for the modules ``bypassed`` on ``x``: CPU float32
    image or video, inference (no gradient recorded, not compiling, tracing or under
    autocast), each convolution a plain zero-padded ``Conv2d``/``Conv3d`` (torch's or
    mmcv's wrapper), each norm a batch
    norm in eval mode (or ``nn.Identity``), the activations ``nn.ReLU``, and no forward hooks,
    which a fused chain would not run."""
    if not enabled() or torch.is_grad_enabled() or x.device.type != 'cpu' \
            or x.dtype != torch.float32 or x.dim() not in (4, 5) or x.numel() == 0:
        return False
    if _compiling() or torch.jit.is_tracing() or torch.jit.is_scripting() or _cpu_autocast():
        return False
    if _global_forward_hooks or _global_forward_pre_hooks:
        return False
    for module in bypassed:
        if hooked(module):
            return False
        if isinstance(module, nn.modules.conv._ConvNd):
            if type(module) not in PLAIN_CONVOLUTIONS or module.padding_mode != 'zeros' \
                    or isinstance(module.padding, str) or module.weight.dtype != torch.float32:
                return False
        elif isinstance(module, _BatchNorm):
            if module.training or module.running_mean is None:
                return False
        elif type(module) not in (nn.ReLU, nn.Identity):
            return False
    return True


def fold(weight: torch.Tensor, bias: Optional[torch.Tensor], scale: torch.Tensor,
         shift: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """The weight and bias of ``norm(conv(x))`` for a per-output-channel norm
    ``y * scale + shift``: (C_out, C_in / G, *k) and (C_out,)."""
    folded = weight * scale.reshape(-1, *([1] * (weight.dim() - 1)))
    return folded, shift if bias is None else bias * scale + shift


def convolve(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
             stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int],
             groups: int, relu: bool, residual: Optional[torch.Tensor] = None,
             into_residual: bool = False) -> torch.Tensor:
    """``relu(conv(x, weight, bias) + residual)`` (the ReLU and the add optional) as one oneDNN
    convolution, in ``x``'s memory format. With ``into_residual`` the result is written into
    ``residual`` (same shape and format; the caller owns it) instead of a new tensor.

    Shapes: x (N, C_in, *S), weight (C_out, C_in / groups, *k) -> (N, C_out, *S').
    """
    args = (list(padding), list(stride), list(dilation), groups)
    if residual is not None:
        size = tuple((n + 2 * p - d * (k - 1) - 1) // s + 1 for n, p, d, k, s in zip(
            x.shape[2:], padding, dilation, weight.shape[2:], stride))
        out_shape = (x.shape[0], weight.shape[0], *size)
        if tuple(residual.shape) != out_shape:
            raise ValueError(f'fused convolution: a residual of shape {tuple(residual.shape)} '
                             f'cannot be added to the output {out_shape}; give one of the '
                             'output\'s shape')
    if residual is None:
        return torch.ops.mkldnn._convolution_pointwise(x, weight, bias, *args,
                                                       'relu' if relu else 'none', [], '')
    unary = 'relu' if relu else None
    if into_residual and residual.is_contiguous(
            memory_format=channels_last_kind(x) or torch.contiguous_format):
        return torch.ops.mkldnn._convolution_pointwise_.binary(residual, x, weight, bias, *args,
                                                                'add', 1.0, unary, [], '')
    return torch.ops.mkldnn._convolution_pointwise.binary(x, residual, weight, bias, *args, 'add',
                                                          None, unary, [], '')


def conv_norm_act(x: torch.Tensor, conv: nn.modules.conv._ConvNd, norm: nn.Module, relu: bool,
                  residual: Optional[torch.Tensor] = None,
                  into_residual: bool = False) -> torch.Tensor:
    """``relu(norm(conv(x)) + residual)`` in one convolution (see :func:`convolve`); ``norm``
    an eval-mode batch norm or ``nn.Identity``. Check :func:`usable` first.

    Shapes: (N, C_in, *S) -> (N, C_out, *S / stride).
    """
    weight, bias, groups = folded_weight(conv, norm, x)
    return convolve(x, weight, bias, conv.stride, conv.padding, conv.dilation, groups, relu,
                    residual, into_residual)


def folded_weight(conv: nn.modules.conv._ConvNd, norm: nn.Module, x: torch.Tensor,
                  first_channel: int = 0,
                  dense: bool = False) -> Tuple[torch.Tensor, Optional[torch.Tensor], int]:
    """The weight, bias and groups of ``norm(conv(x))``, whose outputs are ``norm``'s channels
    from ``first_channel`` on (a PyConv level's slice of the norm after it), kept in oneDNN's
    layout where :func:`~pyconv_mm.ops.packed_weights.folded` can; ``dense``: a grouped
    weight expanded to its block-diagonal dense form (groups 1).

    Shapes: weight (C_out, C_in / groups, *k), bias (C_out,).
    """
    part = slice(first_channel, first_channel + conv.out_channels)

    def fold_norm() -> packed_weights.Folded:
        scale, shift = (t[part].to(conv.weight.dtype)
                        for t in batch_norm_affine(norm, part.stop))
        weight, bias = fold(conv.weight, conv.bias, scale, shift)
        return (algorithms.expand_grouped_weight(weight, conv.groups) if dense else weight,
                bias)

    groups = 1 if dense else conv.groups
    weight, bias = packed_weights.folded(
        conv, x, (conv.weight, conv.bias, *packed_weights.norm_sources(norm)),
        (getattr(norm, 'eps', None), first_channel), conv.stride, conv.padding,
        conv.dilation, groups, fold_norm)
    return weight, bias, groups


def conv_norm_shortcut(x: torch.Tensor, shortcut: nn.Module) -> torch.Tensor:
    """A ResNet shortcut (``[pool,] conv, norm`` or a bare pool) on ``x`` with its norm folded
    into its convolution; a new tensor, so the block may add into it."""
    if not isinstance(shortcut, nn.Sequential):
        return shortcut(x)
    *before, conv, norm = shortcut
    for module in before:
        x = module(x)
    return conv_norm_act(x, conv, norm, relu=False)


def shortcut_bypassed(shortcut: Optional[nn.Module]) -> Optional[Tuple[nn.Module, ...]]:
    """The modules of ``shortcut`` that :func:`conv_norm_shortcut` replaces by a fused chain
    (its convolution and norm; none for no shortcut or a bare pool), or None when it cannot
    take it (a Sequential that does not end in a convolution and a norm, or whose
    Sequential has hooks)."""
    if shortcut is None or not isinstance(shortcut, nn.Sequential):
        return ()
    if hooked(shortcut) or len(shortcut) < 2 \
            or not isinstance(shortcut[-2], nn.modules.conv._ConvNd):
        return None
    return tuple(shortcut[-2:])


def structure_key(module: nn.Module) -> tuple:
    """What decides the cost of ``module`` apart from its input: each submodule's type, stride
    and parameter shapes (computed once per module and kept on it)."""
    key = module.__dict__.get('_fused_inference_structure')
    if key is None:
        key = tuple((name, type(m).__name__, str(getattr(m, 'stride', '')),
                     tuple(tuple(p.shape) for p in m.parameters(recurse=False)))
                    for name, m in module.named_modules())
        module.__dict__['_fused_inference_structure'] = key
    return key


def prefer_fused(module: nn.Module, x: torch.Tensor,
                 fused: Callable[[torch.Tensor], torch.Tensor],
                 as_written: Callable[[torch.Tensor], torch.Tensor]) -> bool:
    """Whether ``fused(x)`` runs ``module`` faster than ``as_written(x)``: timed once per
    module structure and input (:func:`algorithms.input_key`) by ``auto``; False under a forced
    algorithm policy. Both must leave ``x`` untouched."""
    key = ('fused_inference', structure_key(module), *algorithms.input_key(x))
    weight = next(module.parameters())
    return algorithms.choose(key, x, weight, {
        'fused': lambda data, _: fused(data),
        'native': lambda data, _: as_written(data)}) == 'fused'
