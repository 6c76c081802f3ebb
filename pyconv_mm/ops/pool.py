"""Max pooling that keeps no indices for its backward pass.

A stock max pool saves one int64 index per output element for its backward pass: twice the
bytes of its float32 output. In PyConvResNet's shortcuts (``MaxPool -> 1x1 conv -> BN``) the
pool's input is the block's input, which the block's first convolution saves anyway, so these
pools save only that input and find the maxima again in the backward pass: one more pooling per
shortcut, and no index tensor alive between forward and backward (PyConvResNet-50, batch 8 at
224x224: 34 MiB). On CPU, channels_last float32 inputs of whole 16-channel blocks, our kernel
does the backward pass in one pass over the input (:func:`pyconv_mm.ops.direct.max_pool2d_grad`);
elsewhere the stock pool runs again with indices and its backward scatters the gradient. The
forward result and the gradients are those of ``nn.MaxPool2d`` / ``nn.MaxPool3d``.
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


class _MaxPoolRecomputed(torch.autograd.Function):
    """Max pool (dilation 1, floor mode) saving its input instead of the argmax indices."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, kernel_size: Tuple[int, ...], stride: Tuple[int, ...],
                padding: Tuple[int, ...]) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.window = (kernel_size, stride, padding)
        return _POOL[len(kernel_size)](x, kernel_size, stride, padding)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        (x, ) = ctx.saved_tensors
        kernel_size, stride, padding = ctx.window
        ndim = len(kernel_size)
        grad_x = direct.max_pool2d_grad(x, grad, kernel_size, stride, padding)
        if grad_x is not None:  # our CPU kernel (2D, channels_last)
            return grad_x, None, None, None
        _, indices = _POOL[ndim](x, kernel_size, stride, padding, return_indices=True)
        grad_x = _POOL_BACKWARD[ndim](grad, x, kernel_size, stride, padding, (1, ) * ndim,
                                      False, indices)
        return grad_x, None, None, None


class _IndexFreeMaxPoolMixin:
    """The forward of the index-free pools; falls back to the stock pool where the index-free
    one does not apply (no gradient needed, tracing, compiling, dilation, ceil mode)."""
    ndim = 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stock = (not (torch.is_grad_enabled() and x.requires_grad) or _compiling()
                 or torch.jit.is_tracing() or torch.jit.is_scripting() or self.ceil_mode
                 or self.return_indices or ntuple(self.dilation, self.ndim) != (1, ) * self.ndim)
        if stock:
            return super().forward(x)
        return _MaxPoolRecomputed.apply(x, ntuple(self.kernel_size, self.ndim),
                                        ntuple(self.stride, self.ndim),
                                        ntuple(self.padding, self.ndim))


class IndexFreeMaxPool2d(_IndexFreeMaxPoolMixin, nn.MaxPool2d):
    """``nn.MaxPool2d`` whose backward pass recomputes the argmax from the saved input.

    Shapes: (N, C, H, W) -> (N, C, H', W') as ``nn.MaxPool2d``.
    """
    ndim = 2


class IndexFreeMaxPool3d(_IndexFreeMaxPoolMixin, nn.MaxPool3d):
    """``nn.MaxPool3d`` whose backward pass recomputes the argmax from the saved input.

    Shapes: (N, C, T, H, W) -> (N, C, T', H', W') as ``nn.MaxPool3d``.
    """
    ndim = 3
