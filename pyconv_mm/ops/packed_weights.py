"""Folded weights in oneDNN's own layout, kept for fused CPU inference while their sources
stay unchanged.

oneDNN computes a convolution from weights in a blocked layout of its own choosing, which
depends on the input's shape. Given a plain weight, it reorders it on every call, and that
reorder is slow: timed here (2 cores, fp32, batch 8), 1.55 ms for the 2048 -> 512 1x1 weight
of ResNet-50's last stage, whose whole convolution on a 7x7 map takes 3.7 ms once the weight
is in oneDNN's layout, and 4.3 ms for a 512 -> 512 3x3 weight (7.0 ms in oneDNN's layout
against 14.0 ms with the reorder). The fused chains of :mod:`~pyconv_mm.ops.fused_inference`
fold a norm into a weight on every call as well. So :func:`folded` keeps, for each
convolution, its folded weight already in oneDNN's layout for the last input shape it saw.

An entry is used only while the tensors it was computed from are unchanged: the convolution's
weight and bias, and the norm's weight, bias, running mean and variance. Autograd's version
counters do not see writes through ``tensor.data`` (mmengine's ``EMAHook`` swaps weights that
way) or through numpy, so on every call a fingerprint of those tensors' bytes is compared
with the entry's: a 64-bit hash (our extension's ``fingerprint``) that reads each byte once,
~0.12 ms for a 4 MB weight here against the 1.55 ms reorder. Different contents give the same
fingerprint with a chance of about one in 2^64.

Entries live beside the modules (a weak mapping; nothing is added to a module, its state
dict, copies or pickles) and cost one folded copy of each fused weight; ``release(module)``
drops those of a module and its children (the blocks do it when set to training). Without
the compiled extension, or under ``PYCONV_PACKED_WEIGHTS=0`` / :func:`set_enabled`, weights
are folded and reordered on every call as before.
"""
import os
import weakref
from typing import Callable, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import nn

try:
    from . import _direct_conv as _ext
except ImportError:  # built without the extension: fold on every call
    _ext = None

#: True when this build can fingerprint tensors and this torch can pack oneDNN weights.
AVAILABLE = _ext is not None and hasattr(torch.ops.mkldnn, '_reorder_convolution_weight')
_STATE = {'enabled': os.environ.get('PYCONV_PACKED_WEIGHTS', '1') != '0'}
_ENTRIES: 'weakref.WeakKeyDictionary[nn.Module, _Entry]' = weakref.WeakKeyDictionary()

Folded = Tuple[torch.Tensor, Optional[torch.Tensor]]


class _Entry(NamedTuple):
    key: tuple
    sources: int  # fingerprint of the tensors the weight was computed from
    weight: torch.Tensor  # folded, in oneDNN's layout for the key's input shape
    bias: Optional[torch.Tensor]


def set_enabled(enabled: bool) -> None:
    """Keep folded weights in oneDNN's layout (default), or fold them on every call."""
    _STATE['enabled'] = bool(enabled)
    if not enabled:
        _ENTRIES.clear()


def enabled() -> bool:
    """Whether :func:`folded` keeps its results here and now."""
    return AVAILABLE and _STATE['enabled']


def fingerprint(tensors: Sequence[Optional[torch.Tensor]]) -> int:
    """A 64-bit hash of the CPU tensors' dtypes, sizes, strides and bytes (None allowed)."""
    return _ext.fingerprint(list(tensors))


def norm_sources(norm: nn.Module) -> Tuple[Optional[torch.Tensor], ...]:
    """The tensors a batch norm's eval-mode affine comes from (none for ``nn.Identity``)."""
    if isinstance(norm, nn.Identity):
        return ()
    return (norm.weight, norm.bias, norm.running_mean, norm.running_var)


def folded(owner: nn.Module, x: torch.Tensor, sources: Sequence[Optional[torch.Tensor]],
           settings: tuple, stride: Sequence[int], padding: Sequence[int],
           dilation: Sequence[int], groups: int, fold: Callable[[], Folded]) -> Folded:
    """``fold()``'s (weight, bias) for the convolution ``owner`` on ``x``, the weight in
    oneDNN's layout for ``x``'s shape and the convolution's arguments: kept from an earlier
    call while ``sources`` (every tensor ``fold`` reads) have the same bytes and ``settings``
    (the rest of what ``fold`` depends on: a norm's eps, a channel range) are equal.

    Only for 2D channels_last inputs (oneDNN's op returns a channels_last output for a packed
    weight, and packs 2D weights only); for others ``fold()`` as it is.

    Shapes: weight (C_out, C_in / groups, *k), bias (C_out,).
    """
    if not enabled() or x.dim() != 4 or not x.is_contiguous(memory_format=torch.channels_last):
        return fold()  # oneDNN's op returns channels_last for a packed weight; packs only 2D
    key = (tuple(x.shape), x.stride(), settings, tuple(stride), tuple(padding),
           tuple(dilation), groups)
    prints = fingerprint(sources)
    entry = _ENTRIES.get(owner)
    if entry is not None and entry.key == key and entry.sources == prints:
        return entry.weight, entry.bias
    weight, bias = fold()
    packed = torch.ops.mkldnn._reorder_convolution_weight(
        weight, list(padding), list(stride), list(dilation), groups, list(x.shape))
    _ENTRIES[owner] = _Entry(key, prints, packed, bias)
    return packed, bias


def release(module: nn.Module) -> None:
    """Drop the kept weights of ``module`` and its submodules."""
    for child in module.modules():
        _ENTRIES.pop(child, None)


def kept(module: nn.Module) -> bool:
    """Whether a folded weight of ``module`` is kept (for tests and diagnostics)."""
    return module in _ENTRIES
