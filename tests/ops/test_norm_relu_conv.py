"""A batch norm, ReLU and convolution trained keeping the norm's input, not the convolution's
(:mod:`pyconv_mm.ops.norm_relu_conv`): the same outputs, gradients and running statistics as
the modules, and the modules wherever it does not apply."""
import copy

import pytest
import torch
from torch import nn

from conftest import assert_same_buffers, backward_nodes, kept_storages
from pyconv_mm.ops import batch_norm_act, norm_relu_conv

pytestmark = pytest.mark.skipif(not batch_norm_act.AVAILABLE,
                                reason='our CPU kernels are not built or this CPU has no AVX-512')


def _modules(conv: nn.Conv2d, momentum=0.1):
    torch.manual_seed(0)
    norm = nn.BatchNorm2d(conv.in_channels, momentum=momentum)
    nn.init.uniform_(norm.weight, 0.5, 1.5)  # affine parameters away from 1 / 0
    nn.init.uniform_(norm.bias, -0.5, 0.5)
    return norm.train(), nn.ReLU(inplace=True), conv


def _train(norm, relu, conv, inputs, fused: bool):
    """Two steps (gradients accumulate): outputs and input gradients."""
    results = []
    for y in inputs:
        y = y.clone().requires_grad_(True)
        out = norm_relu_conv.norm_relu_conv(y, norm, conv) if fused else conv(relu(norm(y)))
        (out.square().mean() + out.mean()).backward()
        results.append((out.detach(), y.grad, backward_nodes(out)))
    return results


@pytest.mark.parametrize('channels_last', [False, True])
@pytest.mark.parametrize('conv_args, momentum', [
    (dict(kernel_size=1), 0.1),  # a bottleneck's expansion
    (dict(kernel_size=3, stride=2, padding=1, groups=2), None),  # any plain Conv2d; momentum None
])
def test_trains_as_the_modules(channels_last, conv_args, momentum):
    """Outputs and the gradients of the input, the norm's and the convolution's parameters
    equal the modules' (1e-5), the running statistics too (our norm kernel sums in double:
    within rounding) and the batch counts."""
    modules = _modules(nn.Conv2d(32, 64, bias=False, **conv_args), momentum)
    reference = copy.deepcopy(modules)
    inputs = [torch.randn(2, 32, 14, 14) * 2 + 1 for _ in range(2)]
    if channels_last:
        modules, reference = ([m.to(memory_format=torch.channels_last) for m in group]
                              for group in (modules, reference))
        inputs = [y.contiguous(memory_format=torch.channels_last) for y in inputs]
    assert norm_relu_conv.usable(inputs[0], *modules)
    for (out, grad, nodes), (want_out, want_grad, _) in zip(_train(*modules, inputs, True),
                                                            _train(*reference, inputs, False)):
        assert '_NormReluConvBackward' in nodes
        torch.testing.assert_close(out, want_out, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(grad, want_grad, rtol=1e-5, atol=1e-6)
    for mine, theirs in zip(modules, reference):
        for (name, p), q in zip(theirs.named_parameters(), mine.parameters()):
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-5, msg=name)
    assert_same_buffers(nn.ModuleList(reference), nn.ModuleList(modules), lambda name: False)


def test_keeps_the_norm_input_not_the_activated_tensor():
    """Forward keeps one tensor of the input's shape (the input itself); the modules keep two
    (the norm's input and the ReLU's output, which the convolution reads)."""
    y = torch.randn(2, 32, 14, 14, requires_grad=True)
    norm, relu, conv = _modules(nn.Conv2d(32, 64, 1, bias=False))
    fused = kept_storages(lambda: norm_relu_conv.norm_relu_conv(y, norm, conv))
    assert fused[tuple(y.shape)] == {y.untyped_storage().data_ptr()}
    assert len(kept_storages(lambda: conv(relu(norm(y))))[tuple(y.shape)]) == 2


def test_not_usable_where_the_modules_must_run():
    """Hooks (they must run), a bias, string padding, a norm in eval mode or one our kernels
    do not take, no gradients recorded: the caller runs the modules."""
    y = torch.randn(2, 32, 14, 14)
    norm, relu, conv = _modules(nn.Conv2d(32, 64, 1, bias=False))
    assert norm_relu_conv.usable(y, norm, relu, conv)
    with torch.no_grad():
        assert not norm_relu_conv.usable(y, norm, relu, conv)
    handle = conv.register_forward_hook(lambda *args: None)
    assert not norm_relu_conv.usable(y, norm, relu, conv)
    handle.remove()
    assert not norm_relu_conv.usable(y, norm, relu, nn.Conv2d(32, 64, 1))
    assert not norm_relu_conv.usable(y, norm, relu, nn.Conv2d(32, 64, 3, padding='same',
                                                              bias=False))
    assert not norm_relu_conv.usable(y, norm, nn.LeakyReLU(), conv)
    assert not norm_relu_conv.usable(y, nn.BatchNorm2d(32).eval(), relu, conv)
    assert not norm_relu_conv.usable(y, nn.GroupNorm(4, 32), relu, conv)
