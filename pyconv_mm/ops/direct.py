"""Our direct CPU kernel for grouped PyConv levels (``csrc/direct_conv.cpp``).

The stock CPU kernels run convolutions whose groups have few channels (PyConv's 5x5/G4, 7x7/G8,
9x9/G16 levels) far below the rate of a dense convolution. The kernel vectorises over 16 output
columns, so the group size does not matter, works through the image in bands of rows that stay
in cache, and writes each level straight into its channels of the PyConv's output (no
concatenation). It is built with the package (``tools/setup.sh``) and runs on CPUs with
AVX-512 (F and VL), in fp32; with autograd (its own input and weight gradients, see
:class:`LevelsFunction`) for stride-1 levels and for stride-2 levels of dilation 1 on inputs of
even height and width; elsewhere :func:`usable` is False and the stock forms run. The weight
gradient of a level with whole 16-channel blocks of a channels_last input per group (at stride
1 also groups of 2, 4 or 8 channels) comes from a second kernel, vectorised over input channels
(``csrc/channels_last_weight_grad.cpp``, see :func:`weight_grads`). The same extension has the
max pool that keeps a byte per output for its backward pass (:func:`max_pool2d_with_positions`,
used by :mod:`pyconv_mm.ops.pool`). 3D levels run through the same functions one temporal tap
at a time (:mod:`pyconv_mm.ops.temporal_taps`).
``PYCONV_DIRECT_KERNEL=0`` in the environment or :func:`set_enabled` turns them all off.

Example:
    >>> out = empty_output(x, 64, (56, 56))
    >>> conv_levels(x, [conv.levels[1], conv.levels[3]], [16, 48], out)  # two grouped levels
"""
import functools
import os
from typing import Callable, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .algorithms import _compiling, channels_last_kind

try:
    from . import _direct_conv as _ext
except ImportError:  # not built (e.g. installed without a compiler): the stock forms run
    _ext = None

#: True when the compiled kernel is importable and this CPU has AVX-512 (F and VL).
AVAILABLE = _ext is not None and _ext.supported()
_STATE = {'enabled': os.environ.get('PYCONV_DIRECT_KERNEL', '1') != '0'}


def set_enabled(enabled: bool) -> None:
    """Let ``auto`` use the kernel (default) or keep PyConvs on the stock forms."""
    _STATE['enabled'] = bool(enabled)


def enabled() -> bool:
    """Whether PyConvs may use the kernel here and now."""
    return AVAILABLE and _STATE['enabled']


def usable(x: torch.Tensor, level: nn.Conv2d) -> bool:
    """Whether the kernel can compute ``level`` (an ``nn.Conv2d``, grouped or not) on ``x``
    now. With autograd (training), the levels whose gradients it has: kernel 3, 5, 7 or 9, and
    stride 1, or stride 2 with dilation 1 on an input of even height and width (see
    :func:`stride2_kernel_size`)."""
    if not enabled() or x.dim() != 4 or x.device.type != 'cpu' or x.dtype != torch.float32:
        return False
    if _compiling() and (torch.is_grad_enabled() or not TRACEABLE):
        return False  # compiled, the kernel runs as a custom op, in inference only
    if _cpu_autocast():
        return False  # the user asked for bf16/fp16 convolutions
    if level.weight.dtype != torch.float32 or level.padding_mode != 'zeros':
        return False
    kh, kw = level.kernel_size
    sh, sw = level.stride
    if not (kh == kw and kh % 2 == 1 and sh == sw and sh in (1, 2)
            and len(set(level.dilation)) == 1
            and level.padding == ((kh - 1) // 2 * level.dilation[0], ) * 2):
        return False
    if not torch.is_grad_enabled():
        return True
    if sh == 1:
        return _ext.weight_grad_supported(kh)
    return (level.dilation[0] == 1 and x.shape[2] % 2 == 0 and x.shape[3] % 2 == 0
            and _ext.weight_grad_supported(kh))


def pool_usable(x: torch.Tensor) -> bool:
    """Whether our max pool (:func:`max_pool2d_with_positions`) takes ``x``: on, a CPU float32
    channels_last input of whole 16-channel blocks."""
    return (enabled() and x.dim() == 4 and x.device.type == 'cpu' and x.dtype == torch.float32
            and x.shape[1] % 16 == 0 and x.is_contiguous(memory_format=torch.channels_last))


def max_pool2d_with_positions(x: torch.Tensor, kernel_size: Sequence[int], stride: Sequence[int],
                              padding: Sequence[int]) -> Tuple[torch.Tensor, torch.Tensor]:
    """``max_pool2d(x, kernel_size, stride, padding)`` (dilation 1, floor mode; x as
    :func:`pool_usable` takes) and where each maximum lies in its window: (N, C, H', W')
    channels_last, and uint8 positions ``ky * kw + kx`` (N, H', W', C), one byte per output
    element where a stock pool keeps an int64 index."""
    return tuple(_ext.max_pool2d_with_positions(x, list(kernel_size), list(stride),
                                                list(padding)))


def max_pool2d(x: torch.Tensor, kernel_size: Sequence[int], stride: Sequence[int],
               padding: Sequence[int]) -> torch.Tensor:
    """The output of :func:`max_pool2d_with_positions` alone (inference: no positions kept)."""
    return _ext.max_pool2d(x, list(kernel_size), list(stride), list(padding))


def max_pool2d_grad(positions: torch.Tensor, grad: torch.Tensor, input_size: Sequence[int],
                    kernel_size: Sequence[int], stride: Sequence[int],
                    padding: Sequence[int]) -> torch.Tensor:
    """Input gradient (N, C, *input_size) of :func:`max_pool2d_with_positions` for the output
    gradient ``grad``, from the positions; equal to the stock backward bit for bit."""
    return _ext.max_pool2d_grad(positions, grad.contiguous(memory_format=torch.channels_last),
                                *input_size, list(kernel_size), list(stride), list(padding))


#: The four phases (row, column) of a stride-2 level's input: ``x[..., a::2, b::2]``.
PHASES = ((0, 0), (0, 1), (1, 0), (1, 1))


def stride2_kernel_size(kernel: int) -> int:
    """Size K' of the centred stride-1 kernels that hold a stride-2 level's input gradient.

    The input gradient of a stride-2 convolution (kernel K, padding P = (K - 1) / 2) at the
    input phase ``x[..., a::2, b::2]`` is a stride-1 convolution of the output gradient with
    the taps ``k`` of that phase's parity, ``k - P = a (mod 2)``, transposed and flipped.
    Centred, they fit a K' x K' kernel: 3 for K = 3 and 5, 5 for K = 7 and 9; the kernel runs
    only the rows and columns of it that hold taps (:func:`_phase_kernel`).
    """
    return 2 * ((kernel + 1) // 4) + 1


def _phase_taps(kernel: int, phase: int) -> List[int]:
    """Tap of a stride-2 level's kernel (along one axis) at each position ``t`` of its phase's
    K'-wide stride-1 kernel, or K (none: a zero): phase ``phase`` of the input gradient is
    ``grad_x[2m + phase] = sum_t grad[m + t - P'] * w[tap[t]]`` with ``P' = (K' - 1) / 2``."""
    pad, half = (kernel - 1) // 2, (stride2_kernel_size(kernel) - 1) // 2
    taps = [phase + pad - 2 * (t - half) for t in range(2 * half + 1)]
    return [k if 0 <= k < kernel else kernel for k in taps]


@functools.lru_cache(maxsize=None)
def _phase_tap_indices(kernel: int, a: int, b: int, device: torch.device
                       ) -> Tuple[torch.Tensor, torch.Tensor, Tuple[int, int]]:
    """The kernel rows and columns that hold input phase (a, b)'s taps (index tensors on
    ``device``) and that phase's (top, left) padding; built once per kernel size (a strided
    PyConv's backward asks for 16 of them per step: creating the tensors each time was half
    of its 0.36 ms of Python)."""
    half = (stride2_kernel_size(kernel) - 1) // 2
    held = [[(t, k) for t, k in enumerate(_phase_taps(kernel, phase)) if k < kernel]
            for phase in (a, b)]  # (position in the K' kernel, tap): contiguous positions
    rows, cols = (torch.tensor([k for _, k in taps], device=device) for taps in held)
    return rows, cols, (half - held[0][0][0], half - held[1][0][0])


def _phase_kernel(weight: torch.Tensor, a: int, b: int) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """(C, C', K, K) -> the taps of input phase (a, b): (C, C', KH, KW), the rows and columns
    of the centred K' x K' kernel that hold taps (KH, KW <= K'), and its (top, left) padding,
    the zeros the stride-1 convolution then needs above and left of the output gradient."""
    rows, cols, padding = _phase_tap_indices(weight.shape[-1], a, b, weight.device)
    return weight.index_select(2, rows).index_select(3, cols), padding


def _transposed(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """(C_out, C_in / G, K, K) -> (C_in, C_out / G, K, K): each group's input and output
    channels swapped (the weight of the input gradient's convolution, before the flip)."""
    k = weight.shape[-1]
    return (weight.reshape(groups, -1, *weight.shape[1:]).transpose(1, 2)
            .reshape(-1, weight.shape[0] // groups, k, k))


def _cpu_autocast() -> bool:
    try:
        return torch.is_autocast_enabled('cpu')
    except TypeError:  # torch < 2.4
        return torch.is_autocast_cpu_enabled()


def output_size(x: torch.Tensor, level: nn.Conv2d) -> Tuple[int, int]:
    """(H_out, W_out) of ``level`` on ``x``."""
    return tuple((size + 2 * pad - dil * (k - 1) - 1) // stride + 1
                 for size, pad, dil, k, stride in zip(x.shape[2:], level.padding, level.dilation,
                                                      level.kernel_size, level.stride))


def empty_output(x: torch.Tensor, channels: int, size: Tuple[int, int]) -> torch.Tensor:
    """An output of ``channels`` channels in ``x``'s memory format."""
    fmt = channels_last_kind(x) or torch.contiguous_format
    return torch.empty((x.shape[0], channels, *size), dtype=x.dtype, device=x.device,
                       memory_format=fmt)


Affine = Tuple[torch.Tensor, torch.Tensor]  # (scale, shift), one value per channel each


def levels_output(x: torch.Tensor, levels: Sequence[nn.Conv2d], c_offsets: Sequence[int],
                  channels: int, activation: Optional[Affine] = None,
                  output_activation: Optional[Affine] = None) -> torch.Tensor:
    """A new output of ``channels`` channels in ``x``'s memory format with each level's
    convolution written at its offset, as :func:`conv_levels` writes it (channels no level
    writes are left uninitialised). Under ``torch.compile`` (inference) this is the custom op
    ``pyconv_mm::conv_levels``, which the compiler keeps as one call.

    Shapes: (N, C_in, H, W) -> (N, channels, H', W').
    """
    if _compiling():
        empty = x.new_empty(0)
        scale, shift = activation if activation is not None else (empty, empty)
        out_scale, out_shift = (output_activation if output_activation is not None
                                else (empty, empty))
        return torch.ops.pyconv_mm.conv_levels(
            x, [lvl.weight for lvl in levels],
            [lvl.bias if lvl.bias is not None else empty for lvl in levels],
            [lvl.dilation[0] for lvl in levels], list(c_offsets), levels[0].stride[0],
            channels, scale, shift, out_scale, out_shift)
    out = empty_output(x, channels, output_size(x, levels[0]))
    return conv_levels(x, levels, c_offsets, out, activation=activation,
                       output_activation=output_activation)


def conv_levels(x: torch.Tensor, levels: Sequence[nn.Conv2d], c_offsets: Sequence[int],
                out: torch.Tensor, activation: Optional[Affine] = None,
                output_activation: Optional[Affine] = None) -> torch.Tensor:
    """Each level's convolution of ``x`` (no autograd) into ``out[:, offset:offset + C_out]``.

    The levels share their stride (1 or 2) and pad by ``(K - 1) / 2 * dilation``. With
    ``activation = (scale, shift)`` (C_in values each) they convolve ``relu(x * scale + shift)``
    instead (e.g. an eval-mode batch norm and a ReLU, see :func:`batch_norm_affine`), formed
    as the kernel copies its input: the activated input is never written out. With
    ``output_activation`` (one value per channel of ``out``) the channels the levels write
    hold ``relu(y * scale + shift)`` instead of their output ``y``.
    """
    _run(x, [lvl.weight for lvl in levels], [lvl.bias for lvl in levels],
         [lvl.dilation[0] for lvl in levels], c_offsets, levels[0].stride[0], out,
         activation=activation, output_activation=output_activation)
    return out


def batch_norm_affine(norm: nn.Module, channels: int) -> Affine:
    """(scale, shift) with ``norm(x) = x * scale + shift`` per channel, in the norm's dtype,
    for a batch norm that normalises with its running statistics (eval mode), as ATen computes
    them, or an ``nn.Identity`` (e.g. a norm that :func:`~pyconv_mm.ops.fuse_conv_bn` folded
    away; float32)."""
    if isinstance(norm, nn.Identity):
        return (torch.ones(channels, dtype=torch.float32),
                torch.zeros(channels, dtype=torch.float32))
    with torch.no_grad():
        scale = torch.rsqrt(norm.running_var + norm.eps)
        if norm.weight is not None:
            scale = scale * norm.weight
        shift = -norm.running_mean * scale
        if norm.bias is not None:
            shift = shift + norm.bias
    return scale, shift


def _run(x: torch.Tensor, weights: Sequence[torch.Tensor],
         biases: Sequence[Optional[torch.Tensor]], dilations: Sequence[int],
         c_offsets: Sequence[int], stride: int, out: Union[torch.Tensor, Sequence[torch.Tensor]],
         accumulate: bool = False, in_ranges: Optional[Sequence[Tuple[int, int]]] = None,
         paddings: Optional[Sequence[Tuple[int, int]]] = None,
         activation: Optional[Affine] = None, output_activation: Optional[Affine] = None,
         out_indices: Sequence[int] = ()) -> None:
    """The kernel call: level i reads channels ``in_ranges[i] = (start, count)`` of ``x`` (all
    of them by default) and writes (``accumulate``: adds) its output into ``out``'s channels
    from ``c_offsets[i]`` on; levels with the same output channels are summed. ``out`` may be
    a list of outputs of one size and layout, level i writing ``out[out_indices[i]]`` (the
    input is copied once for all of them). Levels pad by ``(K - 1) / 2 * dilation``, or,
    given ``paddings[i] = (top, left)``, run any KH x KW kernel at stride 1 with that padding
    and an output of the input's size. ``activation`` and ``output_activation``: see
    :func:`conv_levels`."""
    empty = torch.empty(0)
    in_ranges = in_ranges or [(0, x.shape[1])] * len(weights)
    paddings = paddings or [()] * len(weights)
    scale, shift = (empty, empty) if activation is None else activation
    out_scale, out_shift = (empty, empty) if output_activation is None else output_activation
    outs = [out] if isinstance(out, torch.Tensor) else list(out)
    _ext.conv_levels(x.detach(), [w.detach() for w in weights],
                     [empty if b is None else b.detach() for b in biases], list(dilations),
                     list(c_offsets), [start for start, _ in in_ranges],
                     [count for _, count in in_ranges], [list(p) for p in paddings], stride,
                     outs, list(out_indices), accumulate, scale.detach(), shift.detach(),
                     out_scale.detach(), out_shift.detach())


def input_grad(grad: torch.Tensor, levels: Sequence[nn.Conv2d], weights: Sequence[torch.Tensor],
               c_offsets: Sequence[int], x: Optional[torch.Tensor],
               out: Optional[torch.Tensor] = None, accumulate: bool = False) -> torch.Tensor:
    """The gradient of the input ``x`` (N, C_in, H, W) of kernel levels (sharing their stride,
    1 or 2) from their channels of the output gradient ``grad`` (N, C_out, H', W'): every
    level summed into all channels, by the kernel. At stride 1 one call on ``grad`` with the
    transposed, flipped kernels; at stride 2 one call too, each level running once per input
    phase (:func:`stride2_kernel_size`) into that phase's view of the result (the kernel
    copies ``grad`` once for the four phases; a call per phase had copied it four times:
    the strided input gradients of stages 1 and 2 x1.04-1.08 at batch 8, paired medians of
    three runs). A new tensor like ``x``, or ``out`` (of ``x``'s size; ``x`` may then be
    None) written, or with ``accumulate`` added to."""
    n = len(levels)
    transposed = [_transposed(w, lvl.groups) for lvl, w in zip(levels, weights)]
    in_ranges = [(start, w.shape[0]) for start, w in zip(c_offsets, weights)]
    grad_x = torch.empty_like(x) if out is None else out
    if levels[0].stride[0] == 1:
        _run(grad, [w.flip(-1, -2) for w in transposed], [None] * n,
             [lvl.dilation[0] for lvl in levels], [0] * n, 1, grad_x, accumulate=accumulate,
             in_ranges=in_ranges)
    else:
        kernels, paddings = zip(*[_phase_kernel(w, a, b) for a, b in PHASES
                                  for w in transposed])
        _run(grad, kernels, [None] * len(kernels), [1] * len(kernels), [0] * len(kernels), 1,
             [grad_x[:, :, a::2, b::2] for a, b in PHASES], accumulate=accumulate,
             in_ranges=in_ranges * len(PHASES), paddings=paddings,
             out_indices=[p for p in range(len(PHASES)) for _ in levels])
    return grad_x


def activation_in_weight_grads(x: torch.Tensor) -> bool:
    """Whether :func:`weight_grads` can apply an activation to ``x`` as it reads it:
    channels_last, whole 16-channel blocks."""
    return x.is_contiguous(memory_format=torch.channels_last) and x.shape[1] % 16 == 0


#: The largest weight (floats) whose gradient goes by channels: each thread keeps one copy of
#: it as accumulators, which must stay in L2. Stage 1 and 2's levels have 9-50 K floats;
#: stage 3's (200-300 K) and stage 4's 3x3 (2.4 M) ran x0.5-0.95 against oneDNN.
_BY_CHANNELS_MAX_WEIGHT = 64 << 10


def _channel_vectorised(x: torch.Tensor, level: nn.Conv2d,
                        strided_lanes: bool = False) -> bool:
    """Whether the weight gradient of ``level`` goes to the kernel's gradient vectorised over
    input channels (``csrc/channels_last_weight_grad.cpp``): a channels_last input, dilation
    1, a weight of at most 64 K floats, and whole 16-channel blocks of input per group (a
    dense level, or e.g. stage 1's 5x5/G4 level, 16 channels a group) or, at stride 1, lane
    groups of 2, 4 or 8 input channels and at most as many outputs per group (stage 1's
    7x7/G8 and 9x9/G16 levels: batch 8, 2 cores (Zen 5), 0.94 -> 0.65 and 1.00 -> 0.67 ms,
    the three grouped levels 2.67 -> 1.91 ms). At stride 2, lane groups only with
    ``strided_lanes`` (:func:`_strided_lanes`): with a call per level, the column pass, which
    copies the input once for three levels, was faster (3.70 against 4.03 ms)."""
    # pixels of whole channel rows (a frame view of a 1x1 clip may have a pixel stride of 1)
    channels_last = x.stride(1) == 1 and x.stride(3) >= x.shape[1]
    if not (level.dilation[0] == 1 and level.kernel_size[0] in (3, 5, 7, 9) and channels_last
            and level.weight.numel() <= _BY_CHANNELS_MAX_WEIGHT):
        return False
    if x.shape[1] % (16 * level.groups) == 0:
        return True
    in_per_group = x.shape[1] // level.groups
    return ((level.stride[0] == 1 or strided_lanes) and x.shape[1] % 16 == 0
            and in_per_group in (2, 4, 8) and level.out_channels // level.groups <= in_per_group)


def _in_place(x: torch.Tensor, level: nn.Conv2d) -> bool:
    """Whether ``level``'s weight gradient goes by channels with whole 16-channel blocks of
    input per group (a dense level, say): it reads the input in place at any stride."""
    return _channel_vectorised(x, level) and x.shape[1] % (16 * level.groups) == 0


def _strided_lanes(x: torch.Tensor, levels: Sequence[nn.Conv2d], wanted: Sequence[int],
                   activated: bool) -> bool:
    """Whether, at stride 2, lane-group levels go by channels too (one pass over the input
    for all the levels by channels, :func:`_one_pass_batches`) instead of to the column pass,
    which copies the input: where more than one level would then go by channels and, with an
    activation, one of them reads the input in place anyway (lane groups apply the activation
    once per kernel row, where the column pass applies it once as it copies). Batch 8, 2
    cores (Zen 5), all of a PyConv's weight gradients, against the column pass:
    PyConvHGResNet's strided stage-2 PyConv (three lane-group levels, 25.7 MB) 4.9 -> 3.1 ms,
    PyConvResNet's strided stage-1 one (activated; two lane-group levels beside a dense and a
    16-channel-group one) 7.6 -> 4.8 ms, its first block forward and backward x1.06-1.07
    (paired medians of 32); PyConvHGResNet's strided stage-1 one (activated, four lane-group
    levels of 4 channels, 51 MB) 8.8 -> 8.5-11.2 ms by lane groups: it keeps the column
    pass."""
    if not levels or levels[0].stride[0] != 2:
        return False
    by_lanes = [i for i in wanted if _channel_vectorised(x, levels[i], strided_lanes=True)]
    return len(by_lanes) > 1 and (not activated or any(_in_place(x, levels[i]) for i in by_lanes))


def _one_pass_batches(chosen: Sequence[int], weights: Sequence[torch.Tensor]) -> List[List[int]]:
    """``chosen`` (indices of levels whose weight gradients go by channels, in order) cut into
    runs whose weights together have at most :data:`_BY_CHANNELS_MAX_WEIGHT` floats: each run
    is one call of the kernel, which reads the input once for all its levels (each band of
    input rows stays in L2 from one level to the next), while every thread's accumulators for
    them still fit in L2. Batch 8, 2 cores (Zen 5), paired medians of 28, against a call per
    level: PyConvHGResNet's stride-1 weight gradients of stage 1 (four lane-group levels, 12.8
    MB of input, 21 K floats of weights) x1.17, stage 2 (three, 36 K floats) x1.07; stage 3's
    two levels (88 K floats together) x0.98 in one call, so they stay apart."""
    batches: List[List[int]] = []
    floats = 0
    for i in chosen:
        size = weights[i].numel()
        if batches and floats + size <= _BY_CHANNELS_MAX_WEIGHT:
            batches[-1].append(i)
            floats += size
        else:
            batches.append([i])
            floats = size
    return batches


def weight_grads(x: torch.Tensor, grad: torch.Tensor, levels: Sequence[nn.Conv2d],
                 weights: Sequence[torch.Tensor], c_offsets: Sequence[int],
                 needed: Sequence[bool],
                 activation: Optional[Affine] = None) -> List[Optional[torch.Tensor]]:
    """The gradient of each level's weight (None where not ``needed``) from its channels of
    the output gradient ``grad`` (N, C_out, H', W') and the input ``x`` (N, C_in, H, W).

    On a channels_last input, a level with whole 16-channel blocks of input per group (or,
    at stride 1, lane groups of 2, 4 or 8 channels: see :func:`_channel_vectorised`) goes
    to the kernel's gradient vectorised over channels, which reads the input in place (batch
    8, 2 cores, against oneDNN: stage 1's strided dense 64->16 3x3 at 112x112 6.2 -> 3.1
    ms, stage 2's 128->32 at 56x56 5.4 -> 2.8, the stride-1 ones x1.1-1.3; against the
    kernel's column-vectorised pass: the 5x5/G4 levels x1.3-1.75, stage 2's 7x7/G8
    x1.3-1.5, copy included). The other grouped levels go to the kernel's
    column-vectorised pass, all in one call (it copies the input into column phases once
    for them), and so do the grouped levels that could go by channels where that pass runs
    anyway (stage 1's strided 5x5/G4 level: its weight gradients 7% slower without it); the
    other levels without groups to the stock backward (oneDNN). All of a PyConv's weight
    gradients against the stock backward and the column pass alone (paired medians of 21
    rounds): stage 1's x1.17-1.22 (strided, activated) and x1.07, stage 2's x1.4-1.75
    (strided; oneDNN's strided dense gradient varies from call to call) and x1.3.

    The levels that go by channels share calls of the kernel, each reading the input once
    for several levels (:func:`_one_pass_batches`).

    With ``activation = (scale, shift)`` (where :func:`activation_in_weight_grads`), the
    levels' input is ``relu(x * scale + shift)``, formed as the kernel reads ``x``: every
    level goes to the kernel, the activated input is never written out.
    """
    grads: List[Optional[torch.Tensor]] = [None] * len(levels)
    empty = x.new_empty(0)
    scale, shift = ((empty, empty) if activation is None
                    else (activation[0].detach().float(), activation[1].detach().float()))
    wanted = [i for i in range(len(levels)) if needed[i]]
    strided_lanes = _strided_lanes(x, levels, wanted, activation is not None)
    by_channels = [i for i in wanted if _channel_vectorised(x, levels[i], strided_lanes)]
    in_kernel = [i for i in wanted if i not in by_channels
                 and (levels[i].groups > 1 or activation is not None)]
    if in_kernel:  # the column-vectorised pass copies the input anyway: grouped levels ride
        in_kernel = sorted(in_kernel + [i for i in by_channels if levels[i].groups > 1])
        by_channels = [i for i in by_channels if levels[i].groups == 1]
    for batch in _one_pass_batches(by_channels, weights):
        computed = _ext.channels_last_weight_grads(
            x, grad, [c_offsets[i] for i in batch], [weights[i].shape[0] for i in batch],
            [levels[i].groups for i in batch], [levels[i].kernel_size[0] for i in batch],
            levels[batch[0]].stride[0], scale, shift)
        for i, weight_grad in zip(batch, computed):
            grads[i] = weight_grad
    if in_kernel:
        computed = _ext.weight_grads(x, grad, [list(weights[i].shape) for i in in_kernel],
                                     [levels[i].dilation[0] for i in in_kernel],
                                     [c_offsets[i] for i in in_kernel],
                                     levels[in_kernel[0]].stride[0], scale, shift)
        for i, weight_grad in zip(in_kernel, computed):
            grads[i] = weight_grad
    for i, lvl in enumerate(levels):
        if needed[i] and grads[i] is None:
            grads[i] = torch.ops.aten.convolution_backward(
                grad.narrow(1, c_offsets[i], weights[i].shape[0]), x, weights[i], None,
                list(lvl.stride), list(lvl.padding), list(lvl.dilation), False, [0, 0], 1,
                [False, True, False])[1]
    return grads


def _convolve(x: torch.Tensor, levels: Sequence[nn.Conv2d], c_offsets: Sequence[int],
              out: torch.Tensor, weights: Sequence[torch.Tensor],
              biases: Sequence[Optional[torch.Tensor]]) -> None:
    """The levels (with ``weights`` and ``biases``) of ``x`` into ``out``, by one kernel call."""
    _run(x, weights, biases, [lvl.dilation[0] for lvl in levels], c_offsets,
         levels[0].stride[0], out)


class KernelOps(NamedTuple):
    """How the kernel computes PyConv levels of one dimensionality: ``usable(x, level)``,
    ``levels_output(x, levels, c_offsets, channels)`` (inference), and what
    :class:`LevelsFunction` calls: ``convolve(x, levels, c_offsets, out, weights, biases)``,
    ``output_size(x, level)`` and the gradients ``input_grad(grad, levels, weights,
    c_offsets, x)`` and ``weight_grads(x, grad, levels, weights, c_offsets, needed)``."""
    usable: Callable
    levels_output: Callable
    convolve: Callable
    output_size: Callable
    input_grad: Callable
    weight_grads: Callable


#: 2D levels (``nn.Conv2d``): one kernel call each way.
PLANAR = KernelOps(usable, levels_output, _convolve, output_size, input_grad, weight_grads)


class LevelsFunction(torch.autograd.Function):
    """Kernel levels (stride 1 or 2) and the other levels' outputs assembled into one output,
    with gradients: the input's by the same kernel (a stride-1 grouped convolution's input
    gradient is a grouped convolution of the output gradient with the transposed, flipped
    kernels; at stride 2, one such convolution per input phase, see
    :func:`stride2_kernel_size`), the grouped levels' weights by the kernel's weight-gradient
    pass (at stride 2 it reads the input split into column phases, as the forward does) and an
    ungrouped level's by the stock backward (:func:`weight_grads`), the other levels' by
    slicing. 2D levels by :data:`PLANAR`, 3D ones one temporal tap at a time
    (:data:`~pyconv_mm.ops.temporal_taps.TEMPORAL`).

    ``apply(ops, levels, c_offsets, other_offsets, x, *weights, *biases, *others)``: the
    :class:`KernelOps` of the levels' dimensionality, the kernel's levels, their weights and
    biases (empty tensors for none) and output channel offsets; the other levels' outputs
    (autograd-tracked tensors) and their offsets. Returns the PyConv's output in ``x``'s
    memory format.
    """

    @staticmethod
    def forward(ctx, ops, levels, c_offsets, other_offsets, x, *tensors):
        n = len(levels)
        weights, biases, others = tensors[:n], tensors[n:2 * n], tensors[2 * n:]
        channels = sum(w.shape[0] for w in weights) + sum(o.shape[1] for o in others)
        out = empty_output(x, channels, ops.output_size(x, levels[0]))
        ops.convolve(x, levels, c_offsets, out, weights,
                     [b if b.numel() else None for b in biases])
        for start, other in zip(other_offsets, others):
            out.narrow(1, start, other.shape[1]).copy_(other)
        ctx.save_for_backward(x, *weights)
        ctx.ops, ctx.levels, ctx.c_offsets, ctx.other_offsets = ops, levels, c_offsets, other_offsets
        ctx.other_channels = [o.shape[1] for o in others]
        ctx.has_bias = [b.numel() > 0 for b in biases]
        return out

    @staticmethod
    def backward(ctx, grad):
        x, *weights = ctx.saved_tensors  # the kernels read any strides of grad
        ops, levels, n = ctx.ops, ctx.levels, len(weights)
        grad_x = (ops.input_grad(grad, levels, weights, ctx.c_offsets, x)
                  if ctx.needs_input_grad[4] else None)
        grad_weights = ops.weight_grads(x.detach(), grad, levels, weights, ctx.c_offsets,
                                        ctx.needs_input_grad[5:5 + n])
        pixels = (0, *range(2, grad.dim()))
        grad_biases = [grad.narrow(1, start, w.shape[0]).sum(pixels) if has else None
                       for start, w, has in zip(ctx.c_offsets, weights, ctx.has_bias)]
        grad_others = [grad.narrow(1, start, channels)
                       for start, channels in zip(ctx.other_offsets, ctx.other_channels)]
        return (None, None, None, None, grad_x, *grad_weights, *grad_biases, *grad_others)


def _register_custom_op() -> bool:
    """``pyconv_mm::conv_levels``: the kernel as an op ``torch.compile`` can trace (inference).
    Its fake implementation gives the output's shape and memory format."""
    if _ext is None or not hasattr(torch, 'library') or not hasattr(torch.library, 'custom_op'):
        return False

    def out_shape(x, weights, dilations, stride):
        k, d = weights[0].shape[-1], dilations[0]
        return tuple((size + 2 * ((k - 1) // 2 * d) - d * (k - 1) - 1) // stride + 1
                     for size in x.shape[2:])

    @torch.library.custom_op('pyconv_mm::conv_levels', mutates_args=())
    def conv_levels_op(x: torch.Tensor, weights: List[torch.Tensor], biases: List[torch.Tensor],
                       dilations: List[int], c_offsets: List[int], stride: int, channels: int,
                       scale: torch.Tensor, shift: torch.Tensor, out_scale: torch.Tensor,
                       out_shift: torch.Tensor) -> torch.Tensor:
        out = empty_output(x, channels, out_shape(x, weights, dilations, stride))
        _run(x, weights, [b if b.numel() else None for b in biases], dilations, c_offsets,
             stride, out, activation=(scale, shift) if scale.numel() else None,
             output_activation=(out_scale, out_shift) if out_scale.numel() else None)
        return out

    @conv_levels_op.register_fake
    def _(x, weights, biases, dilations, c_offsets, stride, channels, scale, shift, out_scale,
          out_shift):
        return empty_output(x, channels, out_shape(x, weights, dilations, stride))

    return True


#: Whether the kernel can run inside ``torch.compile`` graphs (inference).
TRACEABLE = _register_custom_op()
