"""3D PyConv levels by our 2D CPU kernel, one temporal tap at a time.

A ``Conv3d`` level with kernel (KT, K, K), temporal stride ``st``, dilation ``dt`` and padding
``pt = (KT - 1) / 2 * dt`` is a sum of 2D convolutions over frames: output frame ``t`` is

    sum_j conv2d(x[:, :, t * st + j * dt - pt], weight[:, :, j])

over the taps ``j`` whose input frame lies in the clip. A clip (C, T, H, W) in channels_last_3d
seen as T frames is a channels_last (T, C, H, W) batch, so each temporal offset
``d = j * dt - pt`` is one call of :mod:`~pyconv_mm.ops.direct`'s kernel on a run of frames:
it computes every level with a tap at that offset (their ``j``-th K x K kernels) straight into
the PyConv's output frames, the offset-0 call writing them and the others adding to them.
Gradients come the same way: the input's by the kernel's input gradient adding into the
frames of each offset, each tap's weight gradient by :func:`direct.weight_grads` on the frames
it read.

The stock CPU kernels run PyConvResNet3D's grouped levels far below a dense convolution's rate
(``auto``'s best stock form of stage 1's 7x9x9/G16 level ~90 GMAC/s, 2 cores); the 2D
kernel runs their taps at 140-230. Clips go one at a time (a batch of clips is not one run of
frames).

Example:
    >>> conv = PyConv3d(64, 64, [(3, 3, 3), (3, 5, 5), (5, 7, 7), (7, 9, 9)], [1, 4, 8, 16])
    >>> x = torch.randn(1, 64, 16, 56, 56).contiguous(memory_format=torch.channels_last_3d)
    >>> out = levels_output(x, list(conv.levels), [0, 16, 32, 48], 64)
"""
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import nn

from . import direct
from .algorithms import _compiling


class TapLevel(NamedTuple):
    """One temporal tap of a ``Conv3d`` level, read as :mod:`~pyconv_mm.ops.direct`'s
    functions read an ``nn.Conv2d``: its spatial geometry and the tap's (C_out, C_in / G, K, K)
    kernel."""
    weight: torch.Tensor
    bias: Optional[torch.Tensor]
    kernel_size: Tuple[int, int]
    stride: Tuple[int, int]
    padding: Tuple[int, int]
    dilation: Tuple[int, int]
    groups: int
    out_channels: int
    padding_mode: str = 'zeros'


def tap(level: nn.Conv3d, j: int, weight: Optional[torch.Tensor] = None) -> TapLevel:
    """Tap ``j`` of ``level`` (of ``weight``, (C_out, C_in / G, KT, K, K), when given)."""
    weight = level.weight if weight is None else weight
    return TapLevel(weight[:, :, j], level.bias, tuple(level.kernel_size[1:]),
                    tuple(level.stride[1:]), tuple(level.padding[1:]), tuple(level.dilation[1:]),
                    level.groups, level.out_channels, level.padding_mode)


def frames(clip: torch.Tensor) -> torch.Tensor:
    """A clip (C, T, H, W) as its frames (T, C, H, W): a view (channels_last when the clip is
    channels_last_3d)."""
    return clip.transpose(0, 1)


def usable(x: torch.Tensor, level: nn.Conv3d) -> bool:
    """Whether the kernel can compute ``level`` on the clips ``x`` (N, C, T, H, W) now: a
    temporal padding of ``(KT - 1) / 2 * dilation`` (odd KT) and taps the 2D kernel takes on
    the frames (:func:`direct.usable`: e.g. with autograd, stride 1, or 2 on even H and W)."""
    if (x.dim() != 5 or not isinstance(level, nn.Conv3d) or not isinstance(level.padding, tuple)
            or _compiling()):  # a loop of kernel calls: no custom op to trace
        return False
    kt, dilation = level.kernel_size[0], level.dilation[0]
    if kt % 2 == 0 or level.padding[0] != (kt - 1) // 2 * dilation:
        return False
    return direct.usable(frames(x[0]), tap(level, kt // 2))


def _taps_by_offset(levels: Sequence[nn.Conv3d]) -> Dict[int, List[Tuple[int, int]]]:
    """Temporal offset ``d`` -> the (level, tap) pairs that read input frame ``t * st + d``
    for output frame ``t``; offset 0 first (every level has its centre tap there)."""
    by_offset: Dict[int, List[Tuple[int, int]]] = {}
    for i, level in enumerate(levels):
        kt, dilation, pad = level.kernel_size[0], level.dilation[0], level.padding[0]
        for j in range(kt):
            by_offset.setdefault(j * dilation - pad, []).append((i, j))
    return dict(sorted(by_offset.items(), key=lambda item: (abs(item[0]), item[0])))


def _tap_levels(taps: Sequence[Tuple[int, int]], levels: Sequence[nn.Conv3d],
                weights: Sequence[torch.Tensor]) -> List[TapLevel]:
    """The (level, tap) pairs of a run as :class:`TapLevel` s, of ``weights``."""
    return [tap(levels[i], j, weights[i]) for i, j in taps]


class _Run(NamedTuple):
    """One kernel call of a clip: the taps at one offset over output frames [first, end),
    which read input frames ``first * stride + offset`` on, every ``stride``-th."""
    taps: List[Tuple[int, int]]
    first: int
    end: int
    offset: int
    stride: int

    def inputs(self, clip_frames: torch.Tensor) -> torch.Tensor:
        start = self.first * self.stride + self.offset
        return clip_frames[start:(self.end - 1) * self.stride + self.offset + 1:self.stride]


def _runs(levels: Sequence[nn.Conv3d], frames_in: int) -> List[_Run]:
    """The kernel calls of one clip of ``frames_in`` frames, offset 0 first (it covers every
    output frame); offsets whose frames all fall outside the clip are left out."""
    stride = levels[0].stride[0]
    frames_out = (frames_in - 1) // stride + 1
    runs = []
    for offset, taps in _taps_by_offset(levels).items():
        first = max(0, (-offset + stride - 1) // stride)
        end = min(frames_out, (frames_in - 1 - offset) // stride + 1)
        if first < end:
            runs.append(_Run(taps, first, end, offset, stride))
    return runs


def conv_levels(x: torch.Tensor, levels: Sequence[nn.Conv3d], c_offsets: Sequence[int],
                out: torch.Tensor, weights: Optional[Sequence[torch.Tensor]] = None,
                biases: Optional[Sequence[Optional[torch.Tensor]]] = None) -> torch.Tensor:
    """Each level's convolution of ``x`` (no autograd) into ``out[:, offset:offset + C_out]``
    (levels' own weights and biases unless given).

    Shapes: x (N, C_in, T, H, W), out (N, C, T', H', W').
    """
    weights = [lvl.weight for lvl in levels] if weights is None else weights
    biases = [lvl.bias for lvl in levels] if biases is None else biases
    spatial_stride, runs = levels[0].stride[1], _runs(levels, x.shape[2])
    for n in range(x.shape[0]):
        clip_in, clip_out = frames(x[n]), frames(out[n])
        for run in runs:
            taps = _tap_levels(run.taps, levels, weights)
            direct._run(run.inputs(clip_in), [t.weight for t in taps],
                        [biases[i] if run.offset == 0 else None for i, _ in run.taps],
                        [t.dilation[0] for t in taps], [c_offsets[i] for i, _ in run.taps],
                        spatial_stride, clip_out[run.first:run.end], accumulate=run.offset != 0)
    return out


def output_size(x: torch.Tensor, level: nn.Conv3d) -> Tuple[int, int, int]:
    """(T', H', W') of ``level`` on ``x``."""
    return (x.shape[2] - 1) // level.stride[0] + 1, *direct.output_size(frames(x[0]),
                                                                        tap(level, 0))


def levels_output(x: torch.Tensor, levels: Sequence[nn.Conv3d], c_offsets: Sequence[int],
                  channels: int) -> torch.Tensor:
    """A new output of ``channels`` channels in ``x``'s memory format with each level written
    at its offset (:func:`conv_levels`; channels no level writes are left uninitialised).

    Shapes: (N, C_in, T, H, W) -> (N, channels, T', H', W').
    """
    out = direct.empty_output(x, channels, output_size(x, levels[0]))
    return conv_levels(x, levels, c_offsets, out)


def input_grad(grad: torch.Tensor, levels: Sequence[nn.Conv3d],
               weights: Sequence[torch.Tensor], c_offsets: Sequence[int],
               x: torch.Tensor) -> torch.Tensor:
    """The gradient of the input ``x`` (N, C_in, T, H, W) from the levels' channels of the
    output gradient ``grad`` (N, C_out, T', H', W'): per clip and offset, the kernel's input
    gradient of those taps added into the frames they read. A new tensor like ``x``."""
    runs = _runs(levels, x.shape[2])
    # at temporal stride 1 the offset-0 run writes every input frame; else some are not read
    grad_x = torch.empty_like(x) if levels[0].stride[0] == 1 else torch.zeros_like(x)
    for n in range(x.shape[0]):
        clip_grad, clip_grad_x = frames(grad[n]), frames(grad_x[n])
        for run in runs:
            taps = _tap_levels(run.taps, levels, weights)
            direct.input_grad(clip_grad[run.first:run.end], taps, [t.weight for t in taps],
                              [c_offsets[i] for i, _ in run.taps], None,
                              out=run.inputs(clip_grad_x),
                              accumulate=run.offset != 0 or levels[0].stride[0] != 1)
    return grad_x


def weight_grads(x: torch.Tensor, grad: torch.Tensor, levels: Sequence[nn.Conv3d],
                 weights: Sequence[torch.Tensor], c_offsets: Sequence[int],
                 needed: Sequence[bool]) -> List[Optional[torch.Tensor]]:
    """The gradient of each level's weight (None where not ``needed``): tap ``j``'s from the
    frames it read and its output frames' gradient, by :func:`direct.weight_grads`, summed
    over the clips.

    Shapes: x (N, C_in, T, H, W), grad (N, C_out, T', H', W') -> (C_out, C_in / G, KT, K, K).
    """
    grads = [torch.zeros_like(w) if need else None for w, need in zip(weights, needed)]
    runs = [run._replace(taps=[(i, j) for i, j in run.taps if needed[i]])
            for run in _runs(levels, x.shape[2])]
    for n in range(x.shape[0]):
        clip_in, clip_grad = frames(x[n]), frames(grad[n])
        for run in runs:
            if not run.taps:
                continue
            taps = _tap_levels(run.taps, levels, weights)
            computed = direct.weight_grads(
                run.inputs(clip_in), clip_grad[run.first:run.end], taps,
                [t.weight for t in taps], [c_offsets[i] for i, _ in run.taps],
                [True] * len(taps))
            for (i, j), tap_grad in zip(run.taps, computed):
                grads[i][:, :, j].add_(tap_grad)
    return grads


#: 3D levels (``nn.Conv3d``) for :class:`~pyconv_mm.ops.direct.LevelsFunction`.
TEMPORAL = direct.KernelOps(usable, levels_output, conv_levels, output_size, input_grad,
                            weight_grads)
