"""Batch norm in training with the ReLU (and residual add) after it, in fewer passes over
memory: our residual blocks' norms on the CPU.

A training step of a ResNet-like network spends much of its time outside the convolutions,
in memory-bound passes over large activations: ATen's batch norm reads its input twice for the
statistics and once to normalise it, then the ReLU (and a block's residual add) read and write
the result again; in backward the ReLU's gradient is a pass of its own before the norm's two.
Our extension (``csrc/batch_norm.cpp``) does the forward in two passes (statistics, then
``relu(y * scale + shift [+ residual])``) and the backward in two (the sums of the masked
gradient, then the input's gradient), with the ReLU's mask recomputed from the norm's input.
Timed here (2 cores, fp32, channels_last), forward and backward of a 64-channel 56x56 norm and
ReLU at batch 8: 0.26 + 0.46 ms against 0.40 + 1.31 ms for ATen's ops.

The results are the same computation within float rounding: statistics are summed in double
(ATen: float), so outputs differ from the modules' by about 1e-6 relative; where an output is
within rounding of zero, the ReLU's mask may differ from the modules' (as between any two
implementations of the norm). Running statistics are updated as the module does.

:func:`norm_act` runs a batch norm module (``nn.BatchNorm2d`` in training mode with affine
parameters and running statistics, no hooks) this way where :func:`usable`, else the modules
as written. ``PYCONV_FUSED_NORMS=0`` or :func:`set_enabled` turns it off.
"""
import os
from typing import Optional

import torch
from torch import nn

from .algorithms import _compiling
from .direct import _cpu_autocast

try:
    from . import _direct_conv as _ext
except ImportError:  # built without the extension: the modules run as written
    _ext = None

#: True when this build has the kernels and this CPU has AVX-512.
AVAILABLE = _ext is not None and _ext.batch_norm_act_supported()
_STATE = {'enabled': os.environ.get('PYCONV_FUSED_NORMS', '1') != '0'}


def set_enabled(enabled: bool) -> None:
    """Run training batch norms with their ReLU in our kernels where usable (default), or
    always as the modules are written."""
    _STATE['enabled'] = bool(enabled)


def enabled() -> bool:
    return AVAILABLE and _STATE['enabled']


def _layout_supported(x: torch.Tensor) -> bool:
    """4D float32 on the CPU, NCHW-contiguous or channels_last with whole 16-channel blocks."""
    if not (x.device.type == 'cpu' and x.dtype == torch.float32 and x.dim() == 4):
        return False
    if x.is_contiguous():
        return True
    return x.is_contiguous(memory_format=torch.channels_last) and x.size(1) % 16 == 0


def usable(x: torch.Tensor, norm: nn.Module, residual: Optional[torch.Tensor] = None) -> bool:
    """Whether :func:`norm_act` runs ``norm`` on ``x`` in our kernels: recording gradients
    in eager mode (see :func:`takes` for the rest)."""
    return torch.is_grad_enabled() and not _compiling() and takes(x, norm, residual)


def takes(x: torch.Tensor, norm: nn.Module, residual: Optional[torch.Tensor] = None) -> bool:
    """Whether our kernels take ``norm`` on ``x``: enabled and built, no autocast, ``norm``
    exactly an ``nn.BatchNorm2d`` in training mode with affine parameters and running
    statistics and no hooks, ``x`` (and ``residual``, of the same shape and memory format) a
    4D float32 CPU tensor, NCHW or channels_last (16k channels), with more than one value per
    channel. Whether gradients are recorded is not asked (an autograd function's forward and
    backward run without)."""
    if not enabled():
        return False
    if not (type(norm) is nn.BatchNorm2d and norm.training and norm.affine
            and norm.track_running_stats and norm.running_mean is not None
            and not (norm._forward_hooks or norm._forward_pre_hooks)):
        return False
    if not _layout_supported(x) or x.numel() <= x.size(1) or _cpu_autocast():
        return False
    if residual is None:
        return True
    return (residual.shape == x.shape and residual.dtype == x.dtype
            and residual.is_contiguous() == x.is_contiguous()
            and _layout_supported(residual))


def update_factor(norm: nn.BatchNorm2d) -> float:
    """Count the batch as a training-mode batch norm's forward does; the weight of its
    statistics in the running ones (``momentum``, or a cumulative average for None)."""
    norm.num_batches_tracked.add_(1)
    if norm.momentum is None:
        return 1.0 / float(norm.num_batches_tracked)
    return norm.momentum


def batch_stats(x: torch.Tensor, norm: nn.BatchNorm2d):
    """(mean, invstd) of ``x`` per channel, updating ``norm``'s running statistics as its
    training forward does (where :func:`takes` ``x`` and ``norm``)."""
    return _ext.batch_norm_stats(x, norm.running_mean, norm.running_var, update_factor(norm),
                                 norm.eps)


def forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, norm: nn.BatchNorm2d,
            residual: Optional[torch.Tensor] = None, relu: bool = True):
    """(relu(batch_norm(x) [+ residual]), mean, invstd) with the batch's statistics, outside
    autograd, counting the batch in ``norm``'s running statistics as its training forward
    does (where :func:`takes` ``x`` and ``norm``): :func:`norm_act`'s forward, and that of a
    function doing its own backward."""
    return _ext.batch_norm_act_forward(x, weight, bias, norm.running_mean, norm.running_var,
                                       update_factor(norm), norm.eps, residual, relu)


def activated(y: torch.Tensor, mean: torch.Tensor, invstd: torch.Tensor, weight: torch.Tensor,
              bias: torch.Tensor) -> torch.Tensor:
    """relu(batch_norm(y)) for the batch statistics (mean, invstd): what :func:`norm_act`'s
    forward wrote, bit for bit (a backward that recomputes it sees the same ReLU mask)."""
    return _ext.batch_norm_act_apply(y, weight, bias, mean, invstd, True)


def relu_norm_backward(grad: torch.Tensor, y: torch.Tensor, mean: torch.Tensor,
                       invstd: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor):
    """Gradients (y, weight, bias) of relu(batch_norm(y)) with batch statistics, for the
    output's gradient ``grad``; the ReLU's mask is recomputed from ``y``."""
    grad_y, grad_weight, grad_bias, _ = _ext.batch_norm_act_backward(
        grad, y, None, weight, bias, mean, invstd, True, False)
    return grad_y, grad_weight, grad_bias


def norm_act(x: torch.Tensor, norm: nn.Module, relu: Optional[nn.Module] = None,
             residual: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``relu(norm(x) [+ residual])`` (no ReLU for ``relu=None``): in our kernels where
    :func:`usable` and ``relu`` is a plain ``nn.ReLU`` without hooks, else by the modules
    (the add in place into the norm's output).

    Shapes: x, residual (N, C, H, W) -> (N, C, H, W), in ``x``'s memory format.
    """
    plain_relu = relu is None or (type(relu) is nn.ReLU and not relu._forward_hooks
                                  and not relu._forward_pre_hooks)
    if plain_relu and usable(x, norm, residual):
        return _NormAct.apply(x, norm.weight, norm.bias, residual, norm, relu is not None)
    out = norm(x)
    if residual is not None:
        out += residual
    return out if relu is None else relu(out)


class _NormAct(torch.autograd.Function):
    """``apply(x, weight, bias, residual, norm, relu)``: see :func:`norm_act`."""

    @staticmethod
    def forward(ctx, x, weight, bias, residual, norm, relu):
        out, mean, invstd = forward(x, weight, bias, norm, residual, relu)
        # with a residual, the ReLU's mask is read from the output (it cannot be recomputed
        # from x alone); without one it is recomputed from x
        masked_by_out = relu and residual is not None
        ctx.save_for_backward(x, weight, bias, mean, invstd, out if masked_by_out else None)
        ctx.relu, ctx.has_residual = relu, residual is not None
        return out

    @staticmethod
    def backward(ctx, grad):
        x, weight, bias, mean, invstd, out = ctx.saved_tensors
        residual_grad = ctx.has_residual and ctx.needs_input_grad[3]
        grad_x, grad_weight, grad_bias, grad_residual = _ext.batch_norm_act_backward(
            grad, x, out, weight, bias, mean, invstd, ctx.relu, residual_grad)
        needs = ctx.needs_input_grad
        return (grad_x if needs[0] else None, grad_weight if needs[1] else None,
                grad_bias if needs[2] else None, grad_residual if residual_grad else None,
                None, None)
