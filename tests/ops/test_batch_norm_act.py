"""Training batch norms with their ReLU and residual add in our kernels
(:mod:`pyconv_mm.ops.batch_norm_act`): the outputs, gradients and running statistics of the
modules (within float rounding), in NCHW and channels_last, and the modules themselves
wherever the kernels do not take the norm."""
import copy

import pytest
import torch
from torch import nn

from pyconv_mm.models.backbones.pyconv_blocks import PyConvBasicBlock, PyConvBottleneck
from pyconv_mm.ops import batch_norm_act
from conftest import (assert_same_buffers, assert_same_parameter_grads, backward_nodes,
                      step_against_switched_off, strided_block)

pytestmark = pytest.mark.skipif(not batch_norm_act.AVAILABLE,
                                reason='our CPU kernels are not built or this CPU has no AVX-512')

# 189 rows (not a multiple of the kernel's 64-row pieces), 63-element planes (not a multiple
# of 16 lanes)
SHAPE = (3, 32, 7, 9)


def _norm(momentum=0.1) -> nn.BatchNorm2d:
    torch.manual_seed(1)
    norm = nn.BatchNorm2d(SHAPE[1], momentum=momentum)
    nn.init.uniform_(norm.weight, -1.5, 1.5)  # negative scales flip the ReLU's side
    nn.init.uniform_(norm.bias, -0.5, 0.5)
    norm.running_mean.uniform_(-1, 1)
    norm.running_var.uniform_(0.5, 2)
    return norm.train()


def _as_modules(x, norm, relu, residual):
    out = norm(x)
    if residual is not None:
        out = out + residual
    return out.relu() if relu else out


@pytest.mark.parametrize('channels_last', [False, True])
@pytest.mark.parametrize('relu', [False, True])
@pytest.mark.parametrize('with_residual', [False, True])
@pytest.mark.parametrize('momentum', [0.1, None])
def test_norm_act_equals_the_modules(channels_last, relu, with_residual, momentum):
    """Output, gradients of the input, weight, bias and residual, running statistics and the
    batch count, over two steps (a mean far from zero: the statistics are not cancelled
    away)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    ours, theirs = _norm(momentum), _norm(momentum)
    torch.manual_seed(2)
    for step in range(2):
        x = (torch.randn(SHAPE) * 3 + 20).contiguous(memory_format=fmt)
        residual = torch.randn(SHAPE).contiguous(memory_format=fmt) if with_residual else None
        grad = torch.randn(SHAPE).contiguous(memory_format=fmt)
        inputs = [t.clone().requires_grad_() if t is not None else None for t in (x, residual)]
        want_inputs = [t.clone().requires_grad_() if t is not None else None
                       for t in (x, residual)]
        want = _as_modules(want_inputs[0], theirs, relu, want_inputs[1])
        # the premise of a comparison of gradients: no value within rounding of the ReLU's
        # threshold, where two implementations may decide either way
        with torch.no_grad():
            before_relu = _as_modules(x, copy.deepcopy(theirs), False, residual)
        assert not relu or before_relu.abs().min() > 2e-6
        assert batch_norm_act.usable(inputs[0], ours, inputs[1])
        got = batch_norm_act.norm_act(inputs[0], ours, nn.ReLU() if relu else None, inputs[1])
        assert '_NormActBackward' in backward_nodes(got)
        assert got.is_contiguous(memory_format=fmt)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        got.backward(grad)
        want.backward(grad)
        for mine, reference in zip(inputs, want_inputs):
            if reference is not None:
                torch.testing.assert_close(mine.grad, reference.grad, rtol=1e-5, atol=1e-5)
        # sums over the batch of magnitude ~10: ATen adds them up in float, we in double
        for name in ('weight', 'bias'):
            torch.testing.assert_close(getattr(ours, name).grad, getattr(theirs, name).grad,
                                       rtol=1e-5, atol=5e-5, msg=name)
    assert_same_buffers(theirs, ours, lambda name: False)
    assert int(ours.num_batches_tracked) == 2


def _step_against_the_modules(shape, fmt, relu: bool, ours: nn.BatchNorm2d,
                              theirs: nn.BatchNorm2d, parameters: bool = True) -> None:
    """One step of ``norm_act`` with a residual on random (N, C, H, W) data of ``shape`` in
    ``fmt`` against the modules: output, and gradients of the input, the residual and (with
    ``parameters``) the weight and the bias. ATen sums the parameters' gradients in float,
    we in double: over many elements they part by more than rounding allows."""
    x, residual, grad = (torch.randn(shape).contiguous(memory_format=fmt) for _ in range(3))
    inputs = [t.clone().requires_grad_() for t in (x, residual)]
    want_inputs = [t.clone().requires_grad_() for t in (x, residual)]
    got = batch_norm_act.norm_act(inputs[0], ours, nn.ReLU() if relu else None, inputs[1])
    want = _as_modules(want_inputs[0], theirs, relu, want_inputs[1])
    assert '_NormActBackward' in backward_nodes(got)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    got.backward(grad)
    want.backward(grad)
    for mine, reference in zip(inputs, want_inputs):
        torch.testing.assert_close(mine.grad, reference.grad, rtol=1e-5, atol=1e-5)
    if parameters:  # sums of magnitude ~10: 5e-5 absolute, as test_norm_act_equals_the_modules
        for name in ('weight', 'bias'):
            torch.testing.assert_close(getattr(ours, name).grad, getattr(theirs, name).grad,
                                       rtol=1e-5, atol=5e-5, msg=name)


@pytest.mark.parametrize('channels', [16, 128, 144, 256])
def test_channels_last_rows_of_any_width_equal_the_modules(channels):
    """Channels_last rows of up to 128 channels sum their statistics in registers, wider
    rows in memory: both give the modules' output, gradients (input, residual, weight, bias)
    and running statistics."""
    torch.manual_seed(4)
    ours, theirs = nn.BatchNorm2d(channels).train(), nn.BatchNorm2d(channels).train()
    for norm in (ours, theirs):
        norm.weight.data = torch.linspace(0.5, 1.5, channels)
        norm.bias.data = torch.linspace(-0.5, 0.5, channels)
    # 198 rows: three pieces of 64 and a ragged one
    _step_against_the_modules((2, channels, 9, 11), torch.channels_last, True, ours, theirs)
    assert_same_buffers(theirs, ours, lambda name: False)


@pytest.mark.parametrize('channels_last', [False, True])
def test_outputs_of_8_mib_and_more_equal_the_modules(channels_last):
    """Outputs from 8 MiB on are stored non-temporally (whole aligned vectors; NCHW planes of
    16900 elements start off the 64-byte grid, so those go both ways): the output and the
    gradients of the input and the residual as the modules give them."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    shape = (2, 64, 130, 130)  # 2.16 M floats
    assert shape[0] * shape[1] * shape[2] * shape[3] * 4 >= 8 << 20
    torch.manual_seed(3)
    _step_against_the_modules(shape, fmt, False, nn.BatchNorm2d(64).train(),
                              nn.BatchNorm2d(64).train(), parameters=False)


def test_results_do_not_depend_on_the_number_of_threads():
    """Pieces of fixed size summed in order: bit for bit the same with 1 and 2 threads."""
    x = torch.randn(4, 64, 30, 30).contiguous(memory_format=torch.channels_last)
    grad = torch.randn_like(x)
    threads = torch.get_num_threads()
    results = []
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            norm = nn.BatchNorm2d(64).train()
            x_leaf = x.clone().requires_grad_()
            out = batch_norm_act.norm_act(x_leaf, norm, nn.ReLU())
            out.backward(grad)
            results.append((out, x_leaf.grad, norm.weight.grad, norm.running_var))
    finally:
        torch.set_num_threads(threads)
    for first, second in zip(*results):
        assert torch.equal(first, second)


def test_the_modules_run_where_the_kernels_do_not_take_the_norm():
    """Eval mode, no running statistics, a subclass (it may compute otherwise), hooks,
    another activation, 8 channels in channels_last, float64, no gradient recorded, or turned
    off: the modules as written (bit for bit)."""
    x = torch.randn(SHAPE)
    cases = []
    norm = _norm().eval()
    cases.append((x, norm, nn.ReLU()))
    cases.append((x, nn.BatchNorm2d(SHAPE[1], track_running_stats=False), nn.ReLU()))
    cases.append((x, type('OwnBatchNorm', (nn.BatchNorm2d, ), {})(SHAPE[1]), None))
    hooked = _norm()
    hooked.register_forward_hook(lambda *args: None)
    cases.append((x, hooked, nn.ReLU()))
    cases.append((x, _norm(), nn.GELU()))
    cases.append((torch.randn(2, 8, 5, 5).contiguous(memory_format=torch.channels_last),
                  nn.BatchNorm2d(8), nn.ReLU()))
    cases.append((x.double(), _norm().double(), nn.ReLU()))
    for inputs, norm, act in cases:
        reference = copy.deepcopy(norm)
        want = reference(inputs) if act is None else act(reference(inputs))
        got = batch_norm_act.norm_act(inputs.clone().requires_grad_(), norm, act)
        assert '_NormActBackward' not in backward_nodes(got)
        assert torch.equal(got, want)
    with torch.no_grad():
        assert not batch_norm_act.usable(x, _norm())
    batch_norm_act.set_enabled(False)
    try:
        assert not batch_norm_act.usable(x, _norm())
    finally:
        batch_norm_act.set_enabled(True)
    assert batch_norm_act.usable(x, _norm())


@pytest.mark.parametrize('block_type', [PyConvBottleneck, PyConvBasicBlock])
@pytest.mark.parametrize('channels_last', [False, True])
@pytest.mark.parametrize('with_cp', [False, True])
def test_blocks_train_as_with_the_modules(block_type, channels_last, with_cp):
    """A strided block with its shortcut (pool, conv, norm) trains as with ATen's norms:
    outputs, input and parameter gradients, running statistics (two steps)."""
    torch.manual_seed(0)
    block = strided_block(block_type, 64 if block_type is PyConvBottleneck else 32, with_cp)
    for module in block.modules():
        if isinstance(module, nn.BatchNorm2d):
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.uniform_(module.bias, -0.5, 0.5)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    block = block.to(memory_format=fmt)
    reference = copy.deepcopy(block)
    for step in range(2):
        x = torch.randn(2, 32, 12, 12).contiguous(memory_format=fmt)
        out, want = step_against_switched_off(block, reference, x, batch_norm_act.set_enabled)
        assert '_NormActBackward' not in backward_nodes(want)
        if not with_cp:  # (under the checkpoint the nodes are recorded in backward)
            assert '_NormActBackward' in backward_nodes(out)
    assert_same_parameter_grads(reference, block)
    assert_same_buffers(reference, block, lambda name: False)
