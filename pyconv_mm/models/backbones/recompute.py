"""Activation checkpointing that leaves batch-norm statistics as one forward pass would.

``torch.utils.checkpoint`` runs a function a second time in backward to rebuild the tensors
it did not keep. Batch norms in training mode update their running statistics on every call,
so a plain checkpoint updates them twice per step (momentum in effect doubled). Here the
second run updates throwaway copies: the model ends a step exactly as without checkpointing.
"""
import contextlib
from typing import Callable, Iterable, Iterator

import torch
import torch.utils.checkpoint as cp
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from pyconv_mm.ops.algorithms import _compiling

_RUNNING_STATS = ('running_mean', 'running_var', 'num_batches_tracked')


@contextlib.contextmanager
def running_stats_untouched(modules: Iterable[nn.Module]) -> Iterator[None]:
    """Inside, the batch norms among ``modules`` update copies of their running statistics.

    Their outputs do not change (in training a batch norm normalises with the batch's own
    statistics), and they save as many tensors for backward as outside, which checkpointing
    checks when it recomputes.
    """
    norms = [m for m in modules
             if isinstance(m, _BatchNorm) and m.training and m.track_running_stats]
    kept = [{name: getattr(m, name) for name in _RUNNING_STATS} for m in norms]
    for norm, buffers in zip(norms, kept):
        for name, buffer in buffers.items():
            if buffer is not None:
                setattr(norm, name, buffer.clone())
    try:
        yield
    finally:
        for norm, buffers in zip(norms, kept):
            for name, buffer in buffers.items():
                setattr(norm, name, buffer)


def checkpoint_once(function: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                    modules: Iterable[nn.Module]) -> torch.Tensor:
    """``function(x)`` with its intermediate tensors recomputed in backward instead of kept.

    Args:
        function: what to run; it may call the batch norms among ``modules``.
        x: its input, kept (the caller usually keeps it anyway).
        modules: the modules ``function`` calls; their batch norms update their running
            statistics in forward only.

    Under ``torch.compile`` this is a plain non-reentrant checkpoint, as the compiler takes no
    context for the recomputation.
    """
    if _compiling():
        return cp.checkpoint(function, x, use_reentrant=False)
    modules = list(modules)
    return cp.checkpoint(
        function, x, use_reentrant=False,
        context_fn=lambda: (contextlib.nullcontext(), running_stats_untouched(modules)))
