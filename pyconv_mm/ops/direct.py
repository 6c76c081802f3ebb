"""Our direct CPU kernel for grouped PyConv levels (``csrc/direct_conv.cpp``).

The stock CPU kernels run convolutions whose groups have few channels (PyConv's 5x5/G4, 7x7/G8,
9x9/G16 levels) far below the rate of a dense convolution. The kernel vectorises over 16 output
columns, so the group size does not matter, works through the image in bands of rows that stay
in cache, and writes each level straight into its channels of the PyConv's output (no
concatenation). It is built with the package (``tools/setup.sh``) and runs on CPUs with
AVX-512, in fp32; with autograd for stride-1 levels (its own input and weight gradients, see
:class:`LevelsFunction`); elsewhere :func:`usable` is False and the stock forms run.
``PYCONV_DIRECT_KERNEL=0`` in the environment or :func:`set_enabled` turns it off.

Example:
    >>> out = empty_output(x, 64, (56, 56))
    >>> conv_levels(x, [conv.levels[1], conv.levels[3]], [16, 48], out)  # two grouped levels
"""
import os
from typing import Optional, Sequence, Tuple

import torch
from torch import nn

from .algorithms import channels_last_kind

try:
    from . import _direct_conv as _ext
except ImportError:  # not built (e.g. installed without a compiler): the stock forms run
    _ext = None

#: True when the compiled kernel is importable and this CPU has AVX-512.
AVAILABLE = _ext is not None and _ext.supported()
_STATE = {'enabled': os.environ.get('PYCONV_DIRECT_KERNEL', '1') != '0'}


def set_enabled(enabled: bool) -> None:
    """Let ``auto`` use the kernel (default) or keep PyConvs on the stock forms."""
    _STATE['enabled'] = bool(enabled)


def enabled() -> bool:
    """Whether PyConvs may use the kernel here and now."""
    return AVAILABLE and _STATE['enabled']


def usable(x: torch.Tensor, level: nn.Conv2d) -> bool:
    """Whether the kernel can compute ``level`` (a grouped ``nn.Conv2d``) on ``x`` now: with
    autograd (training) only stride-1 levels of kernel 3, 5, 7 or 9, whose gradients it has."""
    if not enabled() or x.dim() != 4 or x.device.type != 'cpu' or x.dtype != torch.float32:
        return False
    if _cpu_autocast():
        return False  # the user asked for bf16/fp16 convolutions
    if level.weight.dtype != torch.float32 or level.padding_mode != 'zeros':
        return False
    kh, kw = level.kernel_size
    sh, sw = level.stride
    if not (kh == kw and kh % 2 == 1 and sh == sw and sh in (1, 2)
            and len(set(level.dilation)) == 1
            and level.padding == ((kh - 1) // 2 * level.dilation[0], ) * 2):
        return False
    return not torch.is_grad_enabled() or (sh == 1 and _ext.weight_grad_supported(kh))


def _cpu_autocast() -> bool:
    try:
        return torch.is_autocast_enabled('cpu')
    except TypeError:  # torch < 2.4
        return torch.is_autocast_cpu_enabled()


def output_size(x: torch.Tensor, level: nn.Conv2d) -> Tuple[int, int]:
    """(H_out, W_out) of ``level`` on ``x``."""
    return tuple((size + 2 * pad - dil * (k - 1) - 1) // stride + 1
                 for size, pad, dil, k, stride in zip(x.shape[2:], level.padding, level.dilation,
                                                      level.kernel_size, level.stride))


def empty_output(x: torch.Tensor, channels: int, size: Tuple[int, int]) -> torch.Tensor:
    """An output of ``channels`` channels in ``x``'s memory format."""
    fmt = channels_last_kind(x) or torch.contiguous_format
    return torch.empty((x.shape[0], channels, *size), dtype=x.dtype, device=x.device,
                       memory_format=fmt)


def conv_levels(x: torch.Tensor, levels: Sequence[nn.Conv2d], c_offsets: Sequence[int],
                out: torch.Tensor) -> torch.Tensor:
    """Each level's convolution of ``x`` (no autograd) into ``out[:, offset:offset + C_out]``.

    The levels share their stride (1 or 2) and pad by ``(K - 1) / 2 * dilation``.
    """
    _run(x, [lvl.weight for lvl in levels], [lvl.bias for lvl in levels],
         [lvl.dilation[0] for lvl in levels], c_offsets, levels[0].stride[0], out)
    return out


def _run(x: torch.Tensor, weights: Sequence[torch.Tensor],
         biases: Sequence[Optional[torch.Tensor]], dilations: Sequence[int],
         c_offsets: Sequence[int], stride: int, out: torch.Tensor,
         accumulate: bool = False, in_ranges: Optional[Sequence[Tuple[int, int]]] = None) -> None:
    """The kernel call: level i reads channels ``in_ranges[i] = (start, count)`` of ``x`` (all
    of them by default) and writes (``accumulate``: adds) its output into ``out``'s channels
    from ``c_offsets[i]`` on; levels with the same output channels are summed."""
    empty = torch.empty(0)
    in_ranges = in_ranges or [(0, x.shape[1])] * len(weights)
    _ext.conv_levels(x.detach(), [w.detach() for w in weights],
                     [empty if b is None else b.detach() for b in biases], list(dilations),
                     list(c_offsets), [start for start, _ in in_ranges],
                     [count for _, count in in_ranges], stride, out, accumulate)


class LevelsFunction(torch.autograd.Function):
    """Stride-1 kernel levels and the other levels' outputs assembled into one output, with
    gradients: the input's by the same kernel (a stride-1 grouped convolution's input gradient
    is a grouped convolution of the output gradient with the transposed, flipped kernels), the
    weights' by the kernel's weight-gradient pass, the other levels' by slicing.

    ``apply(levels, c_offsets, other_offsets, x, *weights, *biases, *others)``: the kernel's
    levels, their weights and biases (empty tensors for none) and output channel offsets; the
    other levels' outputs (autograd-tracked tensors) and their offsets. Returns the PyConv's
    output in ``x``'s memory format.
    """

    @staticmethod
    def forward(ctx, levels, c_offsets, other_offsets, x, *tensors):
        n = len(levels)
        weights, biases, others = tensors[:n], tensors[n:2 * n], tensors[2 * n:]
        channels = sum(w.shape[0] for w in weights) + sum(o.shape[1] for o in others)
        out = empty_output(x, channels, x.shape[2:])
        _run(x, weights, [b if b.numel() else None for b in biases],
             [lvl.dilation[0] for lvl in levels], c_offsets, 1, out)
        for start, other in zip(other_offsets, others):
            out.narrow(1, start, other.shape[1]).copy_(other)
        ctx.save_for_backward(x, *weights)
        ctx.levels, ctx.c_offsets, ctx.other_offsets = levels, c_offsets, other_offsets
        ctx.other_channels = [o.shape[1] for o in others]
        ctx.has_bias = [b.numel() > 0 for b in biases]
        return out

    @staticmethod
    def backward(ctx, grad):
        x, *weights = ctx.saved_tensors  # the kernels read any strides of grad
        grad_x = None
        if ctx.needs_input_grad[3]:  # one call: every level's part summed into all channels
            flipped = []
            for level, weight in zip(ctx.levels, weights):
                groups, k = level.groups, weight.shape[-1]
                flipped.append(weight.reshape(groups, -1, *weight.shape[1:]).transpose(1, 2)
                               .flip(-1, -2).reshape(-1, weight.shape[0] // groups, k, k))
            grad_x = torch.empty_like(x)
            _run(grad, flipped, [None] * len(weights), [lvl.dilation[0] for lvl in ctx.levels],
                 [0] * len(weights), 1, grad_x,
                 in_ranges=[(start, w.shape[0]) for start, w in zip(ctx.c_offsets, weights)])
        grad_weights = list(_ext.weight_grads(
            x.detach(), grad, [list(w.shape) for w in weights],
            [lvl.dilation[0] for lvl in ctx.levels], list(ctx.c_offsets)))
        grad_biases = [grad.narrow(1, start, w.shape[0]).sum((0, 2, 3)) if has else None
                       for start, w, has in zip(ctx.c_offsets, weights, ctx.has_bias)]
        grad_others = [grad.narrow(1, start, channels)
                       for start, channels in zip(ctx.other_offsets, ctx.other_channels)]
        return (None, None, None, grad_x, *grad_weights, *grad_biases, *grad_others)
