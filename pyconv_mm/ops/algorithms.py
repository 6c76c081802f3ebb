"""How a PyConv level is computed, chosen per level, input shape and device (like cuDNN's
benchmark mode). Four forms compute the same grouped convolution:

* ``native``: the stock grouped convolution;
* ``dense``: the grouped weight expanded to a dense block-diagonal one (the added weights are
  zeros), one ordinary convolution;
* ``depthwise``: for each of the ``C_out / G`` outputs of a group, one depthwise convolution
  of all inputs with that output's kernels, then the sum over each group's inputs;
* ``direct``: our AVX-512 CPU kernel (:mod:`pyconv_mm.ops.direct`), vectorised over output
  columns; fp32, 2D, and 3D one temporal tap at a time (:mod:`pyconv_mm.ops.temporal_taps`);
  see :func:`pyconv_mm.ops.direct.usable` for the strides it trains. It computes all grouped
  levels of a PyConv in one pass
  over the input, straight into the PyConv's output, so it is chosen for a PyConv as a whole:
  ``auto`` times the PyConv once with its levels' best stock forms, with the kernel on its
  grouped levels, and with the kernel on every level (the dense one too). In inference a
  bottleneck's PyConv with every level in the kernel is also timed with the block's norms and
  ReLUs applied by the kernel as it reads and stores (``PyConv2d.forward_activated``).

Stock CPU kernels for grouped convolutions whose groups have few channels are slow (measured
here, 2 cores, channels_last, batch 8: a 64-channel 9x9 conv with 16 groups at 56x56 took
9.0 ms native, 7.9 ms dense and 1.7 ms depthwise; a 7x9x9 Conv3d with 8 groups ran 6x faster
dense than native). Gradients reach the grouped weight through each form.

``set_algorithm('auto' | 'native' | 'dense' | 'depthwise')`` sets the policy:
``auto`` (default) times the forms once per (level, input shape, dtype, device, memory
format, grad mode) and keeps the fastest; when training, forward and backward are timed
together. Levels without groups and ``torch.jit`` tracing (FLOP counting) use the native
form. Under ``torch.compile`` with ``auto``, a level takes the form chosen by an earlier eager
call with the same input (so run one eager batch before compiling), else the native form; the
``direct`` kernel is traced as the custom op ``pyconv_mm::conv_levels`` in inference (no
gradient recorded); compiled training runs the levels that chose it natively.
"""
import time
from typing import Callable, Dict, Optional, Tuple

import torch

ALGORITHMS = ('native', 'dense', 'depthwise', 'direct')
MAX_DEPTHWISE_PASSES = 8  # the depthwise form runs C_out / G depthwise convolutions
#: after a timed round, a candidate this many times slower than the fastest is not timed again
DROP_SLOWER_THAN = 2.0
_POLICY = {'value': 'auto'}
_CACHE: Dict[Tuple, str] = {}


def set_algorithm(policy: str) -> None:
    """Choose how grouped PyConv levels run: 'auto', 'native', 'dense' or 'depthwise'."""
    if policy not in ('auto', ) + ALGORITHMS:
        raise ValueError(f'PyConv algorithm policy {policy!r}; valid: auto, '
                         f'{", ".join(ALGORITHMS)}')
    # a forced form that does not apply to a level (direct on a GPU, depthwise on wide groups)
    # falls back to native there
    if policy != _POLICY['value']:
        _POLICY['value'] = policy
        _CACHE.clear()


def get_algorithm() -> str:
    return _POLICY['value']


def choices() -> Dict[Tuple, str]:
    """The forms ``auto`` has chosen so far in this process, by level shape and input (a copy,
    picklable: e.g. for another process to run the same forms, see :func:`reuse_choices`)."""
    return dict(_CACHE)


def reuse_choices(chosen: Dict[Tuple, str]) -> None:
    """Make ``auto`` use the forms of :func:`choices` (of this or another process) instead of
    timing those levels again."""
    _CACHE.update(chosen)


def _compiling() -> bool:
    return getattr(getattr(torch, 'compiler', None), 'is_compiling', lambda: False)()


def expand_grouped_weight(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """(C_out, C_in / G, *k) grouped weight -> (C_out, C_in, *k) dense block-diagonal weight.

    Differentiable: the gradient of the dense weight flows back to the diagonal blocks.
    """
    if groups == 1:
        return weight
    out_channels, in_per_group = weight.shape[:2]
    kernel = weight.shape[2:]
    blocks = weight.reshape(groups, out_channels // groups, 1, in_per_group, *kernel)
    mask = torch.eye(groups, dtype=weight.dtype, device=weight.device)
    mask = mask.reshape(groups, 1, groups, 1, *([1] * len(kernel)))
    return (blocks * mask).reshape(out_channels, groups * in_per_group, *kernel)


def depthwise_grouped_conv(conv_fn: Callable, x: torch.Tensor, weight: torch.Tensor,
                           bias: Optional[torch.Tensor], stride, padding, dilation,
                           groups: int) -> torch.Tensor:
    """A grouped convolution as ``C_out / G`` depthwise convolutions and group sums.

    Args:
        conv_fn: ``F.conv2d`` or ``F.conv3d``.
        x: (N, C_in, *S) input; weight: (C_out, C_in / G, *k) grouped weight.

    Returns:
        (N, C_out, *S') equal to ``conv_fn(x, weight, bias, stride, padding, dilation, groups)``.
    """
    out_channels, in_per_group = weight.shape[:2]
    kernel = weight.shape[2:]
    in_channels = in_per_group * groups
    out_per_group = out_channels // groups
    per_output = weight.reshape(groups, out_per_group, in_per_group, *kernel)
    outs = []
    for p in range(out_per_group):
        kernels = per_output[:, p].reshape(in_channels, 1, *kernel).contiguous()
        y = conv_fn(x, kernels, None, stride, padding, dilation, in_channels)
        outs.append(y.unflatten(1, (groups, in_per_group)).sum(2))
    out = torch.stack(outs, 2).flatten(1, 2)
    if bias is not None:
        out = out + bias.reshape(1, -1, *([1] * len(kernel)))
    return same_memory_format(out, x)


def channels_last_kind(x: torch.Tensor) -> Optional[torch.memory_format]:
    """``channels_last`` (4D) or ``channels_last_3d`` (5D) when ``x`` is laid out so (and not
    also plain contiguous), else None."""
    fmt = {4: torch.channels_last, 5: torch.channels_last_3d}.get(x.dim())
    if fmt is not None and x.is_contiguous(memory_format=fmt) and not x.is_contiguous():
        return fmt
    return None


def same_memory_format(out: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``out`` in ``like``'s memory format (channels_last stays channels_last downstream)."""
    fmt = channels_last_kind(like)
    return out if fmt is None else out.contiguous(memory_format=fmt)


def shape_key(x: torch.Tensor) -> Tuple[int, ...]:
    """``x``'s shape as choices are cached: the batch rounded up to a power of two, so that an
    epoch's last, smaller batch reuses the choice timed on the full ones (12 and 16 share one;
    1, 2, 4 and 8 stay apart). Traced as it is: tracing chooses nothing."""
    if torch.jit.is_tracing() or torch.jit.is_scripting():
        return tuple(x.shape)
    batch, bucket = x.shape[0], 1
    while bucket < batch:
        bucket *= 2
    return (bucket, *x.shape[1:])


def input_key(x: torch.Tensor) -> Tuple:
    """What of the input a cached choice depends on: its shape (:func:`shape_key`), dtype,
    device, memory format and whether gradients are recorded."""
    return (shape_key(x), x.dtype, x.device.type, channels_last_kind(x),
            torch.is_grad_enabled())


def candidates_for(groups: int, out_channels: int) -> Tuple[str, ...]:
    """The stock forms worth trying for a level alone (``direct`` is chosen per PyConv)."""
    if groups == 1:
        return ('native', )
    if out_channels // groups > MAX_DEPTHWISE_PASSES:
        return ('native', 'dense')
    return ('native', 'dense', 'depthwise')


def _keep_as_is(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


def _time_interleaved(candidates: Dict[str, Callable[[torch.Tensor, torch.Tensor],
                                                     torch.Tensor]],
                      weight: torch.Tensor, x: torch.Tensor, repeats: int = 3) -> Dict[str, float]:
    """Best time of each ``candidates[name](x, weight)`` on detached copies (no gradient of the
    model is touched); forward and backward when gradients are on (training).

    The candidates run in turn, one call each per round, in alternating order, after a round
    that warms them up: a slow spell of the machine then hits all of them, where timing one
    candidate's calls after the other's could blame it on one (on a shared 2-core machine the
    same block's choice had flipped between runs).

    A candidate over :data:`DROP_SLOWER_THAN` times the fastest one's best after a timed round
    sits out the later rounds (its best so far stays in the result): the slow forms (a
    depthwise form's backward can take ten times the fastest) were most of the cost of
    choosing.

    The probes keep their tensors for backward under their own (identity) saved-tensor hooks,
    so that inside activation checkpointing the checkpoint does not take them for its
    function's and a training step is still timed whole.
    """
    backward = torch.is_grad_enabled()
    probe_w = weight.detach().requires_grad_(backward)
    probe_x = x.detach().requires_grad_(backward)
    best = {name: float('inf') for name in candidates}
    names = list(candidates)
    with torch.set_grad_enabled(backward), \
            torch.autograd.graph.saved_tensors_hooks(_keep_as_is, _keep_as_is):
        for i in range(repeats + 1):  # the first round warms up
            if i > 1:
                fastest = min(best.values())
                names = [name for name in names if best[name] <= DROP_SLOWER_THAN * fastest]
            for name in (names if i % 2 == 0 else names[::-1]):
                if weight.is_cuda:
                    torch.cuda.synchronize()
                start = time.perf_counter()
                out = candidates[name](probe_x, probe_w)
                if backward:
                    out.backward(torch.ones_like(out))
                    probe_w.grad = probe_x.grad = None
                if weight.is_cuda:
                    torch.cuda.synchronize()
                if i:
                    best[name] = min(best[name], time.perf_counter() - start)
    return best


def choose(key: Tuple, x: torch.Tensor, weight: torch.Tensor,
           candidates: Dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]) -> str:
    """The algorithm for ``key``: the policy, or (auto) the fastest candidate, timed once.

    ``candidates[name](x, weight)`` computes the level.
    """
    if torch.jit.is_tracing() or torch.jit.is_scripting():
        return 'native'  # FLOP counters trace the model: they must see the grouped convs
    policy = _POLICY['value']
    if policy != 'auto':
        return policy if policy in candidates else 'native'
    if _compiling():  # nothing can be timed while tracing: a choice of an eager call, or native
        chosen = _CACHE.get(key, 'native')
        return chosen if chosen in candidates else 'native'  # callers offer what can be traced
    if key not in _CACHE:
        times = _time_interleaved(candidates, weight, x)
        _CACHE[key] = min(times, key=times.get)
    return _CACHE[key]
