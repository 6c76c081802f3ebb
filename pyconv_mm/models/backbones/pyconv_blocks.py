"""Residual blocks and stages of PyConvResNet, shared by the 2D and 3D backbones.

The blocks follow the authors' reference code (https://github.com/iduta/pyconv, MIT licence):
the spatial convolution of a ResNet block becomes a PyConv, and the stride sits in the PyConv.
Module names (``conv1``, ``bn1``, ..., ``downsample``) match the authors' checkpoints.

Every block works in 2D (``ndim=2``: Conv2d, BN, MaxPool2d) and 3D (``ndim=3``: Conv3d, BN3d,
MaxPool3d); ``conv_cfg`` and ``norm_cfg`` choose the 1x1 convolutions and the norms.
"""
from typing import Optional, Tuple, Union

import torch
from mmcv.cnn import build_conv_layer, build_norm_layer
from mmengine.model import BaseModule
from torch import nn

from pyconv_mm.ops import (PyConv2d, PyConv3d, batch_norm_act, fused_inference, norm_relu_conv,
                           pointwise, reduced_pyconv)
from pyconv_mm.ops.pool import IndexFreeMaxPool2d, IndexFreeMaxPool3d
from .recompute import checkpoint_once

IntOrTuple = Union[int, Tuple[int, ...]]

PYCONV_BY_NDIM = {2: PyConv2d, 3: PyConv3d}


def default_conv_norm(ndim: int, conv_cfg: Optional[dict], norm_cfg: Optional[dict]):
    """Fill in Conv2d/BN or Conv3d/BN3d when a config leaves them out."""
    if ndim not in PYCONV_BY_NDIM:
        raise ValueError(f'ndim={ndim} is not supported; valid: 2 (images) or 3 (video)')
    conv_cfg = conv_cfg or dict(type='Conv2d' if ndim == 2 else 'Conv3d')
    norm_cfg = norm_cfg or dict(type='BN' if ndim == 2 else 'BN3d', requires_grad=True)
    return conv_cfg, norm_cfg


def _is_unit(stride: IntOrTuple) -> bool:
    return all(s == 1 for s in ((stride, ) if isinstance(stride, int) else stride))


class PyConvBlockBase(BaseModule):
    """What bottleneck and basic blocks share: norms by name, checkpointing, residual add.

    Subclasses build their layers and implement :meth:`residual_convs`.
    """
    expansion = 1

    def add_norm(self, index: int, channels: int) -> None:
        name, norm = build_norm_layer(self.norm_cfg, channels, postfix=index)
        setattr(self, f'norm{index}_name', name)
        self.add_module(name, norm)

    def norm(self, index: int) -> nn.Module:
        return getattr(self, getattr(self, f'norm{index}_name'))

    @property
    def last_norm(self) -> nn.Module:
        """The norm before the residual add (zeroed by ``zero_init_residual``)."""
        raise NotImplementedError

    def residual_convs(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, *S) -> (N, C_out, *S / stride): the residual branch up to its last
        convolution (:attr:`last_norm` not applied)."""
        raise NotImplementedError

    def fused_bypassed(self) -> Tuple[nn.Module, ...]:
        """The modules :meth:`fused_forward` runs as fused chains instead of calling them (the
        PyConv and the norm after it check themselves in ``forward_activated``)."""
        raise NotImplementedError

    def fused_forward(self, x: torch.Tensor, input_owned: bool = False) -> torch.Tensor:
        """The block in inference with its norms, ReLUs and residual add fused into its
        convolutions (:mod:`pyconv_mm.ops.fused_inference`); ``input_owned``: see
        :meth:`forward`."""
        raise NotImplementedError

    def fused_shortcut(self, x: torch.Tensor,
                       input_owned: bool = False) -> Tuple[torch.Tensor, bool]:
        """The shortcut's output (its norm folded into its convolution) and whether the block
        may add into it: a new tensor, or ``x`` itself (no shortcut) where ``input_owned``."""
        if self.downsample is None:
            return x, input_owned
        return fused_inference.conv_norm_shortcut(x, self.downsample), True

    def _fusable(self, x: torch.Tensor) -> bool:
        if torch.is_grad_enabled():  # the cheap test first: training never fuses
            return False
        shortcut = fused_inference.shortcut_bypassed(self.downsample)
        return shortcut is not None and fused_inference.usable(
            x, self.fused_bypassed() + shortcut)

    def forward(self, x: torch.Tensor, input_owned: bool = False) -> torch.Tensor:
        """(N, C_in, *S) -> (N, C_out, *S / stride).

        In inference the block may run with its norms, ReLUs and add fused into its
        convolutions, where ``auto`` timed that faster (:mod:`pyconv_mm.ops.fused_inference`).
        ``input_owned``: nothing else holds ``x`` (:class:`PyConvStage` says so for the output
        of the block before), so a fused block without a shortcut writes its output into
        ``x`` instead of a new tensor (less memory traffic: 0.5-1% of PyConvResNet-50's CPU
        inference). ``x`` is never written otherwise.
        """
        if self._fusable(x) and fused_inference.prefer_fused(self, x, self.fused_forward,
                                                             self.forward_as_written):
            return self.fused_forward(x, input_owned)
        return self.forward_as_written(x)

    def forward_as_written(self, x: torch.Tensor) -> torch.Tensor:
        """The block module by module (with checkpointing under ``with_cp``)."""

        def _inner_forward(x: torch.Tensor) -> torch.Tensor:
            identity = x if self.downsample is None else self.downsample(x)
            # relu(last_norm(.) + identity): in training in one pass of our kernel where it
            # can (pyconv_mm.ops.batch_norm_act), else the modules with the add in place (a
            # fresh output tensor per block costs page faults, measured at 16% of
            # PyConvResNet-50's CPU inference time)
            return batch_norm_act.norm_act(self.residual_convs(x), self.last_norm, self.relu,
                                           residual=identity)

        if self.with_cp and x.requires_grad:
            return checkpoint_once(_inner_forward, x, self.modules())
        return _inner_forward(x)


class PyConvBottleneck(PyConvBlockBase):
    """1x1 reduce, BN, ReLU, PyConv (stride), BN, ReLU, 1x1 expand, BN, add, ReLU.

    Args:
        in_channels: input channels.
        mid_channels: width of the PyConv (64 in the first stage of PyConvResNet-50).
        out_channels: output channels (``mid_channels * 4``; ``* 2`` for PyConvHGResNet).
        pyramid: ``dict(kernel_sizes, groups, shares)`` of the PyConv.
        stride: stride of the PyConv (int, or a (t, h, w) tuple in 3D).
        dilation: dilation of every PyConv level.
        downsample: the shortcut module, or None for identity.
        ndim: 2 or 3.
        with_cp: use gradient checkpointing (saves memory, costs a second forward).
        cp_pyconv_input: in training, do not keep the PyConv's input for backward. Where
            :func:`pyconv_mm.ops.reduced_pyconv.usable` (2D, CPU, float32, batch norm), keep
            the 1x1 reduce's output and recompute the PyConv's input from it and the norm's
            batch statistics; elsewhere recompute the reduce, the norm and the PyConv from the
            block's input (kept anyway; activation checkpointing). Where
            :func:`pyconv_mm.ops.norm_relu_conv.usable`, the expansion's input is not kept
            either, but recomputed from the PyConv's output. Meant for a block whose input is
            larger than the rest of its stage (the first block of PyConvResNet's stage 1 runs
            at the stem's 112x112).
        conv_cfg / norm_cfg: configs of the 1x1 convolutions and the norms.
    """
    expansion = 4

    def __init__(self,
                 in_channels: int,
                 mid_channels: int,
                 out_channels: int,
                 pyramid: dict,
                 stride: IntOrTuple = 1,
                 dilation: IntOrTuple = 1,
                 downsample: Optional[nn.Module] = None,
                 ndim: int = 2,
                 with_cp: bool = False,
                 cp_pyconv_input: bool = False,
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.conv_cfg, self.norm_cfg = default_conv_norm(ndim, conv_cfg, norm_cfg)
        self.with_cp = with_cp
        self.cp_pyconv_input = cp_pyconv_input
        self.conv1 = build_conv_layer(self.conv_cfg, in_channels, mid_channels, 1, bias=False)
        self.add_norm(1, mid_channels)
        self.conv2 = PYCONV_BY_NDIM[ndim](
            mid_channels, mid_channels, stride=stride, dilations=dilation, bias=False, **pyramid)
        self.add_norm(2, mid_channels)
        self.conv3 = build_conv_layer(self.conv_cfg, mid_channels, out_channels, 1, bias=False)
        self.add_norm(3, out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    @property
    def last_norm(self) -> nn.Module:
        return self.norm(3)

    def reduce_and_pyconv(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, *S) -> (N, mid_channels, *S / stride): conv1, norm1, ReLU, PyConv."""
        return self.conv2(batch_norm_act.norm_act(self.conv1(x), self.norm(1), self.relu))

    def residual_convs(self, x: torch.Tensor) -> torch.Tensor:
        # under with_cp the whole block is recomputed already
        if (self.cp_pyconv_input and not self.with_cp and self.training
                and torch.is_grad_enabled()):
            if reduced_pyconv.usable(x, self.conv1, self.norm(1), self.relu, self.conv2):
                out = reduced_pyconv.reduce_norm_pyconv(x, self.conv1, self.norm(1), self.conv2)
            else:
                out = checkpoint_once(self.reduce_and_pyconv, x,
                                      (self.conv1, self.norm(1), self.conv2))
            if norm_relu_conv.usable(out, self.norm(2), self.relu, self.conv3):
                return norm_relu_conv.norm_relu_conv(out, self.norm(2), self.conv3)
            out = batch_norm_act.norm_act(out, self.norm(2), self.relu)
        else:  # in inference, the PyConv's kernel may apply norm1, norm2 and their ReLUs
            # (in training the 1x1 convolutions' weight gradients are ours where they can be)
            out = self.conv2.forward_activated(pointwise.conv(self.conv1, x), self.norm(1),
                                               self.relu, self.norm(2))
        return pointwise.conv(self.conv3, out)

    def fused_bypassed(self) -> Tuple[nn.Module, ...]:
        return (self.conv1, self.norm(1), self.relu, self.conv3, self.norm(3))

    def fused_forward(self, x: torch.Tensor, input_owned: bool = False) -> torch.Tensor:
        identity, fresh = self.fused_shortcut(x, input_owned)
        out = fused_inference.conv_norm_act(x, self.conv1, self.norm(1), relu=True)
        out = self.conv2.forward_activated(out, None, self.relu, self.norm(2))
        return fused_inference.conv_norm_act(out, self.conv3, self.norm(3), relu=True,
                                             residual=identity, into_residual=fresh)


class PyConvBasicBlock(PyConvBlockBase):
    """PyConvResNet-18/34 block: PyConv (stride), BN, ReLU, 1x1 conv, BN, add, ReLU.

    Arguments as :class:`PyConvBottleneck`; ``mid_channels`` is the PyConv width.
    """
    expansion = 1

    def __init__(self,
                 in_channels: int,
                 mid_channels: int,
                 out_channels: int,
                 pyramid: dict,
                 stride: IntOrTuple = 1,
                 dilation: IntOrTuple = 1,
                 downsample: Optional[nn.Module] = None,
                 ndim: int = 2,
                 with_cp: bool = False,
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.conv_cfg, self.norm_cfg = default_conv_norm(ndim, conv_cfg, norm_cfg)
        self.with_cp = with_cp
        self.conv1 = PYCONV_BY_NDIM[ndim](
            in_channels, mid_channels, stride=stride, dilations=dilation, bias=False, **pyramid)
        self.add_norm(1, mid_channels)
        self.conv2 = build_conv_layer(self.conv_cfg, mid_channels, out_channels, 1, bias=False)
        self.add_norm(2, out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    @property
    def last_norm(self) -> nn.Module:
        return self.norm(2)

    def residual_convs(self, x: torch.Tensor) -> torch.Tensor:
        return pointwise.conv(self.conv2,
                              batch_norm_act.norm_act(self.conv1(x), self.norm(1), self.relu))

    def fused_bypassed(self) -> Tuple[nn.Module, ...]:
        return (self.relu, self.conv2, self.norm(2))

    def fused_forward(self, x: torch.Tensor, input_owned: bool = False) -> torch.Tensor:
        identity, fresh = self.fused_shortcut(x, input_owned)
        out = self.conv1.forward_activated(x, None, self.relu, self.norm(1))
        return fused_inference.conv_norm_act(out, self.conv2, self.norm(2), relu=True,
                                             residual=identity, into_residual=fresh)


class Shortcut(nn.Sequential):
    """``[pool,] conv, norm`` run in order as by ``nn.Sequential`` (same modules, names and
    checkpoint keys), the norm in training through :func:`batch_norm_act.norm_act` (one pass
    of our kernel where it can), a 1x1 conv through :func:`pointwise.conv` (its weight
    gradient by our kernel where it can)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, *S) -> (N, C_out, *S / stride)."""
        *before, norm = self
        for module in before:  # a 1x1 conv's weight gradient by our kernel where it can
            x = pointwise.conv(module, x) if pointwise.is_pointwise(module) else module(x)
        return batch_norm_act.norm_act(x, norm)


def make_shortcut(in_channels: int,
                  out_channels: int,
                  stride: IntOrTuple,
                  with_pool: bool,
                  ndim: int = 2,
                  conv_cfg: Optional[dict] = None,
                  norm_cfg: Optional[dict] = None) -> Optional[nn.Module]:
    """The shortcut of a stage's first block.

    With ``with_pool`` (PyConvResNet): ``MaxPool 3x3 (stride) -> 1x1 conv -> BN`` when channels
    change, the max pool alone when only the stride changes. The pool stays (with stride 1) when
    a stage is dilated instead of strided, as in the authors' segmentation code.
    Without it (ResNet): a strided ``1x1 conv -> BN`` when channels or stride change.
    The pools keep no argmax indices for backward (:mod:`pyconv_mm.ops.pool`): their input is
    the block's input, which the block saves anyway.

    Returns:
        a :class:`Shortcut` (an ``nn.Sequential``), a bare pool, or None for an identity
        shortcut. Layer indices match the authors' ``downsample.0`` (pool), ``downsample.1``
        (conv), ``downsample.2`` (BN).
    """
    conv_cfg, norm_cfg = default_conv_norm(ndim, conv_cfg, norm_cfg)
    project = in_channels != out_channels
    if with_pool:
        if ndim == 3:
            t_stride = stride if isinstance(stride, int) else stride[0]
            pool = IndexFreeMaxPool3d((3 if t_stride > 1 else 1, 3, 3), stride=stride,
                                      padding=(1 if t_stride > 1 else 0, 1, 1))
        else:
            pool = IndexFreeMaxPool2d(3, stride=stride, padding=1)
        if not project:
            return pool
        return Shortcut(pool, build_conv_layer(conv_cfg, in_channels, out_channels, 1, bias=False),
                        build_norm_layer(norm_cfg, out_channels)[1])
    if not project and _is_unit(stride):
        return None
    return Shortcut(
        build_conv_layer(conv_cfg, in_channels, out_channels, 1, stride=stride, bias=False),
        build_norm_layer(norm_cfg, out_channels)[1])


class PyConvStage(nn.Sequential):
    """The blocks of a stage, run in order as by ``nn.Sequential`` (same modules, names and
    checkpoint keys). Each block after the first is told that it owns its input, the output
    of the block before, which nothing else holds (``input_owned`` of
    :meth:`PyConvBlockBase.forward`), unless hooks on either block could keep that output or
    see the input (with global hooks no block fuses, so none writes its input).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, *S) -> (N, C_out, *S / stride)."""
        # the stage's input may be kept by the caller (an earlier stage's output in
        # out_indices, say): the first block does not own it
        owned = False
        for block in self:
            if isinstance(block, PyConvBlockBase):
                x = block(x, input_owned=owned and not fused_inference.hooked(block))
            else:
                x = block(x)
            owned = not block._forward_hooks
        return x


def make_stage(block: type,
               num_blocks: int,
               in_channels: int,
               mid_channels: int,
               out_channels: int,
               pyramid: dict,
               stride: IntOrTuple,
               dilation: IntOrTuple,
               shortcut_pool: bool,
               ndim: int = 2,
               first_block_cp_pyconv_input: bool = False,
               **kwargs) -> PyConvStage:
    """A stage of ``num_blocks`` blocks; the first one strides and carries the shortcut.

    ``kwargs`` (``with_cp``, ``conv_cfg``, ``norm_cfg``) go to every block;
    ``first_block_cp_pyconv_input`` is the first block's ``cp_pyconv_input`` (bottlenecks only:
    a basic block starts with its PyConv, so it has no activation of its input's size to drop).
    """
    shortcut_kwargs = {k: kwargs[k] for k in ('conv_cfg', 'norm_cfg') if k in kwargs}
    downsample = make_shortcut(in_channels, out_channels, stride, shortcut_pool, ndim,
                               **shortcut_kwargs)
    blocks = [
        block(in_channels if i == 0 else out_channels, mid_channels, out_channels, pyramid,
              stride=stride if i == 0 else 1, dilation=dilation,
              downsample=downsample if i == 0 else None, ndim=ndim,
              **(dict(cp_pyconv_input=True) if i == 0 and first_block_cp_pyconv_input
                 and block is PyConvBottleneck else {}),
              **kwargs)
        for i in range(num_blocks)
    ]
    return PyConvStage(*blocks)
