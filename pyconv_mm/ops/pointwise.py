"""1x1 convolutions in training with their weight gradient by our kernel: the bottlenecks'
reductions and expansions and the shortcuts' projections on the CPU.

A training step of PyConvResNet-50 (or ResNet-50) runs about as many multiply-adds in the
weight gradients of its 1x1 convolutions as in their forwards, but the stock backward
(oneDNN) runs them at 80-190 GMAC/s where the forwards run at 190-240 (batch 8, 2 cores):
it is weakest where a dimension is 64 channels (stage 1) or 49 pixels an image (stage 4).
In channels-last memory the weight gradient is one product of two pixel-major matrices
(``csrc/pointwise_weight_grad.cpp``), which our kernel runs at 190-235 GMAC/s: 118 -> 87 ms
for the fifteen 1x1 shapes of a step (Zen 5). The forward and the input gradient stay with
oneDNN.

:func:`conv` runs a 1x1 convolution module this way where :func:`usable`, else the module as
written; :func:`weight_grad` is the kernel for functions that do their own backward
(:mod:`~pyconv_mm.ops.norm_relu_conv`, :mod:`~pyconv_mm.ops.reduced_pyconv`).
``PYCONV_POINTWISE_GRAD=0`` or :func:`set_enabled` turns it off.

Example:
    >>> out = pointwise.conv(block.conv3, x)  # block.conv3(x), its weight gradient ours
"""
import os
from typing import Union

import torch
import torch.nn.functional as F
from torch import nn

from .algorithms import _compiling
from .direct import _cpu_autocast

try:
    from . import _direct_conv as _ext
except ImportError:  # built without the extension: the modules run as written
    _ext = None

#: True when this build has the kernel and this CPU has AVX-512.
AVAILABLE = _ext is not None and _ext.supported()
_STATE = {'enabled': os.environ.get('PYCONV_POINTWISE_GRAD', '1') != '0'}

ConvNd = Union[nn.Conv2d, nn.Conv3d]


def set_enabled(enabled: bool) -> None:
    """Compute the weight gradients of 1x1 convolutions by our kernel where usable (default),
    or always by the stock backward."""
    _STATE['enabled'] = bool(enabled)


def enabled() -> bool:
    return AVAILABLE and _STATE['enabled']


def takes(x: torch.Tensor, grad: torch.Tensor) -> bool:
    """Whether :func:`weight_grad` takes this input and output gradient: enabled and built,
    both float32 CPU tensors of 4 or 5 dimensions, dense in channels-last memory format, the
    same size outside the channels, and whole 16-channel blocks of input."""
    return (enabled() and x.dim() in (4, 5) and grad.dim() == x.dim()
            and x.device.type == 'cpu' and grad.device.type == 'cpu'
            and x.dtype == torch.float32 and grad.dtype == torch.float32
            and x.shape[1] % 16 == 0 and x.shape[2:] == grad.shape[2:]
            and x.shape[0] == grad.shape[0] and _channels_last(x) and _channels_last(grad))


def _channels_last(t: torch.Tensor) -> bool:
    return t.is_contiguous(memory_format=torch.channels_last if t.dim() == 4
                           else torch.channels_last_3d)


def is_pointwise(conv: nn.Module) -> bool:
    """An ``nn.Conv2d`` / ``nn.Conv3d`` (exactly) with a 1x1 kernel, stride 1, no padding,
    dilation or groups, no bias and no hooks."""
    return (type(conv) in (nn.Conv2d, nn.Conv3d) and conv.bias is None
            and all(k == 1 for k in conv.kernel_size) and all(s == 1 for s in conv.stride)
            and not isinstance(conv.padding, str) and all(p == 0 for p in conv.padding)
            and conv.groups == 1 and not (conv._forward_hooks or conv._forward_pre_hooks))


def usable(x: torch.Tensor, conv: nn.Module) -> bool:
    """Whether :func:`conv` computes ``conv(x)`` with our weight gradient: recording gradients
    in eager mode without autocast, ``conv`` a plain 1x1 convolution (see :func:`is_pointwise`)
    whose weight needs a gradient, ``x`` a float32 CPU tensor in channels-last memory format
    with whole 16-channel blocks (see :func:`takes`)."""
    if not (enabled() and torch.is_grad_enabled() and not _compiling()
            and not _cpu_autocast()):
        return False
    return (is_pointwise(conv) and conv.weight.requires_grad and x.dim() == conv.weight.dim()
            and x.device.type == 'cpu' and x.dtype == torch.float32
            and x.shape[1] % 16 == 0 and _channels_last(x))


def conv(module: ConvNd, x: torch.Tensor) -> torch.Tensor:
    """``module(x)``; in training where :func:`usable`, with the weight gradient by our kernel.

    Shapes: (N, C_in, *S) -> (N, C_out, *S).
    """
    if usable(x, module):
        return _PointwiseConv.apply(module, x, module.weight)
    return module(x)


#: Images of fewer pixels than this (PyConvHGResNet's and ResNet's stage 4 at 224x224: 7x7)
#: have their 1x1 forward run as one image of all the batch's pixels.
FLAT_FORWARD_MAX_PIXELS = 64


def _as_one_row(t: torch.Tensor) -> torch.Tensor:
    """A dense channels_last (N, C, H, W) tensor viewed as (1, C, 1, N * H * W), channels_last:
    the same memory, the batch's pixels in one row."""
    n, c, h, w = t.shape
    pixels = n * h * w
    return t.as_strided((1, c, 1, pixels), (pixels * c, 1, pixels * c, c))


def forward(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``conv2d(x, weight)`` / ``conv3d`` of a 1x1 convolution (stride 1, no bias). A 4D
    channels_last ``x`` whose images have fewer than :data:`FLAT_FORWARD_MAX_PIXELS` pixels
    runs as one image of all the batch's pixels (the same products: one channels_last matrix
    of pixels times the weight): oneDNN blocks pixels within an image, and 49 a row fill its
    tiles poorly. Batch 8, 2 cores (Zen 5), 7x7 images: 1024 -> 2048 channels 5.46 -> 4.47
    ms, 2048 -> 1024 5.78 -> 4.59 (the same bits); at 14x14 no gain (x0.97-1.0).

    Shapes: (N, C_in, *S) -> (N, C_out, *S), in ``x``'s memory format.
    """
    if (x.dim() == 4 and x.shape[2] * x.shape[3] < FLAT_FORWARD_MAX_PIXELS and x.numel()
            and x.is_contiguous(memory_format=torch.channels_last)):
        n, _, h, w = x.shape
        row = F.conv2d(_as_one_row(x), weight)  # (1, C_out, 1, N * H * W), channels_last
        c = row.shape[1]
        # a tensor of its own on the row's memory, not a view of it: autograd forbids in-place
        # ops (an inplace ReLU after the convolution) on views a custom Function returns
        return row.new_empty(0).set_(row.untyped_storage(), row.storage_offset(), (n, c, h, w),
                                     (h * w * c, 1, w * c, c))
    return (F.conv2d if x.dim() == 4 else F.conv3d)(x, weight)


def weight_grad(x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """The weight gradient (C_out, C_in, 1, 1[, 1]) of a 1x1 convolution with stride 1 from
    its input ``x`` (N, C_in, *S) and output gradient ``grad`` (N, C_out, *S), where
    :func:`takes` them."""
    return _ext.pointwise_weight_grad(x, grad)


def backward(conv: ConvNd, x: torch.Tensor, weight: torch.Tensor, grad: torch.Tensor,
             need_input: bool, need_weight: bool):
    """(grad_x, grad_weight) of ``conv`` (a plain 1x1 convolution) at input ``x``, None where
    not needed: the input's by the stock backward, the weight's by our kernel where it
    :func:`takes` them, else by the stock backward too. An output gradient in another memory
    format than a channels-last ``x`` (a loss's gradient, say) is copied to channels-last
    first: one pass over it, against C_in multiply-adds per value in the product."""
    if need_weight and enabled() and _channels_last(x) and not _channels_last(grad):
        grad = grad.contiguous(memory_format=torch.channels_last if grad.dim() == 4
                               else torch.channels_last_3d)
    ours = need_weight and takes(x, grad)
    grad_x, grad_weight = None, None
    if need_input or (need_weight and not ours):
        grad_x, grad_weight, _ = torch.ops.aten.convolution_backward(
            grad, x, weight, None, list(conv.stride), list(conv.padding), list(conv.dilation),
            False, [0] * (x.dim() - 2), conv.groups, [need_input, need_weight and not ours,
                                                      False])
    if ours:
        grad_weight = weight_grad(x, grad)
    return grad_x, grad_weight


class _PointwiseConv(torch.autograd.Function):
    """``apply(conv, x, weight)``: see :func:`conv`."""

    @staticmethod
    def forward(ctx, module, x, weight):
        ctx.save_for_backward(x, weight)
        ctx.module = module
        return forward(x, weight)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad_x, grad_weight = backward(ctx.module, x, weight, grad, ctx.needs_input_grad[1],
                                       ctx.needs_input_grad[2])
        return None, grad_x, grad_weight

