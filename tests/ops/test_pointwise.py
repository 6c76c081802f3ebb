"""1x1 convolutions trained with their weight gradient by our kernel
(:mod:`pyconv_mm.ops.pointwise`): the stock backward's gradients within float rounding, the
module as written wherever it does not apply, and clear errors for input the kernel cannot
take."""
import copy

import pytest
import torch
from torch import nn

from pyconv_mm.models.backbones.pyconv_blocks import PyConvBasicBlock, PyConvBottleneck
from pyconv_mm.ops import pointwise
from conftest import assert_same_parameter_grads, step_against_switched_off, strided_block

pytestmark = pytest.mark.skipif(not pointwise.AVAILABLE,
                                reason='our CPU kernels are not built or this CPU has no AVX-512')


def _channels_last(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous(memory_format=torch.channels_last if t.dim() == 4
                        else torch.channels_last_3d)


def _stock_weight_grad(x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    weight = torch.empty(grad.shape[1], x.shape[1], *[1] * (x.dim() - 2))
    return torch.ops.aten.convolution_backward(
        grad, x, weight, None, [1] * (x.dim() - 2), [0] * (x.dim() - 2), [1] * (x.dim() - 2),
        False, [0] * (x.dim() - 2), 1, [False, True, False])[1]


@pytest.mark.parametrize('in_channels, out_channels, spatial, threads', [
    (64, 64, (2, 30, 28), 2),  # pixels split between threads (a small weight), 128-pixel chunks
    (48, 13, (3, 5, 7), 2),  # a last 16-channel input vector; 12 + 1 output rows
    (16, 28, (1, 1, 1), 2),  # one pixel: fewer pixels than threads; 12 + 12 + 4 rows
    (32, 5, (2, 9, 9), 1),  # one thread: 4 + 1 rows
    (512, 300, (2, 7, 7), 2),  # output channels split between threads (a large weight)
    (1024, 130, (1, 3, 3), 3),  # three threads, channels split 44 / 44 / 42
])
@pytest.mark.parametrize('dims', [4, 5])
def test_weight_grad_matches_the_stock_backward(in_channels, out_channels, spatial, threads,
                                                dims):
    torch.manual_seed(0)
    shape = spatial if dims == 5 else (spatial[0], spatial[1] * spatial[2])
    batch = 2
    x = _channels_last(torch.randn(batch, in_channels, *shape))
    grad = _channels_last(torch.randn(batch, out_channels, *shape))
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got = pointwise.weight_grad(x, grad)
    finally:
        torch.set_num_threads(before)
    expected = _stock_weight_grad(x, grad)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())


@pytest.mark.parametrize('in_channels, out_channels, spatial', [
    (512, 272, (1, 9, 9)),  # a large weight over 162 pixels: one chunk
    (512, 272, (1, 25, 27)),  # 1350 pixels: three even chunks of 450
    (512, 272, (1, 33, 32)),  # 2112 pixels (over 2048): chunks of 128 as for a small weight
])
def test_weight_grad_of_a_large_weight_over_few_pixels(in_channels, out_channels, spatial):
    """Where the output channels are split between threads (a weight of more than 128 K
    floats) over at most 2048 pixels (stages 3 and 4 of PyConvHGResNet at 224x224), the
    pixels go in even chunks of at most 512: the stock backward's gradient within fp32
    rounding."""
    torch.manual_seed(1)
    x = _channels_last(torch.randn(2, in_channels, spatial[1], spatial[2]))
    grad = _channels_last(torch.randn(2, out_channels, spatial[1], spatial[2]))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        got = pointwise.weight_grad(x, grad)
    finally:
        torch.set_num_threads(before)
    expected = _stock_weight_grad(x, grad)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())


def _pair(conv_args: dict, dims: int = 2):
    torch.manual_seed(0)
    conv_cls = nn.Conv2d if dims == 2 else nn.Conv3d
    conv = conv_cls(**conv_args)
    reference = conv_cls(**conv_args)
    reference.load_state_dict(conv.state_dict())
    return conv, reference


def _step(run, module, x):
    x = x.clone().requires_grad_(True)
    module.zero_grad(set_to_none=True)
    out = run(module, x)
    (out.square().mean() + out.mean()).backward()
    return out.detach(), x.grad, module.weight.grad


@pytest.mark.parametrize('dims', [2, 3])
def test_conv_trains_as_the_module_with_our_weight_gradient(dims, monkeypatch):
    conv, reference = _pair(dict(in_channels=32, out_channels=24, kernel_size=1, bias=False),
                            dims)
    x = _channels_last(torch.randn(2, 32, *(3, 6, 5)[3 - dims:]))
    assert pointwise.usable(x, conv)
    calls = []
    kernel = pointwise.weight_grad
    monkeypatch.setattr(pointwise, 'weight_grad',
                        lambda *args: calls.append(1) or kernel(*args))
    out, grad_x, grad_w = _step(pointwise.conv, conv, x)
    expected = _step(lambda module, data: module(data), reference, x)
    assert calls == [1]  # the weight's gradient came from our kernel
    torch.testing.assert_close(out, expected[0])
    torch.testing.assert_close(grad_x, expected[1])
    torch.testing.assert_close(grad_w, expected[2], rtol=1e-5, atol=1e-6)
    assert grad_w.shape == conv.weight.shape


@pytest.mark.parametrize('size', [(7, 7), (1, 3), (8, 8), (9, 12)])
def test_small_images_run_the_forward_as_one_row_of_pixels(size, monkeypatch):
    """A channels_last input whose images have fewer than 64 pixels (stage 4's 7x7) runs its
    1x1 forward as one image of all the batch's pixels: output (channels_last, as the
    module's), input and weight gradients as the module's within fp32 rounding; 64 pixels
    and more run as they are."""
    conv, reference = _pair(dict(in_channels=64, out_channels=48, kernel_size=1, bias=False))
    x = _channels_last(torch.randn(3, 64, *size))
    rows = []
    as_one_row = pointwise._as_one_row
    monkeypatch.setattr(pointwise, '_as_one_row', lambda t: rows.append(t.shape) or as_one_row(t))
    out, grad_x, grad_w = _step(pointwise.conv, conv, x)
    expected = _step(lambda module, data: module(data), reference, x)
    assert rows == ([x.shape] if size[0] * size[1] < 64 else [])
    assert out.shape == expected[0].shape and out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, expected[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad_x, expected[1], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad_w, expected[2], rtol=1e-5, atol=1e-6)
    nchw = x.contiguous()  # other layouts run as they are
    torch.testing.assert_close(pointwise.forward(nchw, conv.weight.detach()),
                               reference(nchw).detach(), rtol=1e-5, atol=1e-6)
    assert len(rows) == (1 if size[0] * size[1] < 64 else 0)


@pytest.mark.parametrize('size', [(7, 7), (8, 8)])
def test_output_takes_an_inplace_activation(size):
    """The output is a tensor of its own (not a view autograd would forbid modifying in
    place), so an inplace ReLU may follow the convolution, as in ``Sequential(conv, ReLU(True))``:
    gradients as the module's."""
    conv, reference = _pair(dict(in_channels=32, out_channels=16, kernel_size=1, bias=False))
    x = _channels_last(torch.randn(2, 32, *size))
    views = []

    def conv_then_relu(module, data):
        out = pointwise.conv(module, data)
        views.append(out._is_view())
        return out.relu_()

    out, grad_x, grad_w = _step(conv_then_relu, conv, x)
    expected = _step(lambda module, data: module(data).relu_(), reference, x)
    assert views == [False]
    for got, want in zip((out, grad_x, grad_w), expected):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('block_type', [PyConvBottleneck, PyConvBasicBlock])
@pytest.mark.parametrize('with_cp', [False, True])
def test_blocks_train_as_with_the_stock_backward(block_type, with_cp, monkeypatch):
    """A strided channels-last block with its projection shortcut trains as with the stock
    1x1 backward (two steps): outputs, input and parameter gradients; our kernel ran for each
    of its 1x1 convolutions."""
    torch.manual_seed(0)
    bottleneck = block_type is PyConvBottleneck
    # channels change: the shortcut has its 1x1
    block = strided_block(block_type, 64 if bottleneck else 48, with_cp)
    block = block.to(memory_format=torch.channels_last)
    reference = copy.deepcopy(block)
    calls = []
    kernel = pointwise.weight_grad
    monkeypatch.setattr(pointwise, 'weight_grad', lambda *args: calls.append(1) or kernel(*args))
    for _ in range(2):
        step_against_switched_off(block, reference, _channels_last(torch.randn(2, 32, 12, 12)),
                                  pointwise.set_enabled)
    # conv1 and conv3 (a bottleneck) or conv2 (a basic block), and the shortcut's projection
    assert len(calls) == 2 * (3 if bottleneck else 2)
    assert_same_parameter_grads(reference, block)


@pytest.mark.parametrize('case', ['bias', 'stride', 'padding', 'kernel', 'groups', 'channels',
                                  'nchw', 'no_grad', 'frozen', 'hook', 'disabled', 'float64'])
def test_conv_runs_the_module_as_written_elsewhere(case):
    args = dict(in_channels=32, out_channels=16, kernel_size=1, bias=False)
    args.update(dict(bias=dict(bias=True), stride=dict(stride=2), padding=dict(padding=1),
                     kernel=dict(kernel_size=3), groups=dict(groups=2),
                     channels=dict(in_channels=24)).get(case, {}))
    conv, reference = _pair(args)
    x = torch.randn(2, args['in_channels'], 6, 6)
    if case != 'nchw':
        x = _channels_last(x)
    if case == 'float64':
        conv, reference, x = conv.double(), reference.double(), x.double()
    x.requires_grad_(True)
    if case == 'frozen':
        conv.weight.requires_grad_(False)
    if case == 'hook':
        seen = []
        conv.register_forward_hook(lambda *_: seen.append(1))
    if case == 'disabled':
        pointwise.set_enabled(False)
    try:
        if case == 'no_grad':
            with torch.no_grad():
                assert not pointwise.usable(x, conv)
                torch.testing.assert_close(pointwise.conv(conv, x), reference(x))
            return
        assert not pointwise.usable(x, conv)
        out = pointwise.conv(conv, x)
        assert out.grad_fn is not None and 'Pointwise' not in type(out.grad_fn).__name__
        if case == 'hook':
            assert seen == [1]  # the module ran, with its hooks
        torch.testing.assert_close(out, reference(x))
    finally:
        pointwise.set_enabled(True)


def test_backward_takes_any_output_gradient_layout_and_only_what_is_asked():
    """A function doing its own backward gets our weight gradient for a channels-last input
    whatever the output gradient's layout (an NCHW one is copied to channels-last), the stock
    one for an NCHW input, and only the gradients it asks for."""
    torch.manual_seed(0)
    conv = nn.Conv2d(32, 16, 1, bias=False)
    x = torch.randn(2, 32, 5, 5)
    grad = torch.randn(2, 16, 5, 5)  # NCHW
    for data, takes in ((_channels_last(x), True), (x, False)):
        assert pointwise.takes(data, _channels_last(grad)) == takes
        grad_x, grad_w = pointwise.backward(conv, data, conv.weight, grad, False, True)
        assert grad_x is None
        torch.testing.assert_close(grad_w, _stock_weight_grad(x, grad), rtol=1e-5, atol=1e-6)
    grad_x, grad_w = pointwise.backward(conv, _channels_last(x), conv.weight, grad, True, False)
    assert grad_w is None and grad_x.shape == x.shape


@pytest.mark.parametrize('x_shape, grad_shape, layout, match', [
    ((2, 24, 4, 4), (2, 8, 4, 4), 'channels_last', 'multiple of 16, got 24'),
    ((2, 32, 4, 4), (2, 8, 4, 5), 'channels_last', 'differ outside the channel dimension'),
    ((2, 32, 4, 4), (3, 8, 4, 4), 'channels_last', 'differ outside the channel dimension'),
    ((2, 32, 4, 4), (2, 8, 4, 4), 'nchw', 'dense in channels-last memory format'),
    ((2, 32, 4), (2, 8, 4), 'nchw', 'must both be 4D or 5D'),
])
def test_weight_grad_names_what_it_cannot_take(x_shape, grad_shape, layout, match):
    x, grad = torch.randn(x_shape), torch.randn(grad_shape)
    if layout == 'channels_last':
        x, grad = _channels_last(x), _channels_last(grad)
    with pytest.raises(RuntimeError, match=match):
        pointwise.weight_grad(x, grad)
    with pytest.raises(RuntimeError, match='float32'):
        pointwise.weight_grad(_channels_last(torch.randn(2, 32, 4, 4)).double(),
                              _channels_last(torch.randn(2, 8, 4, 4)).double())
