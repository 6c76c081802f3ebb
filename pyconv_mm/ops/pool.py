"""Max pooling that keeps no int64 indices for its backward pass.

A stock max pool saves one int64 index per output element for its backward pass: twice the
bytes of its float32 output. In PyConvResNet's shortcuts (``MaxPool -> 1x1 conv -> BN``) the
pool's input is the block's input, which the block's first convolution saves anyway. These
pools keep, on CPU with our kernel (float32 channels_last inputs of whole 16-channel blocks),
the position of each maximum in its window as one byte per output element
(:func:`pyconv_mm.ops.direct.max_pool2d_with_positions`; PyConvResNet-50, batch 8 at 224x224:
4 MiB instead of 34), from which the backward pass gathers each input element's gradient in
one pass; elsewhere they keep only the input and find the maxima again in the backward pass
(the stock pool with indices, then its backward). The forward result and the gradients are
those of ``nn.MaxPool2d`` / ``nn.MaxPool3d``, bit for bit.
"""
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from . import direct
from .algorithms import _compiling
from .pyramid import ntuple

_POOL = {2: F.max_pool2d, 3: F.max_pool3d}
_POOL_BACKWARD = {2: torch.ops.aten.max_pool2d_with_indices_backward,
                  3: torch.ops.aten.max_pool3d_with_indices_backward}


class _CompactMaxPool(torch.autograd.Function):
    """Max pool (dilation 1, floor mode) saving the maxima's positions as bytes (our kernel) or
    its input (elsewhere) instead of int64 indices."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, kernel_size: Tuple[int, ...], stride: Tuple[int, ...],
                padding: Tuple[int, ...]) -> torch.Tensor:
        ctx.window = (kernel_size, stride, padding)
        ctx.input_size = tuple(x.shape[2:])
        ctx.positions = len(kernel_size) == 2 and direct.pool_usable(x)
        if ctx.positions:
            out, positions = direct.max_pool2d_with_positions(x, kernel_size, stride, padding)
            ctx.save_for_backward(positions)
            return out
        ctx.save_for_backward(x)
        return _POOL[len(kernel_size)](x, kernel_size, stride, padding)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        (saved, ) = ctx.saved_tensors
        kernel_size, stride, padding = ctx.window
        if ctx.positions:
            return (direct.max_pool2d_grad(saved, grad, ctx.input_size, kernel_size, stride,
                                           padding), None, None, None)
        ndim = len(kernel_size)
        _, indices = _POOL[ndim](saved, kernel_size, stride, padding, return_indices=True)
        grad_x = _POOL_BACKWARD[ndim](grad, saved, kernel_size, stride, padding, (1, ) * ndim,
                                      False, indices)
        return grad_x, None, None, None


class _IndexFreeMaxPoolMixin:
    """The forward of the index-free pools: with a gradient to keep, the compact pool; without,
    our kernel's pool without positions where it applies (faster than the stock pool:
    PyConvResNet-50's four shortcut pools at batch 8, 3.2 -> 2.4 ms with positions, 1.7
    without); the stock pool where neither does (tracing, compiling, dilation, ceil mode,
    returned indices)."""
    ndim = 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (_compiling() or torch.jit.is_tracing() or torch.jit.is_scripting() or self.ceil_mode
                or self.return_indices or ntuple(self.dilation, self.ndim) != (1, ) * self.ndim):
            return super().forward(x)
        window = (ntuple(self.kernel_size, self.ndim), ntuple(self.stride, self.ndim),
                  ntuple(self.padding, self.ndim))
        if torch.is_grad_enabled() and x.requires_grad:
            return _CompactMaxPool.apply(x, *window)
        if self.ndim == 2 and direct.pool_usable(x):
            return direct.max_pool2d(x, *window)
        return super().forward(x)


class IndexFreeMaxPool2d(_IndexFreeMaxPoolMixin, nn.MaxPool2d):
    """``nn.MaxPool2d`` that keeps no int64 indices for its backward pass (see the module).

    Shapes: (N, C, H, W) -> (N, C, H', W') as ``nn.MaxPool2d``.
    """
    ndim = 2


class IndexFreeMaxPool3d(_IndexFreeMaxPoolMixin, nn.MaxPool3d):
    """``nn.MaxPool3d`` that keeps its input, not int64 indices, for its backward pass.

    Shapes: (N, C, T, H, W) -> (N, C, T', H', W') as ``nn.MaxPool3d``.
    """
    ndim = 3
