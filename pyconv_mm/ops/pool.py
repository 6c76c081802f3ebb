"""Max pooling that keeps no int64 indices for its backward pass.

A stock max pool saves one int64 index per output element for its backward pass: twice the
bytes of its float32 output. In PyConvResNet's shortcuts (``MaxPool -> 1x1 conv -> BN``) the
pool's input is the block's input, which the block's first convolution saves anyway. These
pools keep, on CPU with our kernel (float32 channels_last inputs of whole 16-channel blocks),
the position of each maximum in its window as one byte per output element
(:func:`pyconv_mm.ops.direct.max_pool2d_with_positions`; PyConvResNet-50, batch 8 at 224x224:
4 MiB instead of 34), from which the backward pass gathers each input element's gradient in
one pass; elsewhere they keep only the input and find the maxima again in the backward pass
(the stock pool with indices, then its backward). A 3D pool whose window spans one frame
(PyConvResNet3D's shortcuts in stages 1 and 2: 1x3x3, stride (1, s, s)) over a channels_last_3d
clip is the 2D pool over its frames, a channels_last batch of images: it goes to the kernel as
that. The forward result and the gradients are those of ``nn.MaxPool2d`` / ``nn.MaxPool3d``,
bit for bit.
"""
from typing import Optional, Tuple

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


Window = Tuple[Tuple[int, ...], Tuple[int, ...], Tuple[int, ...]]  # kernel, stride, padding


def _in_kernel(x: torch.Tensor, window: Window) -> Optional[Tuple[torch.Tensor, Window]]:
    """``x`` and ``window`` as our kernel's 2D pool takes them, or None: a 2D input as it is; a
    channels_last_3d clip under a one-frame window as its frames, (N * T, C, H, W) (a view),
    and the window's spatial part."""
    if x.dim() == 5:
        kernel, stride, padding = window
        if (kernel[0], stride[0], padding[0]) != (1, 1, 0) or not x.is_contiguous(
                memory_format=torch.channels_last_3d):
            return None
        x = _as_frames(x)
        window = tuple(part[1:] for part in window)
    return (x, window) if direct.pool_usable(x) else None


def _as_frames(clips: torch.Tensor) -> torch.Tensor:
    """Clips (N, C, T, H, W) in channels_last_3d as their frames (N * T, C, H, W) in
    channels_last (a view)."""
    return clips.transpose(1, 2).flatten(0, 1)


def _clips_of(x: torch.Tensor) -> Optional[Tuple[int, int]]:
    """(N, T) of a clip batch (N, C, T, H, W); None for images."""
    return (x.shape[0], x.shape[2]) if x.dim() == 5 else None


def _as_clips(frames: torch.Tensor, clips: Optional[Tuple[int, int]]) -> torch.Tensor:
    """(N * T, C, H, W) frames back to clips (N, C, T, H, W) for ``clips = (N, T)`` (a
    view); None: the frames as they are."""
    return frames if clips is None else frames.unflatten(0, clips).transpose(1, 2)


class _CompactMaxPool(torch.autograd.Function):
    """Max pool (dilation 1, floor mode) saving the maxima's positions as bytes (our kernel) or
    its input (elsewhere) instead of int64 indices."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, kernel_size: Tuple[int, ...], stride: Tuple[int, ...],
                padding: Tuple[int, ...]) -> torch.Tensor:
        ctx.window = (kernel_size, stride, padding)
        ctx.input_size = tuple(x.shape[2:])
        planar = _in_kernel(x, ctx.window)
        ctx.positions = planar is not None
        if ctx.positions:
            frames, ctx.planar_window = planar
            out, positions = direct.max_pool2d_with_positions(frames, *ctx.planar_window)
            ctx.save_for_backward(positions)
            ctx.clips = _clips_of(x)
            return _as_clips(out, ctx.clips)
        ctx.save_for_backward(x)
        return _POOL[len(kernel_size)](x, kernel_size, stride, padding)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        (saved, ) = ctx.saved_tensors
        kernel_size, stride, padding = ctx.window
        if ctx.positions:
            if ctx.clips is not None:  # the gradient of the clips' frames
                grad = _as_frames(grad.contiguous(memory_format=torch.channels_last_3d))
            grad_x = direct.max_pool2d_grad(saved, grad, ctx.input_size[-2:],
                                            *ctx.planar_window)
            return _as_clips(grad_x, ctx.clips), None, None, None
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
        planar = _in_kernel(x, window)
        if planar is not None:
            frames, planar_window = planar
            return _as_clips(direct.max_pool2d(frames, *planar_window), _clips_of(x))
        return super().forward(x)


class IndexFreeMaxPool2d(_IndexFreeMaxPoolMixin, nn.MaxPool2d):
    """``nn.MaxPool2d`` that keeps no int64 indices for its backward pass (see the module).

    Shapes: (N, C, H, W) -> (N, C, H', W') as ``nn.MaxPool2d``.
    """
    ndim = 2


class IndexFreeMaxPool3d(_IndexFreeMaxPoolMixin, nn.MaxPool3d):
    """``nn.MaxPool3d`` that keeps its input (or, for one-frame windows over channels_last_3d
    clips in our kernel, a byte per output), not int64 indices, for its backward pass.

    Shapes: (N, C, T, H, W) -> (N, C, T', H', W') as ``nn.MaxPool3d``.
    """
    ndim = 3
