"""Shared fixtures: the repo root, the venv's python, and running our tools as subprocesses."""
import functools
import os
import os.path as osp
import subprocess
import sys
import tempfile
from typing import Callable, List, Optional

import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
PYTHON = sys.executable

# Demo datasets of this test session go to a fresh folder (inherited by subprocesses).
os.environ.setdefault('PYCONV_DEMO_DATA', tempfile.mkdtemp(prefix='pyconv_demo_'))
os.environ.setdefault('OMP_NUM_THREADS', '2')

#: Tests of our compiled CPU kernels (PyConv levels, max-pool gradient).
needs_direct_kernel = pytest.mark.skipif(
    not __import__('pyconv_mm.ops.direct', fromlist=['AVAILABLE']).AVAILABLE,
    reason='our CPU kernels are not built or this CPU has no AVX-512')


def assert_same_buffers(reference: 'torch.nn.Module', model: 'torch.nn.Module',
                        exact: Callable[[str], bool] = lambda name: True) -> None:
    """``model``'s buffers (running statistics, batch counts) as ``reference``'s: bit for bit
    where ``exact(name)`` and for every batch count, else within rounding (1e-5): statistics
    of inputs computed in another order of operations."""
    import torch
    for (name, want), got in zip(reference.named_buffers(), model.buffers()):
        if exact(name) or name.endswith('num_batches_tracked'):
            assert torch.equal(got, want), f'{name} differs'
        else:
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, msg=name)


def kept_storages(run: Callable[[], object]) -> dict:
    """What ``run()`` keeps for backward: shape -> set of storages (data pointers) of the
    tensors of that shape that autograd saved."""
    import torch
    kept = {}

    def pack(tensor):
        kept.setdefault(tuple(tensor.shape), set()).add(tensor.untyped_storage().data_ptr())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run()
    return kept


def backward_nodes(out: 'torch.Tensor') -> set:
    """Names of the autograd nodes ``out`` was computed through."""
    seen, stack = {}, [out.grad_fn]
    while stack:
        node = stack.pop()
        if node is not None and id(node) not in seen:
            seen[id(node)] = type(node).__name__
            stack.extend(next_node for next_node, _ in node.next_functions)
    return set(seen.values())


def strided_block(block_type: type, out_channels: int, with_cp: bool) -> 'torch.nn.Module':
    """A PyConv block (bottleneck: 16 channels wide, basic: 32) taking 32 channels at stride 2
    through a PyConv of 3x3 and 5x5/G4 levels, with PyConvResNet's shortcut (a max pool, and
    a 1x1 conv and norm where ``out_channels`` differs from 32), in training mode."""
    from pyconv_mm.models.backbones.pyconv_blocks import PyConvBottleneck, make_shortcut
    mid_channels = 16 if block_type is PyConvBottleneck else 32
    return block_type(32, mid_channels, out_channels, dict(kernel_sizes=[3, 5], groups=[1, 4]),
                      stride=2, with_cp=with_cp,
                      downsample=make_shortcut(32, out_channels, 2, with_pool=True)).train()


def assert_same_parameter_grads(reference: 'torch.nn.Module', model: 'torch.nn.Module') -> None:
    """``model``'s parameter gradients as ``reference``'s, within float rounding."""
    import torch
    for (name, want), got in zip(reference.named_parameters(), model.parameters()):
        torch.testing.assert_close(got.grad, want.grad, rtol=1e-5, atol=1e-5, msg=name)


def step_against_switched_off(model: 'torch.nn.Module', reference: 'torch.nn.Module',
                               x: 'torch.Tensor', set_enabled: Callable[[bool], None]) -> tuple:
    """One training step each on copies of ``x`` (loss: the mean square of the output):
    ``model`` as the code runs, ``reference`` with ``set_enabled(False)`` (restored after; a
    checkpoint recomputes with the same setting). Asserts their outputs and input gradients
    agree within float rounding; returns both outputs."""
    import torch
    x_ours, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    out = model(x_ours)
    out.square().mean().backward()
    set_enabled(False)
    try:
        want = reference(x_ref)
        want.square().mean().backward()
    finally:
        set_enabled(True)
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x_ours.grad, x_ref.grad, rtol=1e-5, atol=1e-6)
    return out, want


def run(args: List[str], timeout: float = 600, env: Optional[dict] = None,
        cwd: str = ROOT, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command; on failure show its output in the assertion message."""
    proc = subprocess.run(args, cwd=cwd, env={**os.environ, **(env or {})}, timeout=timeout,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f'command failed ({proc.returncode}): {" ".join(args)}\n'
                             f'{proc.stdout[-6000:]}')
    return proc


def run_python(code: str, **kwargs) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (a clean import state)."""
    return run([PYTHON, '-c', code], **kwargs)


def tool(name: str) -> str:
    return osp.join(ROOT, 'tools', name)


def config(path: str) -> str:
    return osp.join(ROOT, 'configs', path)


def upstream_tool(package: str, name: str) -> str:
    """A tool shipped inside an installed codebase (``<package>/.mim/tools/<name>``)."""
    import importlib.util
    spec = importlib.util.find_spec(package)
    return osp.join(list(spec.submodule_search_locations)[0], '.mim', 'tools', name)


@pytest.fixture(scope='session')
def demo_cache() -> str:
    return os.environ['PYCONV_DEMO_DATA']


def complexity(config_path: str, shape: Optional[tuple] = None) -> dict:
    """Params/FLOPs of a config (relative to configs/ or absolute), measured once per test
    session whichever way the path is written."""
    path = config_path if osp.isabs(config_path) else config(config_path)
    return _complexity(osp.normpath(path), shape)


@functools.lru_cache(maxsize=None)
def _complexity(path: str, shape: Optional[tuple]) -> dict:
    from pyconv_mm.analysis import analyze_config
    return analyze_config(path, shape=shape)
