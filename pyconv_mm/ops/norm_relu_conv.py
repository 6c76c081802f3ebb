"""A batch norm, ReLU and convolution in training that keeps for backward the norm's input, not
the convolution's: the ReLU's output is recomputed from it in backward.

In a bottleneck the expansion ``conv3`` reads ``relu(norm2(y))``. Run as modules, the norm keeps
``y`` for its backward and the convolution keeps the activated tensor for its weight gradient:
two tensors of the same size (6.4 MB each in PyConvResNet-50's stage 1 at batch 8).
:func:`norm_relu_conv` keeps ``y`` and the norm's batch statistics, and backward forms
``relu(y * scale + shift)`` again, bit for bit as the forward did (one memory-bound pass, about
0.3 ms for stage 1's 64 x 56 x 56 at batch 8 on 2 cores), for the convolution's gradients, then
runs the ReLU's and the norm's backward from ``y``.

PyConvResNet's first block (``cp_pyconv_input``) uses it to pay for the reduction output it
keeps at the stem's resolution (:mod:`~pyconv_mm.ops.reduced_pyconv`).

Example:
    >>> if usable(y, block.bn2, block.relu, block.conv3):
    ...     out = norm_relu_conv(y, block.bn2, block.conv3)
"""
import torch
import torch.nn.functional as F
from torch import nn

from . import batch_norm_act, pointwise


def usable(y: torch.Tensor, norm: nn.Module, relu: nn.Module, conv: nn.Module) -> bool:
    """Whether :func:`norm_relu_conv` computes ``conv(relu(norm(y)))`` here: where our norm
    kernels run ``norm`` on ``y`` in training (:func:`batch_norm_act.usable`), ``relu`` is an
    ``nn.ReLU`` and ``conv`` an ``nn.Conv2d`` without bias and with numbers of zeros as padding,
    none of them with hooks (they would not run). Elsewhere the caller runs the modules."""
    if not (batch_norm_act.usable(y, norm) and type(relu) is nn.ReLU
            and type(conv) is nn.Conv2d and conv.bias is None
            and conv.padding_mode == 'zeros' and not isinstance(conv.padding, str)):
        return False
    return not any(module._forward_hooks or module._forward_pre_hooks
                   for module in (relu, conv))


def norm_relu_conv(y: torch.Tensor, norm: nn.BatchNorm2d, conv: nn.Conv2d) -> torch.Tensor:
    """``conv(relu(norm(y)))`` in training (see :func:`usable`), keeping for backward ``y``,
    the weights and the norm's batch mean and inverse standard deviation. The norm updates its
    running statistics once, as when called.

    Shapes: (N, C, H, W) -> (N, conv.out_channels, H', W') as ``conv`` gives them.
    """
    return _NormReluConv.apply((norm, conv), y, norm.weight, norm.bias, conv.weight)


def _conv_backward(conv: nn.Conv2d, x: torch.Tensor, weight: torch.Tensor, grad: torch.Tensor,
                   need_weight: bool):
    """(grad_x, grad_weight) of ``conv`` at ``x``: a plain 1x1 convolution's weight gradient
    by our kernel where it takes it (:mod:`~pyconv_mm.ops.pointwise`), else the stock
    backward."""
    if pointwise.is_pointwise(conv):
        return pointwise.backward(conv, x, weight, grad, True, need_weight)
    grad_x, grad_weight, _ = torch.ops.aten.convolution_backward(
        grad, x, weight, None, list(conv.stride), list(conv.padding), list(conv.dilation),
        False, [0, 0], conv.groups, [True, need_weight, False])
    return grad_x, grad_weight


class _NormReluConv(torch.autograd.Function):
    """``apply((norm, conv), y, norm_weight, norm_bias, conv_weight)``: see
    :func:`norm_relu_conv`."""

    @staticmethod
    def forward(ctx, modules, y, norm_weight, norm_bias, conv_weight):
        norm, conv = modules
        activated, mean, invstd = batch_norm_act.forward(y, norm_weight, norm_bias, norm)
        out = F.conv2d(activated, conv_weight, None, conv.stride, conv.padding, conv.dilation,
                       conv.groups)
        ctx.save_for_backward(y, norm_weight, norm_bias, conv_weight, mean, invstd)
        ctx.conv = conv
        return out

    @staticmethod
    def backward(ctx, grad):
        y, norm_weight, norm_bias, conv_weight, mean, invstd = ctx.saved_tensors
        conv, needs = ctx.conv, ctx.needs_input_grad  # modules, y, norm w, norm b, conv w
        activated = batch_norm_act.activated(y, mean, invstd, norm_weight, norm_bias)
        grad_activated, grad_conv_weight = _conv_backward(conv, activated, conv_weight, grad,
                                                          needs[4])
        del activated
        grad_y, grad_norm_weight, grad_norm_bias = batch_norm_act.relu_norm_backward(
            grad_activated, y, mean, invstd, norm_weight, norm_bias)
        return (None, grad_y, grad_norm_weight if needs[2] else None,
                grad_norm_bias if needs[3] else None, grad_conv_weight)
