"""The index-free max pools equal the stock ones (outputs and gradients) and keep no int64
indices."""
import pytest
import torch
from torch import nn

from conftest import needs_direct_kernel
from pyconv_mm.ops.pool import IndexFreeMaxPool2d, IndexFreeMaxPool3d

CASES = [
    (IndexFreeMaxPool2d, nn.MaxPool2d, (2, 8, 13, 11), dict(kernel_size=3, stride=2, padding=1)),
    (IndexFreeMaxPool2d, nn.MaxPool2d, (2, 8, 9, 9), dict(kernel_size=3, stride=1, padding=1)),
    (IndexFreeMaxPool3d, nn.MaxPool3d, (2, 4, 5, 9, 7),
     dict(kernel_size=(3, 3, 3), stride=(2, 2, 2), padding=(1, 1, 1))),
    (IndexFreeMaxPool3d, nn.MaxPool3d, (1, 4, 4, 8, 8),
     dict(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))),
]


def _saved_dtypes(fn, x):
    dtypes = []

    def pack(t):
        dtypes.append(t.dtype)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn(x)
    return out, dtypes


@pytest.mark.parametrize('channels_last', [False, True])
@pytest.mark.parametrize('ours,stock,shape,window', CASES)
def test_index_free_pool_matches_the_stock_pool(ours, stock, shape, window, channels_last):
    torch.manual_seed(0)
    x = torch.randn(shape)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last if x.dim() == 4
                         else torch.channels_last_3d)
    x_ours, x_stock = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_ours, saved = _saved_dtypes(ours(**window), x_ours)
    y_stock = stock(**window)(x_stock)
    grad = torch.randn_like(y_stock)
    y_ours.backward(grad)
    y_stock.backward(grad)
    assert torch.equal(y_ours, y_stock)
    assert torch.equal(x_ours.grad, x_stock.grad)
    assert saved == [torch.float32], 'only the input is kept for backward, no int64 indices'


@needs_direct_kernel
@pytest.mark.parametrize('stride', [1, 2])
def test_one_frame_windows_pool_the_frames_of_clips_in_the_kernel(stride):
    """A 1x3x3 window over channels_last_3d clips (PyConvResNet3D's shortcuts in stages 1-2)
    runs as the kernel's 2D pool over their frames, keeping a byte per output: outputs and
    gradients (of any layout) equal ``nn.MaxPool3d``'s bit for bit, in training and
    inference."""
    window = dict(kernel_size=(1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1))
    torch.manual_seed(0)
    x = torch.randn(2, 32, 3, 9, 10).contiguous(memory_format=torch.channels_last_3d)
    x_ours, x_stock = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_ours, saved = _saved_dtypes(IndexFreeMaxPool3d(**window), x_ours)
    y_stock = nn.MaxPool3d(**window)(x_stock)
    grad = torch.randn_like(y_stock).contiguous()
    y_ours.backward(grad)
    y_stock.backward(grad)
    assert torch.equal(y_ours, y_stock) and torch.equal(x_ours.grad, x_stock.grad)
    assert saved == [torch.uint8]
    assert y_ours.is_contiguous(memory_format=torch.channels_last_3d)
    assert x_ours.grad.is_contiguous(memory_format=torch.channels_last_3d)
    with torch.no_grad():
        assert torch.equal(IndexFreeMaxPool3d(**window)(x), y_stock)


def test_index_free_pool_falls_back_where_it_does_not_apply():
    x = torch.randn(1, 2, 8, 8, requires_grad=True)
    with torch.no_grad():  # nothing to save
        assert torch.equal(IndexFreeMaxPool2d(3, 2, 1)(x), nn.MaxPool2d(3, 2, 1)(x))
    for kwargs in (dict(dilation=2), dict(ceil_mode=True)):  # windows it does not rebuild
        ours, stock = IndexFreeMaxPool2d(3, 2, 1, **kwargs), nn.MaxPool2d(3, 2, 1, **kwargs)
        assert torch.equal(ours(x), stock(x))
        assert torch.equal(torch.autograd.grad(ours(x).sum(), x)[0],
                           torch.autograd.grad(stock(x).sum(), x)[0])


def test_pyconvresnet_keeps_no_pool_indices_for_backward():
    """The shortcut pools of every stage save their (already saved) input, not int64 indices."""
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS

    import pyconv_mm  # noqa: F401
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        backbone = MODELS.build(dict(type='PyConvResNet', depth=50)).train()
    pools = [m for m in backbone.modules() if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == 4 and all(isinstance(m, IndexFreeMaxPool2d) for m in pools)
    outs, saved = _saved_dtypes(backbone, torch.randn(1, 3, 64, 64))
    assert torch.int64 not in saved
    sum(o.sum() for o in outs).backward()
    assert all(p.grad is not None for p in backbone.parameters())


@needs_direct_kernel
@pytest.mark.parametrize('window', [
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=2, stride=2, padding=0),
    dict(kernel_size=3, stride=1, padding=1),
    dict(kernel_size=(3, 5), stride=(2, 3), padding=(1, 2)),
    dict(kernel_size=1, stride=3, padding=0),  # rows and columns no window reaches
])
@pytest.mark.parametrize('values', ['random', 'ties', 'nan'])
@pytest.mark.parametrize('channels', [32, 64, 128])  # 64, 128: 4 and 8 blocks of 16 at a time
def test_kernel_pool_equals_the_stock_pool_bit_for_bit(window, values, channels, monkeypatch):
    """On CPU channels_last inputs of whole 16-channel blocks our kernel pools and keeps one
    byte per output element, the maximum's position in its window; its backward pass gives the
    stock pool's gradient to the bit, with tied maxima (the first in the window wins,
    gradients of windows sharing one are summed) and NaNs."""
    from pyconv_mm.ops import direct
    torch.manual_seed(0)
    x = torch.randn(2, channels, 13, 10)
    if values == 'ties':
        x = torch.randint(0, 3, x.shape).float()
    elif values == 'nan':
        x[0, 3, 4, 5] = x[1, 20, 0, 0] = x[1, 20, 0, 1] = float('nan')
    x = x.contiguous(memory_format=torch.channels_last)
    calls = []
    original = direct.max_pool2d_grad

    def counted(*args):
        calls.append(original(*args))
        return calls[-1]

    monkeypatch.setattr(direct, 'max_pool2d_grad', counted)
    x_ours, x_stock = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_ours, saved = _saved_dtypes(IndexFreeMaxPool2d(**window), x_ours)
    y_stock = nn.MaxPool2d(**window)(x_stock)
    grad = torch.randn_like(y_stock).contiguous()  # an NCHW gradient is taken too
    y_ours.backward(grad)
    y_stock.backward(grad)
    assert saved == [torch.uint8], 'one byte per output element, no input, no int64 indices'
    assert len(calls) == 1, 'the kernel ran'
    assert torch.equal(y_ours.nan_to_num(), y_stock.nan_to_num())
    assert y_ours.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(x_ours.grad, x_stock.grad)
    assert x_ours.grad.is_contiguous(memory_format=torch.channels_last)
    inference, original_pool = [], direct.max_pool2d
    monkeypatch.setattr(direct, 'max_pool2d',
                        lambda *args: inference.append(args) or original_pool(*args))
    with torch.no_grad():  # inference: the kernel's pool without positions
        assert torch.equal(IndexFreeMaxPool2d(**window)(x).nan_to_num(), y_stock.nan_to_num())
    assert len(inference) == 1


@needs_direct_kernel
def test_kernel_pool_gradients_of_8_mib_and_more_equal_the_stock_ones():
    """Input gradients of 8 MiB and more leave the kernel in non-temporal stores
    (csrc/streaming.h): still the stock pool's gradient to the bit."""
    torch.manual_seed(0)
    x = torch.randn(2, 64, 130, 130).contiguous(memory_format=torch.channels_last)
    assert x.numel() * 4 >= 8 << 20
    x_ours, x_stock = x.clone().requires_grad_(), x.clone().requires_grad_()
    window = dict(kernel_size=3, stride=2, padding=1)
    y_ours, y_stock = IndexFreeMaxPool2d(**window)(x_ours), nn.MaxPool2d(**window)(x_stock)
    grad = torch.randn_like(y_stock)
    y_ours.backward(grad)
    y_stock.backward(grad)
    assert torch.equal(x_ours.grad, x_stock.grad)


@needs_direct_kernel
def test_kernel_pool_leaves_other_inputs_to_the_stock_pool_and_checks_its_own():
    from pyconv_mm.ops import direct
    assert not direct.pool_usable(torch.randn(2, 32, 8, 8))  # NCHW
    assert not direct.pool_usable(  # 24 channels: not whole 16-channel blocks
        torch.randn(2, 24, 8, 8).contiguous(memory_format=torch.channels_last))
    window = ([3, 3], [2, 2], [1, 1])
    x = torch.randn(1, 16, 8, 8).contiguous(memory_format=torch.channels_last)
    _, positions = direct.max_pool2d_with_positions(x, *window)
    with pytest.raises(RuntimeError, match=r'does not match the input size \(9, 8\)'):
        direct.max_pool2d_grad(positions, torch.randn(1, 16, 4, 4), (9, 8), *window)
    with pytest.raises(RuntimeError, match='do not match the gradient'):
        direct.max_pool2d_grad(positions, torch.randn(1, 16, 3, 3), (8, 8), *window)
    with pytest.raises(RuntimeError, match='bad window'):
        direct.max_pool2d_with_positions(x, [3, 3], [2, 2], [2, 1])
