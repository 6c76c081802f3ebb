"""How a PyConv level is computed, chosen per level, input shape and device (like cuDNN's
benchmark mode): the stock grouped convolution, or the same convolution with its grouped
weight expanded to a dense block-diagonal one.

Stock CPU kernels for grouped convolutions with large kernels are slow: a 7x9x9 Conv3d with 8
groups ran 6x slower here than the dense convolution with 8x the multiply-adds, and a 9x9
Conv2d with 8 groups 3x slower. The dense form computes exactly the same function (the added
weights are zeros) and its gradient reaches the grouped weight through the expansion.

``set_algorithm('auto' | 'native' | 'dense')`` sets the policy for all PyConvs:
``auto`` (default) times the forward of both forms once per (level, input shape, dtype,
device, memory format, grad mode) and keeps the faster. Levels without groups, ``torch.jit`` tracing (FLOP
counting) and, under ``auto``, ``torch.compile`` use the native form.
"""
import time
from typing import Callable, Dict, Tuple

import torch

ALGORITHMS = ('native', 'dense')
_POLICY = {'value': 'auto'}
_CACHE: Dict[Tuple, str] = {}


def set_algorithm(policy: str) -> None:
    """Choose how grouped PyConv levels run: 'auto', 'native' or 'dense'."""
    if policy not in ('auto', ) + ALGORITHMS:
        raise ValueError(f'PyConv algorithm policy {policy!r}; valid: auto, native, dense')
    _POLICY['value'] = policy
    _CACHE.clear()


def get_algorithm() -> str:
    return _POLICY['value']


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


def _time(run: Callable[[torch.Tensor], torch.Tensor], weight: torch.Tensor,
          repeats: int = 3) -> float:
    """Best time of the forward ``run(weight)``. It runs without autograd, so that nothing is
    recorded (e.g. by activation checkpointing) and no gradient is touched."""
    best = float('inf')
    with torch.no_grad():
        for i in range(repeats + 1):  # the first run warms up
            if weight.is_cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            run(weight)
            if weight.is_cuda:
                torch.cuda.synchronize()
            if i:
                best = min(best, time.perf_counter() - start)
    return best


def choose(key: Tuple, weight: torch.Tensor,
           candidates: Dict[str, Callable[[torch.Tensor], torch.Tensor]]) -> str:
    """The algorithm for ``key``: the policy, or (auto) the fastest candidate, timed once.

    ``candidates[name](weight)`` computes the level with ``weight``.
    """
    if torch.jit.is_tracing() or torch.jit.is_scripting():
        return 'native'  # FLOP counters trace the model: they must see the grouped convs
    policy = _POLICY['value']
    if policy != 'auto':
        return policy
    if _compiling():
        return 'native'
    if key not in _CACHE:
        _CACHE[key] = min(candidates, key=lambda name: _time(candidates[name], weight))
    return _CACHE[key]
