"""A bottleneck's 1x1 reduction, batch norm, ReLU and PyConv in training, keeping for backward
the block's input, the reduction's output ``y`` and the norm's batch statistics, not the
activated tensor the PyConv reads.

PyConvResNet's first block works at the stem's 112x112: the reduction's output (which a batch
norm keeps for backward) and the activated tensor the PyConv reads (which the PyConv keeps)
are 25.7 MB each at batch 8. Activation checkpointing would drop both and run the reduction,
the norm, the ReLU and the PyConv a second time in backward; the PyConv's output is not needed
there, only its input. :func:`reduce_norm_pyconv` keeps ``y`` and in backward recomputes the
activated tensor ``relu(y * scale + shift)`` from it and the saved batch statistics (the
affine form ATen's CPU batch norm computes), then runs the PyConv's gradients on it: the
PyConv's forward and the norm's statistics are computed once. Where every level of the PyConv
runs in our kernel, its forward applies the norm and the ReLU as it reads ``y`` (as in
inference): the activated tensor is not written in the forward at all, and at stride 2
(stage 1's first block) not in backward either: the weight gradients form it as they read
``y`` (:func:`_activates_in_weight_grads`; 15.7 -> 13.5 ms for that block's weight gradients
at batch 8, 2 cores). (Until stop 26 ``y``
was dropped too and the 1x1 convolution run again in backward: 4.4 ms of a CPU step at batch
8 for 25.7 MB; the block's expansion now drops its own input instead, see
:mod:`~pyconv_mm.ops.norm_relu_conv`.)

Example:
    >>> if usable(x, block.conv1, block.bn1, block.relu, block.conv2):
    ...     out = reduce_norm_pyconv(x, block.conv1, block.bn1, block.conv2)
"""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from . import batch_norm_act, direct, pointwise
from .algorithms import _compiling
from .pyconv import PyConv2d


def usable(x: torch.Tensor, conv: nn.Module, norm: nn.Module, relu: nn.Module,
           pyconv: nn.Module) -> bool:
    """Whether :func:`reduce_norm_pyconv` computes ``pyconv(relu(norm(conv(x))))`` here: in
    eager training on the CPU in float32 (no autocast), with a plain ``nn.Conv2d`` without
    bias, an ``nn.BatchNorm2d`` in training mode with affine parameters and running
    statistics, an ``nn.ReLU`` and a :class:`PyConv2d` whose levels have no bias, none of them
    with hooks (they would not run). Elsewhere the caller checkpoints the modules as written.
    """
    if not (torch.is_grad_enabled() and not _compiling() and x.device.type == 'cpu'
            and x.dtype == torch.float32 and x.dim() == 4 and not direct._cpu_autocast()):
        return False
    if not (type(conv) is nn.Conv2d and conv.bias is None and conv.padding_mode == 'zeros'
            and type(norm) is nn.BatchNorm2d and norm.training and norm.affine
            and norm.track_running_stats and type(relu) is nn.ReLU
            and isinstance(pyconv, PyConv2d)
            and all(level.bias is None for level in pyconv.levels)):
        return False
    return not any(module._forward_hooks or module._forward_pre_hooks
                   for module in (conv, norm, relu, pyconv, *pyconv.levels))


def reduce_norm_pyconv(x: torch.Tensor, conv: nn.Conv2d, norm: nn.BatchNorm2d,
                       pyconv: PyConv2d) -> torch.Tensor:
    """``pyconv(relu(norm(conv(x))))`` in training (see :func:`usable`), keeping for backward
    ``x``, ``conv(x)``, the weights and the norm's batch mean and inverse standard deviation.
    The norm updates its running statistics once, as when called.

    Shapes: (N, C_in, H, W) -> (N, pyconv.out_channels, H / stride, W / stride).
    """
    return _ReducedPyConv.apply((conv, norm, pyconv), x, conv.weight, norm.weight, norm.bias,
                                *[level.weight for level in pyconv.levels])


def _batch_affine(mean: torch.Tensor, invstd: torch.Tensor, weight: torch.Tensor,
                  bias: torch.Tensor) -> direct.Affine:
    """(scale, shift) per channel with ``batch_norm(y) = y * scale + shift`` for the batch's
    statistics (the form ATen's CPU batch norm computes)."""
    scale = weight * invstd
    return scale, bias - mean * scale


def _activated(y: torch.Tensor, affine: direct.Affine) -> torch.Tensor:
    """relu(y * scale + shift) (the norm's output within rounding), in ``y``'s memory
    format."""
    scale, shift = affine
    return torch.addcmul(shift.view(1, -1, 1, 1), y, scale.view(1, -1, 1, 1)).relu_()


def _pyconv_backward(pyconv: PyConv2d, forms: Sequence[str], x: torch.Tensor,
                     grad: torch.Tensor, weights: Sequence[torch.Tensor],
                     needed: Sequence[bool], activation: Optional[direct.Affine] = None
                     ) -> Tuple[torch.Tensor, List[Optional[torch.Tensor]]]:
    """The gradients of the PyConv's input ``x`` and of its levels' weights (None where not
    ``needed``) for its output gradient ``grad``, each level in the form it ran in: the
    kernel's levels by the kernel (:func:`direct.input_grad`, :func:`direct.weight_grads`),
    ``native`` ones by the stock convolution backward, the others (``dense``, ``depthwise``)
    by autograd through that level's forward, run again. With ``activation`` (every level in
    the kernel), the PyConv's input was ``relu(x * scale + shift)``: the gradients are those
    of that input, which the weight gradients form as they copy ``x``."""
    levels, starts = list(pyconv.levels), pyconv._level_starts()
    in_kernel = [i for i, form in enumerate(forms) if form == 'direct']
    grad_x, grad_weights = None, [None] * len(levels)
    if in_kernel:
        chosen = ([levels[i] for i in in_kernel], [weights[i] for i in in_kernel],
                  [starts[i] for i in in_kernel])
        grad_x = direct.input_grad(grad, *chosen, x)
        for i, weight_grad in zip(in_kernel, direct.weight_grads(
                x, grad, *chosen, [needed[i] for i in in_kernel], activation)):
            grad_weights[i] = weight_grad
    for i, form in enumerate(forms):
        if form == 'direct':
            continue
        level = levels[i]
        level_grad = grad.narrow(1, starts[i], level.out_channels)
        if form == 'native':
            input_grad, weight_grad, _ = torch.ops.aten.convolution_backward(
                level_grad, x, weights[i], None, list(level.stride), list(level.padding),
                list(level.dilation), False, [0, 0], level.groups, [True, needed[i], False])
        else:
            with torch.enable_grad():
                x_leaf = x.detach().requires_grad_()
                weight_leaf = weights[i].detach().requires_grad_(needed[i])
                out = pyconv._run_level(level, x_leaf, form, weight_leaf)
                found = torch.autograd.grad(out, (x_leaf, weight_leaf) if needed[i] else
                                            (x_leaf, ), level_grad)
            input_grad, weight_grad = found[0], (found[1] if needed[i] else None)
        grad_x = input_grad if grad_x is None else grad_x.add_(input_grad)
        grad_weights[i] = weight_grad
    return grad_x, grad_weights


def _activates_in_weight_grads(forms: Sequence[str], pyconv: PyConv2d,
                               y: torch.Tensor) -> bool:
    """Whether the PyConv's weight gradients form its activated input from ``y`` as they read
    it (:func:`direct.weight_grads` with an activation) instead of reading a recomputed
    activated tensor: where every level ran in the kernel, at stride 2, on an input the kernel
    activates. Measured (batch 8, 2 cores, all weight gradients): stage 1's first block, 64
    channels at 112x112, 15.7 -> 13.5 ms with its dense level's gradient from the planar copy
    (stop 31); since that gradient reads the input in place (stop 32, the same with and
    without the activation), 11.2 against 11.3 ms for the gradients alone, so the 1.2 ms
    write of the activated tensor is what it saves. At stride 1 (64 channels at 56x56) the
    activation in the copy costs about what the write does."""
    return (all(form == 'direct' for form in forms) and pyconv.levels[0].stride[0] == 2
            and direct.activation_in_weight_grads(y))


class _ReducedPyConv(torch.autograd.Function):
    """``apply((conv, norm, pyconv), x, conv_weight, norm_weight, norm_bias, *level_weights)``:
    see :func:`reduce_norm_pyconv`."""

    @staticmethod
    def forward(ctx, modules, x, conv_weight, norm_weight, norm_bias, *level_weights):
        conv, norm, pyconv = modules
        y = F.conv2d(x, conv_weight, None, conv.stride, conv.padding, conv.dilation, conv.groups)
        with torch.enable_grad():  # the forms chosen (timed if new) for training
            forms = pyconv._forms(y)  # the activated input's shape, format and dtype
        # the statistics (and running ones) as the norm computes them when called: by our
        # kernels where they take it (batch_norm_act), else by ATen's ops
        ours = batch_norm_act.takes(y, norm)
        if all(form == 'direct' for form in forms):
            # the kernel applies the norm and the ReLU as it reads y: the activated tensor is
            # never written
            if ours:
                mean, invstd = batch_norm_act.batch_stats(y, norm)
            else:
                mean, var = torch.batch_norm_update_stats(
                    y, norm.running_mean, norm.running_var, batch_norm_act.update_factor(norm))
                invstd = torch.rsqrt(var + norm.eps)
            out = pyconv.levels_in_kernel(
                y, activation=_batch_affine(mean, invstd, norm_weight, norm_bias))
        else:
            if ours:
                activated, mean, invstd = batch_norm_act.forward(y, norm_weight, norm_bias, norm)
            else:
                activated, mean, invstd = torch.ops.aten.native_batch_norm(
                    y, norm_weight, norm_bias, norm.running_mean, norm.running_var, True,
                    batch_norm_act.update_factor(norm), norm.eps)
                activated.relu_()
            out = pyconv._run_forms(activated, forms)  # no autograd in a forward
        ctx.save_for_backward(x, y, conv_weight, norm_weight, norm_bias, mean, invstd,
                              *level_weights)
        ctx.modules, ctx.forms = modules, forms
        return out

    @staticmethod
    def backward(ctx, grad):
        (x, y, conv_weight, norm_weight, norm_bias, mean, invstd,
         *level_weights) = ctx.saved_tensors
        conv, norm, pyconv = ctx.modules
        needs = ctx.needs_input_grad  # modules, x, conv_weight, norm_weight, norm_bias, levels
        ours = batch_norm_act.takes(y, norm)  # norm and ReLU in our kernels (one pass each)
        affine = _batch_affine(mean, invstd, norm_weight, norm_bias)
        if ours and _activates_in_weight_grads(ctx.forms, pyconv, y):
            activated = None
            grad_activated, level_grads = _pyconv_backward(pyconv, ctx.forms, y, grad,
                                                           level_weights, needs[5:], affine)
        else:
            activated = (batch_norm_act.activated(y, mean, invstd, norm_weight, norm_bias)
                         if ours else _activated(y, affine))
            grad_activated, level_grads = _pyconv_backward(pyconv, ctx.forms, activated, grad,
                                                           level_weights, needs[5:])
        if ours:  # the ReLU's mask recomputed from y, as `activated` was
            del activated
            grad_y, grad_norm_weight, grad_norm_bias = batch_norm_act.relu_norm_backward(
                grad_activated, y, mean, invstd, norm_weight, norm_bias)
        else:
            grad_activated = torch.ops.aten.threshold_backward(grad_activated, activated, 0)
            del activated
            grad_y, grad_norm_weight, grad_norm_bias = \
                torch.ops.aten.native_batch_norm_backward(
                    grad_activated, y, norm_weight, None, None, mean, invstd, True, norm.eps,
                    [True, needs[3], needs[4]])
        del grad_activated, y
        if pointwise.is_pointwise(conv):  # the weight's gradient by our kernel where it takes it
            grad_x, grad_conv_weight = pointwise.backward(conv, x, conv_weight, grad_y, needs[1],
                                                          needs[2])
        else:
            grad_x, grad_conv_weight, _ = torch.ops.aten.convolution_backward(
                grad_y, x, conv_weight, None, list(conv.stride), list(conv.padding),
                list(conv.dilation), False, [0, 0], conv.groups, [needs[1], needs[2], False])
        return (None, grad_x, grad_conv_weight, grad_norm_weight, grad_norm_bias, *level_grads)
