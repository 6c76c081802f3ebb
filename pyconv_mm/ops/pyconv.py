"""Pyramidal convolution (PyConv) layers for 2D images and 3D video.

Design follows the authors' reference code (https://github.com/iduta/pyconv, MIT licence):
every level is its own grouped convolution over the same input, the outputs are concatenated
along channels in increasing kernel order.

Example:
    >>> conv = PyConv2d(64, 64, kernel_sizes=[3, 5, 7, 9], groups=[1, 4, 8, 16], stride=2)
    >>> conv(torch.randn(2, 64, 56, 56)).shape
    torch.Size([2, 64, 28, 28])
"""
import copy
from typing import List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from . import algorithms, batch_norm_act, direct, fused_inference, temporal_taps
from .pyramid import IntOrTuple, PyramidLevel, build_pyramid


class _PyConvNd(nn.Module):
    """Shared body of :class:`PyConv2d` and :class:`PyConv3d`; subclasses set ``conv_cls``."""
    conv_cls = nn.Conv2d
    conv_fn = staticmethod(F.conv2d)
    ndim = 2
    #: how our direct kernel computes the levels (3D: one temporal tap at a time)
    kernel_ops = direct.PLANAR

    def __init__(self,
                 in_channels: int,
                 out_channels: Union[int, Sequence[int]],
                 kernel_sizes: Sequence[IntOrTuple] = (3, ),
                 groups: Union[int, Sequence[int]] = 1,
                 dilations: Union[IntOrTuple, Sequence[IntOrTuple]] = 1,
                 stride: IntOrTuple = 1,
                 bias: bool = False,
                 shares: Optional[Sequence[float]] = None) -> None:
        super().__init__()
        self.pyramid: List[PyramidLevel] = build_pyramid(
            in_channels, out_channels, kernel_sizes, groups, dilations, shares, ndim=self.ndim)
        self.in_channels = in_channels
        self.out_channels = sum(level.out_channels for level in self.pyramid)
        strides = (stride, ) * self.ndim if isinstance(stride, int) else tuple(stride)
        if len(strides) != self.ndim or any(not isinstance(s, int) or s <= 0 for s in strides):
            raise ValueError(f'PyConv: stride={stride} must be a positive int or a tuple of '
                             f'{self.ndim} positive ints')
        self.stride = strides
        # attributes that mmcv's ConvModule reads from its conv
        largest = max(self.pyramid, key=lambda lvl: lvl.kernel_size)
        self.kernel_size = largest.kernel_size
        self.padding = largest.padding
        self.dilation = largest.dilation
        self.groups = tuple(lvl.groups for lvl in self.pyramid)
        self.transposed = False
        self.output_padding = (0, ) * self.ndim
        self.levels = nn.ModuleList(
            self.conv_cls(in_channels, level.out_channels, level.kernel_size, stride=stride,
                          padding=level.padding, dilation=level.dilation, groups=level.groups,
                          bias=bias) for level in self.pyramid)

    def init_weights(self) -> None:
        """Kaiming-normal (fan_out, ReLU) levels and zero biases, as mmcv does for its convs."""
        for level in self.levels:
            nn.init.kaiming_normal_(level.weight, mode='fan_out', nonlinearity='relu')
            if level.bias is not None:
                nn.init.zeros_(level.bias)

    def _run_level(self, level: nn.Module, x: torch.Tensor, algorithm: str,
                   weight: Optional[torch.Tensor] = None) -> torch.Tensor:
        weight = level.weight if weight is None else weight
        if algorithm == 'depthwise':
            return algorithms.depthwise_grouped_conv(self.conv_fn, x, weight, level.bias,
                                                     level.stride, level.padding,
                                                     level.dilation, level.groups)
        if algorithm == 'dense':
            weight = algorithms.expand_grouped_weight(weight, level.groups)
        groups = 1 if algorithm == 'dense' else level.groups
        return self.conv_fn(x, weight, level.bias, level.stride, level.padding, level.dilation,
                            groups)

    def _algorithm(self, level: nn.Module, x: torch.Tensor) -> str:
        names = algorithms.candidates_for(level.groups, level.out_channels)
        if len(names) == 1:
            return names[0]
        key = (type(self).__name__, *algorithms.input_key(x), level.in_channels,
               level.out_channels, level.kernel_size, level.groups, level.stride, level.dilation)
        return algorithms.choose(key, x, level.weight, {
            name: (lambda data, w, name=name: self._run_level(level, data, name, w))
            for name in names
        })

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, *spatial) -> (N, C_out, *spatial / stride), levels concatenated in order.

        Each grouped level runs in the form that is fastest here (stock grouped, dense,
        depthwise, or our direct CPU kernel; see :mod:`pyconv_mm.ops.algorithms`).
        """
        return self._run_forms(x, self._forms(x))

    def forward_activated(self, x: torch.Tensor, norm: Optional[nn.Module], relu: nn.Module,
                          out_norm: Optional[nn.Module] = None) -> torch.Tensor:
        """``self(relu(norm(x)))``, the PyConv of a residual block after its 1x1 reduction;
        with ``out_norm``, ``relu(out_norm(self(relu(norm(x)))))``; ``norm=None``: ``x`` is
        taken as it is (its norm and ReLU were fused into the 1x1 convolution before).

        In inference (no gradient recorded), with the norms batch norms in eval mode (or the
        ``nn.Identity`` that :func:`~pyconv_mm.ops.fuse_conv_bn` leaves), ``auto`` also times
        (the policy ``direct`` always takes the first):

        * with every level in reach of our direct kernel, the kernel with each norm (a
          per-channel scale and shift) and ReLU applied as it copies ``x`` into its bands and
          stores its output: the activated tensors are never written out nor read back;
        * without ``norm`` and with ``out_norm``, each level as one oneDNN convolution with
          ``out_norm`` folded into its weight and the ReLU as a post-op
          (:mod:`~pyconv_mm.ops.fused_inference`).

        Elsewhere, and where any of the modules has hooks (they would not run), the modules
        run as written.

        Shapes: (N, C_in, *S) -> (N, C_out, *S / stride).
        """
        if self._activations_fusable(x, (norm, out_norm), relu):
            candidates = {  # 'native': the modules as written (the PyConv picks its forms)
                'native': lambda data, _: self._forward_activated_by_modules(
                    data, norm, relu, out_norm)}
            if self.ndim == 2 and all(direct.usable(x, level) for level in self.levels):
                candidates['direct'] = (
                    lambda data, _: self._forward_activated_in_kernel(data, norm, out_norm))
            if norm is None and out_norm is not None and fused_inference.usable(x, ()):
                candidates['fused'] = lambda data, _: self._forward_normed_by_onednn(
                    data, out_norm)
            if len(candidates) > 1:
                key = self._whole_key('activated', x) + (
                    tuple(type(n).__name__ for n in (norm, out_norm)), )
                choice = algorithms.choose(key, x, self.levels[0].weight, candidates)
                return candidates[choice](x, None)
        return self._forward_activated_by_modules(x, norm, relu, out_norm)

    def _forward_activated_by_modules(self, x: torch.Tensor, norm: Optional[nn.Module],
                                      relu: nn.Module,
                                      out_norm: Optional[nn.Module]) -> torch.Tensor:
        # in training, each norm and its ReLU in one op where it can (batch_norm_act)
        out = self(x if norm is None else batch_norm_act.norm_act(x, norm, relu))
        return out if out_norm is None else batch_norm_act.norm_act(out, out_norm, relu)

    def _activations_fusable(self, x: torch.Tensor, norms: Sequence[Optional[nn.Module]],
                             relu: nn.Module) -> bool:
        """Whether :meth:`forward_activated` may apply ``norms`` and ``relu`` inside the
        convolutions (one of them may be None)."""
        if torch.is_grad_enabled() or type(relu) is not nn.ReLU:
            return False
        norms = [norm for norm in norms if norm is not None]
        for norm in norms:
            eval_norm = (isinstance(norm, _BatchNorm) and not norm.training
                         and norm.running_mean is not None)
            if not (eval_norm or type(norm) is nn.Identity):
                return False
        return not any(module._forward_hooks or module._forward_pre_hooks
                       for module in (self, relu, *norms))

    def levels_in_kernel(self, x: torch.Tensor, activation: Optional[direct.Affine] = None,
                         output_activation: Optional[direct.Affine] = None) -> torch.Tensor:
        """Every level in our kernel (no autograd), on ``relu(x * scale + shift)`` for
        ``activation = (scale, shift)`` (float32, one value per input channel) formed as the
        kernel reads ``x``, and with ``output_activation`` applied so as it stores its output
        (see :func:`direct.conv_levels`).

        Shapes: (N, C_in, H, W) -> (N, C_out, H / stride, W / stride).
        """
        return direct.levels_output(x, list(self.levels), self._level_starts(),
                                    self.out_channels, activation=activation,
                                    output_activation=output_activation)

    def _forward_activated_in_kernel(self, x: torch.Tensor, norm: Optional[nn.Module],
                                     out_norm: Optional[nn.Module]) -> torch.Tensor:
        """Every level in the kernel, on ``relu(norm(x))`` formed as the kernel reads ``x``
        (and ``relu(out_norm(.))`` as it stores its output)."""
        def float32_affine(module: Optional[nn.Module], channels: int) -> direct.Affine:
            if module is None:
                return None
            return tuple(t.float() for t in direct.batch_norm_affine(module, channels))

        return self.levels_in_kernel(x, float32_affine(norm, x.shape[1]),
                                     float32_affine(out_norm, self.out_channels))

    def _forward_normed_by_onednn(self, x: torch.Tensor, out_norm: nn.Module) -> torch.Tensor:
        """``relu(out_norm(self(x)))`` with each level one oneDNN convolution, its slice of
        ``out_norm`` folded in, the ReLU a post-op; grouped levels in the stock form
        (grouped or dense) that ``auto`` chose for them alone."""
        outs = []
        for level, start in zip(self.levels, self._level_starts()):
            dense = level.groups > 1 and self._algorithm(level, x) == 'dense'
            weight, bias, groups = fused_inference.folded_weight(level, out_norm, x, start,
                                                                 dense)
            outs.append(fused_inference.convolve(x, weight, bias, level.stride, level.padding,
                                                 level.dilation, groups, relu=True))
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)

    def _whole_key(self, choice: str, x: torch.Tensor) -> tuple:
        """The cache key of a choice ``auto`` makes for the whole PyConv on ``x``: its levels'
        shapes and the input (:func:`algorithms.input_key`)."""
        return (type(self).__name__, choice, *algorithms.input_key(x),
                tuple((lvl.in_channels, lvl.out_channels, lvl.kernel_size, lvl.groups,
                       lvl.stride, lvl.dilation) for lvl in self.levels))

    def _level_starts(self) -> List[int]:
        """The first output channel of each level."""
        starts = [0]
        for level in self.levels[:-1]:
            starts.append(starts[-1] + level.out_channels)
        return starts

    def _forms(self, x: torch.Tensor) -> List[str]:
        """The form of each level: the fastest stock form of each level alone; then, where our
        direct kernel can take the grouped levels, the whole PyConv is timed once each way:
        stock, the kernel for the grouped levels, and the kernel for every level, the dense
        one too (the kernel reads the input once for all its levels, so it is chosen as a
        whole; oneDNN usually wins the dense level, but not always, e.g. its backward for
        stage 1's strided 3x3 with 16 outputs)."""
        stock = [self._algorithm(level, x) for level in self.levels]
        usable = {i for i, level in enumerate(self.levels) if self.kernel_ops.usable(x, level)}
        grouped = {i for i in usable if self.levels[i].groups > 1}
        if not grouped:
            return stock

        def in_kernel(levels: set) -> List[str]:
            return ['direct' if i in levels else form for i, form in enumerate(stock)]
        key = self._whole_key('direct', x)
        probe = []  # timing runs a copy: no gradient reaches this PyConv's parameters

        def timed(forms: List[str]):
            def run(data: torch.Tensor, _) -> torch.Tensor:
                if not probe:
                    probe.append(copy.deepcopy(self))
                return probe[0]._run_forms(data, forms)
            return run

        candidates = dict(stock=stock, direct=in_kernel(grouped))
        if usable != grouped:
            candidates['direct_all'] = in_kernel(usable)
        choice = algorithms.choose(key, x, self.levels[0].weight,
                                   {name: timed(forms) for name, forms in candidates.items()})
        return candidates.get(choice, stock)

    def _run_forms(self, x: torch.Tensor, forms: List[str]) -> torch.Tensor:
        if 'direct' in forms:
            return self._forward_into_one_output(x, forms)
        outs = [self._run_level(level, x, form) for level, form in zip(self.levels, forms)]
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)

    def _forward_into_one_output(self, x: torch.Tensor, forms: List[str]) -> torch.Tensor:
        """Levels written into one output: those of the direct kernel in one call, which reads
        the input once for all of them; the others copied in (with autograd: through
        :class:`~pyconv_mm.ops.direct.LevelsFunction`, which has the kernel's gradients)."""
        starts = self._level_starts()
        kernel = [(lvl, start) for lvl, start, form in zip(self.levels, starts, forms)
                  if form == 'direct']
        others = [(start, self._run_level(lvl, x, form))
                  for lvl, start, form in zip(self.levels, starts, forms) if form != 'direct']
        if torch.is_grad_enabled():  # training: the kernel's own gradients
            return direct.LevelsFunction.apply(
                self.kernel_ops, [lvl for lvl, _ in kernel], [start for _, start in kernel],
                [start for start, _ in others], x, *[lvl.weight for lvl, _ in kernel],
                *[lvl.bias if lvl.bias is not None else x.new_empty(0) for lvl, _ in kernel],
                *[out for _, out in others])
        out = self.kernel_ops.levels_output(x, [lvl for lvl, _ in kernel],
                                            [start for _, start in kernel], self.out_channels)
        for start, level_out in others:
            out.narrow(1, start, level_out.shape[1]).copy_(level_out)
        return out

    def extra_repr(self) -> str:
        levels = ', '.join(f'{"x".join(map(str, lvl.kernel_size))}/G{lvl.groups}->{lvl.out_channels}'
                           + (f'@d{lvl.dilation[0]}' if max(lvl.dilation) > 1 else '')
                           for lvl in self.pyramid)
        stride = self.stride[0] if len(set(self.stride)) == 1 else self.stride
        return f'{self.in_channels}, [{levels}], stride={stride}'


class PyConv2d(_PyConvNd):
    """Pyramidal convolution over images.

    Args:
        in_channels: input channels, shared by every level.
        out_channels: total output channels (split by ``shares``, equal by default) or the
            output channels of each level.
        kernel_sizes: one odd kernel size per level, e.g. ``[3, 5, 7, 9]``.
        groups: groups per level, e.g. ``[1, 4, 8, 16]``; each must divide ``in_channels`` and
            the level's output channels.
        dilations: dilation per level (or one for all); padding is ``(k // 2) * dilation``.
        stride: stride of every level.
        bias: add a bias to every level.
        shares: fraction of ``out_channels`` per level, e.g. ``[1/4, 1/4, 1/2]``.

    Shapes:
        input (N, in_channels, H, W) -> output (N, out_channels, ceil(H / stride), ceil(W / stride)).
    """
    conv_cls = nn.Conv2d
    ndim = 2


class PyConv3d(_PyConvNd):
    """Pyramidal convolution over video clips; kernel sizes are time first, e.g. ``(3, 5, 5)``.

    Arguments as :class:`PyConv2d`. Shapes: (N, C_in, T, H, W) -> (N, C_out, T', H', W').
    """
    conv_cls = nn.Conv3d
    conv_fn = staticmethod(F.conv3d)
    ndim = 3
    kernel_ops = temporal_taps.TEMPORAL
