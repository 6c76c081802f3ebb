"""The reduction, norm, ReLU and PyConv of a block trained without keeping the PyConv's input
(:mod:`pyconv_mm.ops.reduced_pyconv`; the expansion after it without its input,
:mod:`pyconv_mm.ops.norm_relu_conv`): the same outputs, gradients and running statistics as
the modules as written, in every form a PyConv level runs in, and the checkpoint where it does
not apply."""
import copy

import pytest
import torch
from torch import nn

from pyconv_mm.models.backbones.pyconv_blocks import PyConvBottleneck
from pyconv_mm.ops import reduced_pyconv
from conftest import assert_same_buffers, backward_nodes, kept_storages
from test_pyconv import algorithm_policy

PYRAMID = dict(kernel_sizes=[3, 5, 7, 9], groups=[1, 2, 4, 4])


def _block(stride: int, momentum=0.1) -> PyConvBottleneck:
    torch.manual_seed(0)
    block = PyConvBottleneck(32, 16, 64, PYRAMID, stride=stride, cp_pyconv_input=True,
                             norm_cfg=dict(type='BN', momentum=momentum),
                             downsample=nn.Sequential(nn.Conv2d(32, 64, 1, stride=stride),
                                                      nn.BatchNorm2d(64)))
    for module in block.modules():  # statistics and affine parameters away from 0 / 1
        if isinstance(module, nn.BatchNorm2d):
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.uniform_(module.bias, -0.5, 0.5)
    return block.train()


def _steps(block: nn.Module, inputs):
    """Two training steps (gradients accumulate); outputs and input gradients."""
    results = []
    for x in inputs:
        x = x.clone().requires_grad_(True)
        out = block(x)
        out.square().mean().backward()
        results.append((out.detach(), x.grad))
    return results


def _assert_trains_as_written(block: PyConvBottleneck, inputs) -> None:
    written = copy.deepcopy(block)
    written.cp_pyconv_input = False
    for (out, grad), (want_out, want_grad) in zip(_steps(block, inputs), _steps(written, inputs)):
        torch.testing.assert_close(out, want_out, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(grad, want_grad, rtol=1e-5, atol=1e-6)
    for (name, p), q in zip(written.named_parameters(), block.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-5, msg=name)
    # bn1: the statistics it computes itself; after the PyConv, its input within rounding
    # where the kernel applies bn1
    assert_same_buffers(written, block, lambda name: name.startswith('bn1'))


@pytest.mark.parametrize('policy', ['auto', 'native', 'dense', 'depthwise', 'direct',
                                    'direct_all'])
@pytest.mark.parametrize('stride', [1, 2])
@pytest.mark.parametrize('channels_last', [False, True])
def test_trains_as_the_modules_in_every_form(policy, stride, channels_last):
    """Each form of the levels (the kernel's on the grouped levels or on all, stock grouped,
    dense, depthwise) has its own backward here; all equal the modules as written, the first
    norm's running statistics bit for bit."""
    from pyconv_mm.ops import direct
    if policy.startswith('direct') and not direct.AVAILABLE:
        pytest.skip('our CPU kernel is not built or this CPU has no AVX-512')
    block = _block(stride)
    inputs = [torch.randn(2, 32, 20, 20) * 2 + 1 for _ in range(2)]
    if channels_last:
        block = block.to(memory_format=torch.channels_last)
        inputs = [x.contiguous(memory_format=torch.channels_last) for x in inputs]
    assert reduced_pyconv.usable(inputs[0], block.conv1, block.norm(1), block.relu, block.conv2)
    if policy == 'direct_all':  # the kernel on every level, the dense one too
        block.conv2._forms = lambda x: ['direct'] * len(block.conv2.levels)
        policy = 'auto'
    with algorithm_policy(policy):
        _assert_trains_as_written(block, inputs)
        out = block(inputs[0].clone().requires_grad_(True))
    assert '_ReducedPyConvBackward' in backward_nodes(out)


def test_cumulative_running_statistics_and_frozen_reduction():
    """``momentum=None`` (a cumulative average) counts batches as the module does; a frozen
    1x1 reduction gets no gradient while the rest trains."""
    block = _block(2, momentum=None)
    block.conv1.weight.requires_grad_(False)
    _assert_trains_as_written(block, [torch.randn(2, 32, 16, 16) for _ in range(3)])
    assert block.conv1.weight.grad is None
    assert int(block.norm(1).num_batches_tracked) == 3


def test_keeps_the_reduction_output_not_the_activated_tensors():
    """Forward keeps, at the block input's size, the input and the reduction's output (the
    first norm's input), not the activated tensor the PyConv reads; at the PyConv's output
    size, its output (the second norm's input), not the activated tensor the expansion reads
    (:mod:`pyconv_mm.ops.norm_relu_conv`). The modules as written keep both of each pair."""
    x = torch.randn(2, 32, 20, 20, requires_grad=True)
    block, outs = _block(2), []
    kept = kept_storages(lambda: outs.append(block(x)))
    assert kept[(2, 32, 20, 20)] == {x.untyped_storage().data_ptr()}
    assert len(kept[(2, 16, 20, 20)]) == 1 and len(kept[(2, 16, 10, 10)]) == 1
    assert {'_ReducedPyConvBackward', '_NormReluConvBackward'} <= set(backward_nodes(outs[0]))
    block.cp_pyconv_input = False
    written = kept_storages(lambda: block(x))
    assert len(written[(2, 16, 20, 20)]) == 2 and len(written[(2, 16, 10, 10)]) == 2


def test_hooks_and_other_norms_keep_the_checkpoint():
    """A hook on any of the modules (it must run) or a norm other than BatchNorm2d in
    training mode: the modules run under the checkpoint, as written."""
    block = _block(1)
    x = torch.randn(2, 32, 12, 12)
    assert reduced_pyconv.usable(x, block.conv1, block.norm(1), block.relu, block.conv2)
    seen = []
    handle = block.norm(1).register_forward_hook(lambda *args: seen.append(1))
    assert not reduced_pyconv.usable(x, block.conv1, block.norm(1), block.relu, block.conv2)
    _assert_trains_as_written(block, [x])
    assert seen  # the hook ran (in the checkpoint's forward and recomputation)
    assert '_ReducedPyConvBackward' not in backward_nodes(block(x.requires_grad_(True)))
    handle.remove()
    block.norm(1).eval()
    assert not reduced_pyconv.usable(x, block.conv1, block.norm(1), block.relu, block.conv2)
    with torch.no_grad():
        assert not reduced_pyconv.usable(x, block.conv1, block.norm(1).train(), block.relu,
                                         block.conv2)
