"""PyConv equals separate convolutions concatenated, on random shapes (hypothesis)."""
import contextlib

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from conftest import needs_direct_kernel
from pyconv_mm.ops import PyConv2d, PyConv3d, divisors


def reference(x: torch.Tensor, conv, weights) -> torch.Tensor:
    """Each level as its own functional convolution, concatenated: the definition of PyConv."""
    op = F.conv2d if x.dim() == 4 else F.conv3d
    outs = [op(x, w, None, conv.stride, lvl.padding, lvl.dilation, lvl.groups)
            for lvl, w in zip(conv.pyramid, weights)]
    return torch.cat(outs, 1)


@st.composite
def pyconv_cases(draw, ndim=2):
    n_levels = draw(st.integers(1, 4))
    in_channels = draw(st.sampled_from([4, 8, 12, 16, 32]))
    widths = [draw(st.sampled_from([2, 4, 8])) for _ in range(n_levels)]
    groups = [draw(st.sampled_from([g for g in divisors(in_channels) if w % g == 0]))
              for w in widths]
    kernels = [draw(st.sampled_from([1, 3, 5, 7])) for _ in range(n_levels)]
    if ndim == 3:
        kernels = [(draw(st.sampled_from([1, 3])), k, k) for k in kernels]
    dilation = draw(st.sampled_from([1, 2]))
    stride = draw(st.sampled_from([1, 2]))
    spatial = [draw(st.integers(5, 11)) for _ in range(ndim)]
    batch = draw(st.integers(1, 2))
    return dict(in_channels=in_channels, out_channels=widths, kernel_sizes=kernels,
                groups=groups, dilations=dilation, stride=stride), (batch, in_channels, *spatial)


DEVICES = ['cpu', pytest.param('cuda', marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason='needs a CUDA GPU'))]


@contextlib.contextmanager
def exact_fp32(device):
    """TF32 off on CUDA while comparing forms in fp32 (TF32 rounds to 1e-3)."""
    saved = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False if device == 'cuda' else saved
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = saved


def check_equivalence(conv, shape, dtype=torch.float32, channels_last=False, device='cpu'):
    torch.manual_seed(0)
    conv = conv.to(device=device, dtype=dtype)
    x = torch.randn(shape, dtype=dtype, device=device)
    if channels_last:
        conv = conv.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    x_ref = x.detach().clone().requires_grad_(True)
    x.requires_grad_(True)
    weights = [lvl.weight.detach().clone().requires_grad_(True) for lvl in conv.levels]
    out, expected = conv(x), reference(x_ref, conv, weights)
    rel = 1e-5 if dtype == torch.float32 else 2e-2

    def close(actual, wanted):  # relative 1e-5 (fp32), measured against the tensor's scale
        torch.testing.assert_close(actual, wanted, rtol=rel,
                                   atol=rel * max(wanted.abs().max().item(), 1e-3))

    close(out, expected)
    grad = torch.randn_like(out)
    out.backward(grad)
    expected.backward(grad)
    close(x.grad, x_ref.grad)
    for lvl, w in zip(conv.levels, weights):
        close(lvl.weight.grad, w.grad)
    return out


ALGORITHMS = ['auto', 'native', 'dense', 'depthwise']  # every way of computing a level


@contextlib.contextmanager
def algorithm_policy(policy):
    from pyconv_mm.ops import set_algorithm
    set_algorithm(policy)
    try:
        yield
    finally:
        set_algorithm('auto')


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('algorithm', ALGORITHMS)
@settings(max_examples=25, deadline=None, derandomize=True)
@given(case=pyconv_cases(), channels_last=st.booleans(), bf16=st.booleans())
def test_pyconv2d_matches_separate_convs(device, algorithm, case, channels_last, bf16):
    kwargs, shape = case
    conv = PyConv2d(**kwargs)
    with algorithm_policy(algorithm), exact_fp32(device):
        out = check_equivalence(conv, shape, torch.bfloat16 if bf16 else torch.float32,
                                channels_last, device)
    stride = kwargs['stride']
    assert out.shape == (shape[0], sum(kwargs['out_channels']),
                         *[(s + stride - 1) // stride for s in shape[2:]])


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('algorithm', ALGORITHMS)
@settings(max_examples=10, deadline=None, derandomize=True)
@given(case=pyconv_cases(ndim=3))
def test_pyconv3d_matches_separate_convs(device, algorithm, case):
    kwargs, shape = case
    with algorithm_policy(algorithm), exact_fp32(device):
        check_equivalence(PyConv3d(**kwargs), shape, device=device)


def test_paper_pyramid_shapes_and_params():
    conv = PyConv2d(64, 64, [3, 5, 7, 9], [1, 4, 8, 16], stride=2)
    assert conv(torch.randn(2, 64, 56, 56)).shape == (2, 64, 28, 28)
    # Section 3, Eq. 1: each level costs FMi / G * K^2 * FMo_i weights
    assert sum(p.numel() for p in conv.parameters()) == 64 * 16 * (9 + 25 / 4 + 49 / 8 + 81 / 16)
    assert '9x9/G16->16' in repr(conv)


def test_total_out_channels_and_bias():
    conv = PyConv2d(16, 32, [3, 5, 7], [1, 4, 8], shares=[0.25, 0.25, 0.5], bias=True)
    assert [lvl.out_channels for lvl in conv.levels] == [8, 8, 16]
    assert all(lvl.bias is not None for lvl in conv.levels)


def test_registered_in_mmengine_root():
    import pyconv_mm  # noqa: F401
    from mmengine.registry import MODELS
    conv = MODELS.build(dict(type='PyConv2d', in_channels=8, out_channels=8,
                             kernel_sizes=[3, 5], groups=[1, 2]))
    assert isinstance(conv, PyConv2d)
    assert MODELS.get('PyConv3d') is PyConv3d


@pytest.mark.parametrize('bad, message', [(dict(in_channels=0), 'in_channels=0'),
                                         (dict(stride=0), 'stride=0'),
                                         (dict(stride=(1, 2, 2)), 'stride=\\(1, 2, 2\\)')])
def test_bad_construction(bad, message):
    kwargs = {**dict(in_channels=8, out_channels=8, kernel_sizes=[3]), **bad}
    with pytest.raises(ValueError, match=message):
        PyConv2d(**kwargs)


def test_algorithm_policy_validation_and_tracing():
    from mmengine.analysis import FlopAnalyzer

    from pyconv_mm.ops import get_algorithm, set_algorithm
    with pytest.raises(ValueError, match="'fast'; valid: auto, native, dense, depthwise"):
        set_algorithm('fast')
    assert get_algorithm() == 'auto'
    conv = PyConv2d(16, 16, [3, 5], [1, 4])
    with algorithm_policy('dense'):  # FLOP counting traces: it must see the grouped conv
        flops = FlopAnalyzer(conv, (torch.randn(1, 16, 8, 8), )).total()
    assert flops == 64 * 8 * (16 * 9 + 4 * 25)


def test_expand_grouped_weight_and_tuning_leaves_gradients_alone():
    from pyconv_mm.ops.algorithms import expand_grouped_weight
    weight = torch.randn(8, 2, 3, 3)
    dense = expand_grouped_weight(weight, 4)
    assert dense.shape == (8, 8, 3, 3)
    assert torch.equal(dense[2:4, 2:4], weight[2:4]) and torch.all(dense[2:4, :2] == 0)
    conv = PyConv2d(8, 8, [3, 5], [1, 4])
    with algorithm_policy('auto'):
        conv(torch.randn(2, 8, 9, 9, requires_grad=True))  # tunes (timed forwards)
    assert all(level.weight.grad is None for level in conv.levels)


def test_a_smaller_last_batch_reuses_the_choices_of_the_full_batches():
    """Choices are cached per batch rounded up to a power of two: an epoch's last batch of 12
    after batches of 16 times nothing again; a batch of 2 gets choices of its own."""
    from pyconv_mm.ops import algorithms
    assert [algorithms.shape_key(torch.empty(b, 3))[0] for b in (1, 2, 3, 8, 12, 16, 17)] == \
        [1, 2, 4, 8, 16, 16, 32]
    conv = PyConv2d(16, 24, [3, 5, 7], [1, 4, 8])
    with algorithm_policy('native'), algorithm_policy('auto'):  # starts from an empty cache
        conv(torch.randn(16, 16, 12, 12, requires_grad=True)).sum().backward()
        full = dict(algorithms.choices())
        assert full
        conv(torch.randn(12, 16, 12, 12, requires_grad=True)).sum().backward()
        assert algorithms.choices() == full
        conv(torch.randn(2, 16, 12, 12, requires_grad=True)).sum().backward()
        assert len(algorithms.choices()) > len(full)


def test_tuning_stops_timing_a_candidate_far_slower_than_the_fastest():
    """After the warm-up round and one timed round, a candidate over DROP_SLOWER_THAN times
    the fastest sits out the remaining rounds; the others run every round."""
    import time

    from pyconv_mm.ops import algorithms
    calls = {'quick': 0, 'slow': 0}

    def quick(x, weight):
        calls['quick'] += 1
        return x * weight

    def slow(x, weight):  # 50 ms against a microsecond: slower whatever the machine
        calls['slow'] += 1
        time.sleep(0.05)
        return x * weight

    x, weight = torch.randn(4), torch.randn(4)
    times = algorithms._time_interleaved({'quick': quick, 'slow': slow}, weight, x, repeats=3)
    assert calls == {'quick': 4, 'slow': 2}
    assert times['slow'] >= 0.05 > times['quick']
    assert algorithms.DROP_SLOWER_THAN * times['quick'] < times['slow']


@pytest.mark.parametrize('algorithm', ALGORITHMS)
@pytest.mark.parametrize('ndim', [2, 3])
def test_channels_last_stays_channels_last(algorithm, ndim):
    """A layout change inside a network would slow down every layer after it."""
    fmt = torch.channels_last if ndim == 2 else torch.channels_last_3d
    cls = PyConv2d if ndim == 2 else PyConv3d
    conv = cls(16, 16, [3, 5], [1, 4]).to(memory_format=fmt)
    x = torch.randn(2, 16, *([6] * ndim)).contiguous(memory_format=fmt)
    with algorithm_policy(algorithm):
        assert conv(x).is_contiguous(memory_format=fmt)


def test_fused_inference_form_matches():
    from pyconv_mm.models.backbones import PyConvResNet
    from pyconv_mm.ops import fuse_conv_bn
    torch.manual_seed(0)
    model = PyConvResNet(50, out_indices=(0, 3))
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.1, 0.1)
    model.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
        fused = fuse_conv_bn(model)
        actual = fused(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-4 * e.abs().max().item())


def test_torch_compile_traces_one_graph_with_the_same_values():
    """Under torch.compile the levels run in the native form inside one graph (no breaks);
    aot_eager checks tracing and autograd without a C++ toolchain."""
    torch.manual_seed(0)
    conv = PyConv2d(16, 24, [3, 5, 7], [1, 4, 8], stride=2)
    x = torch.randn(2, 16, 12, 12, requires_grad=True)
    compiled = torch.compile(conv, backend='aot_eager', fullgraph=True)
    with algorithm_policy('auto'):
        out = compiled(x)
        out.square().sum().backward()
        grads = [x.grad.clone()] + [level.weight.grad.clone() for level in conv.levels]
        x.grad = None
        conv.zero_grad()
        expected = conv(x)
        expected.square().sum().backward()
    torch.testing.assert_close(out, expected)
    for got, want in zip(grads, [x.grad] + [level.weight.grad for level in conv.levels]):
        torch.testing.assert_close(got, want)


def test_tuning_tells_3d_memory_formats_apart():
    """A form tuned for NCTHW input is not reused for channels_last_3d input."""
    from pyconv_mm.ops import algorithms
    conv = PyConv3d(8, 8, [3, 5], [1, 4])
    x = torch.randn(1, 8, 4, 6, 6)
    with algorithm_policy('native'), algorithm_policy('auto'), torch.no_grad():
        conv(x)
        tuned_on_ncthw = set(algorithms._CACHE)
        conv(x.contiguous(memory_format=torch.channels_last_3d))
        tuned_again = set(algorithms._CACHE) - tuned_on_ncthw
    # every choice (each level's stock form, the kernel's per PyConv) made again, by format
    assert len(tuned_again) == len(tuned_on_ncthw) > 0
    assert all(torch.channels_last_3d in key for key in tuned_again)
    assert not any(torch.channels_last_3d in key for key in tuned_on_ncthw)


@st.composite
def direct_cases(draw):
    """PyConvs the direct kernel takes: odd square kernels, stride 1 or 2, any groups."""
    kwargs, shape = draw(pyconv_cases())
    kwargs['kernel_sizes'] = [draw(st.sampled_from([3, 5, 7, 9])) for _ in kwargs['groups']]
    shape = (*shape[:2], draw(st.integers(5, 37)), draw(st.integers(5, 37)))
    return kwargs, shape


@needs_direct_kernel
@settings(max_examples=40, deadline=None, derandomize=True)
@given(case=direct_cases(), channels_last=st.booleans(), bias=st.booleans())
def test_direct_kernel_matches_separate_convs(case, channels_last, bias):
    """Inference with our AVX-512 kernel: relative 1e-5 to the stock convolutions."""
    from pyconv_mm.ops import direct
    kwargs, shape = case
    torch.manual_seed(0)
    conv = PyConv2d(**kwargs, bias=bias).eval()
    x = torch.randn(shape)
    if channels_last:
        conv = conv.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    calls = []
    original = direct.conv_levels

    def counted(x, levels, *args, **kw):
        calls.extend(levels)
        return original(x, levels, *args, **kw)

    direct.conv_levels = counted
    try:
        with torch.no_grad(), algorithm_policy('direct'):
            out = conv(x)
        with torch.no_grad():
            expected = reference(x, conv, [lvl.weight for lvl in conv.levels])
            if bias:
                expected += torch.cat([lvl.bias for lvl in conv.levels]).reshape(1, -1, 1, 1)
    finally:
        direct.conv_levels = original
    assert calls == [lvl for lvl in conv.levels if lvl.groups > 1]  # all ran in the kernel
    torch.testing.assert_close(out, expected, rtol=1e-5,
                               atol=1e-5 * max(expected.abs().max().item(), 1e-3))
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last
                             else torch.contiguous_format)


def trainable_in_kernel(case):
    """A :func:`direct_cases` case the kernel also trains: strided levels need dilation 1 and
    an even height and width."""
    kwargs, shape = case
    if kwargs['stride'] == 2:
        kwargs = dict(kwargs, dilations=1)
        shape = (*shape[:2], shape[2] + shape[2] % 2, shape[3] + shape[3] % 2)
    return kwargs, shape


@needs_direct_kernel
@settings(max_examples=40, deadline=None, derandomize=True)
@given(case=direct_cases(), channels_last=st.booleans())
def test_direct_kernel_gradients_match_separate_convs(case, channels_last):
    """Training with the kernel: the input, weight and bias gradients of its levels (its own
    backward passes; at stride 2 one per input phase) and of the other levels equal those of
    separate convolutions, 1e-5."""
    kwargs, shape = trainable_in_kernel(case)
    conv = PyConv2d(**kwargs)
    with algorithm_policy('direct'):
        out = check_equivalence(conv, shape, channels_last=channels_last)
    if any(lvl.groups > 1 for lvl in conv.levels):
        assert type(out.grad_fn).__name__ == 'LevelsFunctionBackward'


@needs_direct_kernel
@settings(max_examples=30, deadline=None, derandomize=True)
@given(case=direct_cases(), channels_last=st.booleans())
def test_direct_kernel_takes_every_level_with_the_ungrouped_ones(case, channels_last):
    """``auto`` also times the kernel on every level of a PyConv, the ungrouped (dense) ones
    included: outputs and gradients then equal separate convolutions too, 1e-5."""
    from pyconv_mm.ops import direct
    kwargs, shape = trainable_in_kernel(case)
    conv = PyConv2d(**kwargs)
    calls = []
    conv._forms = lambda x: calls.append(1) or ['direct' if direct.usable(x, lvl) else 'native'
                                                for lvl in conv.levels]
    out = check_equivalence(conv, shape, channels_last=channels_last)
    assert calls and type(out.grad_fn).__name__ == 'LevelsFunctionBackward'


@needs_direct_kernel
def test_auto_may_run_a_dense_level_in_the_kernel(monkeypatch):
    """Where the kernel takes the grouped levels, ``auto`` times three whole-PyConv forms:
    stock, the kernel on the grouped levels, and the kernel on every level."""
    from pyconv_mm.ops import algorithms
    torch.manual_seed(0)
    conv = PyConv2d(16, 48, [3, 5, 7], [1, 2, 4]).eval()
    x = torch.randn(2, 16, 20, 20)
    timed = []
    original = algorithms.choose

    def recording(key, x, weight, candidates):
        timed.append(sorted(candidates))
        return original(key, x, weight, candidates)

    monkeypatch.setattr(algorithms, 'choose', recording)
    with algorithm_policy('auto'), torch.no_grad():
        out = conv(x)
    assert ['direct', 'direct_all', 'stock'] in timed
    with algorithm_policy('native'), torch.no_grad():
        torch.testing.assert_close(out, conv(x), rtol=1e-5, atol=1e-5)


@needs_direct_kernel
def test_direct_kernel_reuses_its_buffers_and_trains_strided_levels_on_even_sizes():
    """Two PyConvs of different shapes, run in turn, share the threads' buffers without mixing
    their inputs; a strided PyConv trains in the kernel on an input of even height and width,
    on the stock forms otherwise (its input gradient is computed per input phase)."""
    torch.manual_seed(0)
    small = PyConv2d(8, 8, [3, 5], [1, 4]).eval()
    large = PyConv2d(16, 32, [3, 5, 7, 9], [1, 2, 4, 8], stride=2).eval()
    xs, xl = torch.randn(2, 8, 9, 9), torch.randn(2, 16, 30, 30)
    with algorithm_policy('native'), torch.no_grad():
        want_small, want_large = small(xs), large(xl)
    with algorithm_policy('direct'):
        with torch.no_grad():
            for _ in range(2):
                torch.testing.assert_close(large(xl), want_large, rtol=1e-5, atol=1e-5)
                torch.testing.assert_close(small(xs), want_small, rtol=1e-5, atol=1e-5)
        even = check_equivalence(large.train(), xl.shape)
        large.zero_grad(set_to_none=True)
        odd = check_equivalence(large, (2, 16, 29, 30))
    assert type(even.grad_fn).__name__ == 'LevelsFunctionBackward'
    assert type(odd.grad_fn).__name__ == 'CatBackward0'


@needs_direct_kernel
@pytest.mark.parametrize('stride', [1, 2])
@pytest.mark.parametrize('channels_last', [False, True])
def test_direct_kernel_on_large_images(stride, channels_last):
    """A 200 x 200 input with 64 channels: 25 bands at stride 1 (13 at stride 2) split over
    the threads, each band after the first of a thread moving up the halo rows of the band
    above in its buffer and copying the rest; forward and gradients equal separate
    convolutions both ways. Its weight
    gradient also runs in several blocks of output rows (their gradient and input rows within
    256 KiB: 62 rows of 200 at stride 1, 71 and 94 of 100 at stride 2), carrying the
    accumulators from block to block; the other tests' images fit one block."""
    conv = PyConv2d(64, 64, [3, 5, 7, 9], [1, 4, 8, 16], stride=stride)
    with algorithm_policy('direct'):
        out = check_equivalence(conv, (1, 64, 200, 200), channels_last=channels_last)
    assert type(out.grad_fn).__name__ == 'LevelsFunctionBackward'


@needs_direct_kernel
@pytest.mark.parametrize('stride', [1, 2])
@pytest.mark.parametrize('height, width', [(23, 37), (8, 16), (5, 19)])
def test_direct_kernel_channels_last_blocks(stride, height, width):
    """channels_last inputs and outputs of whole 16-channel blocks take the kernel's 16 x 16
    transposes (in and out, stride phases, partial column blocks, reused thread buffers); the
    gradients (the input's: all levels summed in the band, at stride 2 into every other row
    and column of it; the weights': stride phases of the input) go through them too where
    the kernel trains (stride 1, or stride 2 on even sizes)."""
    torch.manual_seed(0)
    conv = PyConv2d(32, 64, [3, 5, 7, 9], [1, 4, 8, 16], stride=stride)
    shape = (2, 32, height, width)
    trains = stride == 1 or (height % 2 == 0 and width % 2 == 0)
    with algorithm_policy('direct'):
        for _ in range(2):  # the second pass reuses the zero padding of the first
            conv.zero_grad(set_to_none=True)
            out = check_equivalence(conv, shape, channels_last=True) if trains else None
            with torch.no_grad():
                x = torch.randn(shape).contiguous(memory_format=torch.channels_last)
                expected = reference(x, conv, [lvl.weight for lvl in conv.levels])
                torch.testing.assert_close(conv.eval()(x), expected, rtol=1e-5, atol=1e-5)
                conv.train()
    assert out is None or type(out.grad_fn).__name__ == 'LevelsFunctionBackward'


@needs_direct_kernel
@pytest.mark.parametrize('channels_last', [False, True])
@pytest.mark.parametrize('stride, width', [(1, 8), (1, 24), (1, 25), (1, 56), (2, 16), (2, 48)])
def test_direct_kernel_last_block_of_at_most_8_columns(stride, width, channels_last):
    """A row whose last block holds at most 8 output columns (8, 24, 56; 8 and 24 at stride 2)
    ends in 8-wide registers in the forward, the input gradient (at stride 2 its phases are
    that wide) and the weight gradient; 25 columns end in a 16-wide block of 9: all equal
    separate convolutions, 1e-5."""
    conv = PyConv2d(32, 64, [3, 5, 7, 9], [1, 4, 8, 16], stride=stride)
    with algorithm_policy('direct'):
        out = check_equivalence(conv, (2, 32, 10, width), channels_last=channels_last)
    assert type(out.grad_fn).__name__ == 'LevelsFunctionBackward'


@needs_direct_kernel
@pytest.mark.parametrize('stride', [1, 2])
def test_direct_kernel_streams_channels_last_outputs_of_2_mib_and_more(stride):
    """channels_last outputs whose elements span 2 MiB or more leave the kernel in
    non-temporal stores (csrc/streaming.h): the forward at stride 1 (64 x 96 x 96, 2.25 MiB)
    and the input gradient at stride 2 (each of its four phases spans the whole 2.25 MiB
    gradient) equal separate convolutions, 1e-5; so do levels written from channel 8 of a
    larger output, whose pixels' 16-channel lines are off the 64-byte grid (stored as
    usual)."""
    from pyconv_mm.ops import direct
    conv = PyConv2d(64, 64, [3, 5, 7, 9], [1, 4, 8, 16], stride=stride)
    shape = (1, 64, 96, 96)
    with algorithm_policy('direct'):
        out = check_equivalence(conv, shape, channels_last=True)
    assert type(out.grad_fn).__name__ == 'LevelsFunctionBackward'
    x = torch.randn(shape).contiguous(memory_format=torch.channels_last)
    wider = torch.zeros(1, 72, *out.shape[2:]).contiguous(memory_format=torch.channels_last)
    direct.conv_levels(x, list(conv.levels), [8 + s for s in conv._level_starts()], wider)
    with torch.no_grad():
        expected = reference(x, conv, [lvl.weight for lvl in conv.levels])
    torch.testing.assert_close(wider[:, 8:], expected, rtol=1e-5, atol=1e-5)
    assert not wider[:, :8].any()


def random_eval_norm(channels: int) -> nn.BatchNorm2d:
    """An eval-mode batch norm with running statistics and affine parameters far from 0 / 1."""
    norm = nn.BatchNorm2d(channels).eval()
    with torch.no_grad():
        norm.running_mean.uniform_(-1, 1)
        norm.running_var.uniform_(0.25, 4)
        norm.weight.uniform_(-2, 2)
        norm.bias.uniform_(-1, 1)
    return norm


NORMS_AROUND = {  # what a block puts before and after its PyConv
    'bn': random_eval_norm,
    'identity': lambda channels: nn.Identity(),  # a norm folded by fuse_conv_bn
    'none': lambda channels: None,  # after: nothing
}


@needs_direct_kernel
@settings(max_examples=40, deadline=None, derandomize=True)
@given(case=direct_cases(), channels_last=st.booleans(),
       before=st.sampled_from(['bn', 'identity']), after=st.sampled_from(sorted(NORMS_AROUND)))
def test_direct_kernel_applies_norms_and_relus_as_it_reads_and_stores(case, channels_last,
                                                                      before, after):
    """Inference of a block's PyConv between its norms (``forward_activated``): the kernel
    normalises (eval-mode BN, or the Identity that ``fuse_conv_bn`` leaves) and rectifies its
    input as it copies it and its output as it stores it, every level in the kernel; equal to
    the modules run as written, 1e-5, a NaN of the input propagated as the stock ReLU does."""
    from pyconv_mm.ops import direct
    kwargs, shape = case
    torch.manual_seed(0)
    conv = PyConv2d(**kwargs).eval()
    norm, out_norm = NORMS_AROUND[before](shape[1]), NORMS_AROUND[after](conv.out_channels)
    relu = nn.ReLU(inplace=True)
    x = torch.randn(shape)
    x[0, 0, 0, 0] = float('nan')  # read by every level's centre tap at output (0, 0)
    if channels_last:
        conv = conv.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    activations = []
    original = direct.conv_levels

    def recorded(*args, **kw):
        activations.append((kw['activation'], kw['output_activation']))
        return original(*args, **kw)

    direct.conv_levels = recorded
    try:
        with torch.no_grad(), algorithm_policy('direct'):
            out = conv.forward_activated(x, norm, relu, out_norm)
    finally:
        direct.conv_levels = original
    with torch.no_grad():
        expected = reference(torch.relu(norm(x)), conv, [lvl.weight for lvl in conv.levels])
        if out_norm is not None:
            expected = torch.relu(out_norm(expected))
    assert len(activations) == 1  # one call, every level
    assert activations[0][0] is not None and (activations[0][1] is None) == (out_norm is None)
    assert torch.equal(out.isnan(), expected.isnan()) and out.isnan().any()
    numbers = ~expected.isnan()
    torch.testing.assert_close(out[numbers], expected[numbers], rtol=1e-5,
                               atol=1e-5 * max(expected[numbers].abs().max().item(), 1e-3))
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last
                             else torch.contiguous_format)


@needs_direct_kernel
def test_forward_activated_runs_the_modules_where_the_kernel_must_not_fold_them():
    """Training (batch statistics, gradients), other norms, another activation, or hooks on
    any of the modules (which must run): the norms and the ReLU run as modules."""
    from pyconv_mm.ops import direct
    torch.manual_seed(0)
    conv = PyConv2d(16, 16, [3, 5], [1, 4])
    x = torch.randn(2, 16, 12, 12)

    def activations_taken(norm, act, out_norm, grad=False):
        calls = []
        original = direct.conv_levels
        direct.conv_levels = lambda *a, **kw: calls.append(kw.get('activation')) or original(
            *a, **kw)
        try:
            with torch.set_grad_enabled(grad), algorithm_policy('direct'):
                out = conv.forward_activated(x, norm, act, out_norm)
        finally:
            direct.conv_levels = original
        with torch.no_grad():
            torch.testing.assert_close(out, act(out_norm(conv(act(norm(x))))), rtol=1e-5,
                                       atol=1e-5)
        return calls

    norm, out_norm, relu = random_eval_norm(16), random_eval_norm(16), nn.ReLU(inplace=True)
    assert activations_taken(norm, relu, out_norm)[0] is not None  # folded
    assert activations_taken(norm, relu, out_norm, grad=True) == []  # LevelsFunction instead
    conv.eval()
    assert activations_taken(norm.train(), relu, out_norm) == [None]  # batch statistics
    assert activations_taken(norm.eval(), relu, out_norm.train()) == [None]
    assert activations_taken(nn.GroupNorm(4, 16), relu, out_norm.eval()) == [None]
    assert activations_taken(norm, nn.GELU(), out_norm) == [None]
    seen = []
    handle = out_norm.register_forward_hook(lambda *args: seen.append(1))
    assert activations_taken(norm, relu, out_norm) == [None] and seen == [1, 1]  # and the check
    handle.remove()
    assert activations_taken(norm, relu, out_norm)[0] is not None


@needs_direct_kernel
def test_tuning_the_kernel_leaves_gradients_alone():
    """``auto`` times forward and backward of a copy: the PyConv's own gradients stay None."""
    conv = PyConv2d(16, 32, [3, 5, 7, 9], [1, 2, 4, 8])
    with algorithm_policy('auto'):
        conv(torch.randn(2, 16, 12, 12, requires_grad=True))
    assert all(level.weight.grad is None for level in conv.levels)


@needs_direct_kernel
def test_direct_kernel_reports_bad_input():
    from pyconv_mm.ops import direct
    level = nn.Conv2d(4, 4, 3, stride=3, padding=1, groups=2, bias=False)
    x, out = torch.randn(1, 4, 9, 9), torch.empty(1, 4, 3, 3)
    with pytest.raises(RuntimeError, match='stride must be 1 or 2, got 3'):
        direct.conv_levels(x, [level], [0], out)
    level.stride = (1, 1)
    with pytest.raises(RuntimeError, match='output \\[1, 4, 3, 3\\] does not match the input'):
        direct.conv_levels(x, [level], [0], out)
    with pytest.raises(RuntimeError, match='expected a 4D float32 CPU input'):
        direct.conv_levels(x.double(), [level], [0], torch.empty(1, 4, 9, 9))
    with pytest.raises(RuntimeError, match='channels out of the output'):
        direct.conv_levels(x, [level], [2], torch.empty(1, 4, 9, 9))
    weight, out = level.weight, torch.empty(1, 6, 9, 9)
    with pytest.raises(RuntimeError, match='input channels \\[2, 6\\) out of the input.s 4'):
        direct._run(x, [weight], [None], [1], [0], 1, out, in_ranges=[(2, 4)])
    with pytest.raises(RuntimeError, match='overlap an earlier level'):
        direct._run(x, [weight, weight], [None] * 2, [1, 1], [0, 2], 1, out)
    with pytest.raises(RuntimeError, match=r'padding \(top, left\) = \(3, 0\) needs stride 1'):
        direct._run(x, [weight], [None], [1], [0], 1, out, paddings=[(3, 0)])
    with pytest.raises(RuntimeError, match=r'one float32 value per input channel \(4\), got 3'):
        direct._run(x, [weight], [None], [1], [0], 1, out,
                    activation=(torch.ones(3), torch.zeros(3)))
    with pytest.raises(RuntimeError, match=r'one float32 value per output channel \(6\), got 4'):
        direct._run(x, [weight], [None], [1], [0], 1, out,
                    output_activation=(torch.ones(4), torch.zeros(4)))
    with pytest.raises(RuntimeError, match='summed into the same channels take no output'):
        direct._run(x, [weight, weight], [None] * 2, [1, 1], [0, 0], 1, out,
                    output_activation=(torch.ones(6), torch.zeros(6)))
    with pytest.raises(RuntimeError, match=r'one size and layout, got \[1, 6, 8, 9\]'):
        direct._run(x, [weight], [None], [1], [0], 1, [out, torch.empty(1, 6, 8, 9)])
    with pytest.raises(RuntimeError, match=r'output index 2 not in \[0, 2\)'):
        direct._run(x, [weight], [None], [1], [0], 1, [out, out.clone()], out_indices=[2])
    with pytest.raises(RuntimeError, match='no level writes output 1'):
        direct._run(x, [weight], [None], [1], [0], 1, [out, out.clone()], out_indices=[0])
    with pytest.raises(RuntimeError, match='an output activation needs one output, got 2'):
        direct._run(x, [weight, weight], [None] * 2, [1, 1], [0, 0], 1, [out, out.clone()],
                    out_indices=[0, 1], output_activation=(torch.ones(6), torch.zeros(6)))


@needs_direct_kernel
@pytest.mark.parametrize('stride,size', [(1, (17, 19)), (2, (18, 22))])
def test_weight_gradients_of_an_activated_input(stride, size):
    """With an activation, the kernel's weight gradients (every level, the ungrouped one
    too) are those of the activated input written out: relu(x * scale + shift) formed as the
    kernel copies x."""
    from pyconv_mm.ops import direct
    torch.manual_seed(0)
    x = torch.randn(2, 32, *size).contiguous(memory_format=torch.channels_last)
    scale, shift = torch.rand(32) + 0.5, torch.randn(32)  # about a third of the ReLU's zeros
    levels = [nn.Conv2d(32, 16, k, stride=stride, padding=k // 2, groups=g, bias=False)
              for k, g in [(3, 1), (5, 4), (9, 16)]]
    weights = [level.weight for level in levels]
    out_size = direct.output_size(x, levels[0])
    grad = torch.randn(2, 48, *out_size).contiguous(memory_format=torch.channels_last)
    activated = torch.relu(x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1))
    assert direct.activation_in_weight_grads(x)
    got = direct.weight_grads(x, grad, levels, weights, [0, 16, 32], [True] * 3,
                              activation=(scale, shift))
    want = [torch.ops.aten.convolution_backward(
        grad.narrow(1, 16 * i, 16), activated, w, None, [stride] * 2, list(lvl.padding), [1, 1],
        False, [0, 0], lvl.groups, [False, True, False])[1]
        for i, (lvl, w) in enumerate(zip(levels, weights))]
    for i, (g, w) in enumerate(zip(got, want)):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-4, msg=f'level {i}')
    x_nchw = x.contiguous()
    assert not direct.activation_in_weight_grads(x_nchw)
    with pytest.raises(RuntimeError, match='an activation needs a channels_last input'):
        direct.weight_grads(x_nchw, grad, levels, weights, [0, 16, 32], [True] * 3,
                            activation=(scale, shift))


def _level_weight_grad_by_channels(x, grad, c_offset, out_channels, groups, kernel, stride,
                                   scale, shift):
    """One level's weight gradient from the kernel vectorised over input channels: a call of
    ``channels_last_weight_grads`` with that level alone."""
    from pyconv_mm.ops import direct
    return direct._ext.channels_last_weight_grads(x, grad, [c_offset], [out_channels], [groups],
                                                  [kernel], stride, scale, shift)[0]


@needs_direct_kernel
@pytest.mark.parametrize('kernel,stride,size,out_channels,groups', [
    (3, 1, (9, 13), 16, 1), (3, 2, (12, 10), 24, 1), (3, 2, (11, 7), 6, 1), (5, 1, (10, 9), 12, 2),
    (5, 2, (4, 5), 3, 1), (7, 1, (6, 11), 4, 2), (9, 2, (10, 14), 5, 1), (9, 1, (3, 2), 2, 2),
    # lane groups: 8, 4 or 2 input channels a group, one or two outputs a step
    (7, 1, (6, 11), 2, 4), (7, 2, (12, 10), 3, 4), (9, 1, (20, 23), 1, 8), (9, 2, (10, 14), 4, 8),
    (3, 1, (9, 13), 2, 16), (5, 2, (11, 7), 1, 16), (5, 1, (3, 2), 8, 4)])
@pytest.mark.parametrize('activated', [False, True])
def test_channels_last_weight_gradient_reads_the_input_in_place(kernel, stride, size,
                                                                out_channels, groups, activated):
    """The kernel's weight gradient vectorised over input channels equals oneDNN's on the
    (activated) input, for every tile width (8, 4, 2, 1 output channels of a group), dense
    and with two groups of 16 channels, lane groups of 8, 4 and 2 channels (an odd number of
    outputs a group, as many outputs as inputs), images narrower than the kernel or than a
    window of output pixels, odd sizes at stride 2, and a gradient slice of a wider NCHW or
    channels_last tensor."""
    from pyconv_mm.ops import direct
    torch.manual_seed(kernel * 10 + stride)
    x = torch.randn(2, 32, *size).contiguous(memory_format=torch.channels_last)
    out_channels *= groups
    weight = torch.randn(out_channels, 32 // groups, kernel, kernel)
    out_size = [(s - 1) // stride + 1 for s in size]
    scale, shift = torch.rand(32) + 0.5, torch.randn(32)
    read = torch.relu(x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)) if activated else x
    activation = (scale, shift) if activated else (torch.empty(0), torch.empty(0))
    for fmt in (torch.contiguous_format, torch.channels_last):
        grad = torch.randn(2, out_channels + 5, *out_size).contiguous(memory_format=fmt)
        got = _level_weight_grad_by_channels(x, grad, 3, out_channels, groups, kernel, stride,
                                             *activation)
        want = torch.ops.aten.convolution_backward(
            grad.narrow(1, 3, out_channels), read, weight, None, [stride] * 2, [kernel // 2] * 2,
            [1, 1], False, [0, 0], groups, [False, True, False])[1]
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)


@needs_direct_kernel
def test_weight_gradients_go_by_channels_where_the_groups_allow():
    """``direct.weight_grads`` sends a level with whole 16-channel blocks of a channels_last
    input per group (dense, or 16 channels a group), or at stride 1 lane groups of 8, 4 or 2
    channels, to the kernel's gradient vectorised over channels (its sums, bit for bit), other
    grouped levels (one channel a group; lane groups at stride 2) to the kernel's
    column-vectorised pass, and the other grouped levels along with them where that pass
    runs; the stock backward for a dilated dense level, an NCHW input and a weight
    too large for the per-thread accumulators."""
    from pyconv_mm.ops import direct
    torch.manual_seed(0)
    levels = [nn.Conv2d(32, 8, 3, padding=1, bias=False),
              nn.Conv2d(32, 8, 5, padding=2, groups=2, bias=False),
              nn.Conv2d(32, 8, 3, padding=2, dilation=2, bias=False),
              nn.Conv2d(32, 8, 7, padding=3, groups=4, bias=False),
              nn.Conv2d(32, 32, 3, padding=1, groups=32, bias=False)]
    weights = [level.weight for level in levels]
    offsets = [0, 8, 16, 24, 32]
    x = torch.randn(2, 32, 10, 12).contiguous(memory_format=torch.channels_last)
    grad, empty = torch.randn(2, 64, 10, 12), torch.empty(0)

    def by_channels(i):
        return _level_weight_grad_by_channels(x, grad, offsets[i], weights[i].shape[0],
                                              levels[i].groups, levels[i].kernel_size[0], 1,
                                              empty, empty)

    def by_columns(i):
        return direct._ext.weight_grads(x, grad, [list(weights[i].shape)], [1], [offsets[i]],
                                        1, empty, empty)[0]

    def stock(x, i):
        lvl = levels[i]
        return torch.ops.aten.convolution_backward(
            grad.narrow(1, offsets[i], weights[i].shape[0]), x, weights[i], None, [1, 1],
            list(lvl.padding), list(lvl.dilation), False, [0, 0], lvl.groups,
            [False, True, False])[1]
    got = direct.weight_grads(x, grad, levels[:4], weights[:4], offsets[:4], [True] * 4)
    assert torch.equal(got[0], by_channels(0)) and torch.equal(got[1], by_channels(1))
    assert torch.equal(got[2], stock(x, 2)) and torch.equal(got[3], by_channels(3))
    got = direct.weight_grads(x, grad, levels, weights, offsets, [True] * 5)
    assert torch.equal(got[0], by_channels(0)) and torch.equal(got[2], stock(x, 2))
    for i in (1, 3, 4):  # where the column pass runs, the grouped levels ride along
        assert torch.equal(got[i], by_columns(i))
    for i in range(5):
        torch.testing.assert_close(got[i], stock(x, i), rtol=1e-5, atol=1e-4)
    strided = nn.Conv2d(32, 8, 7, stride=2, padding=3, groups=4, bias=False)
    strided_grad = torch.randn(2, 8, 5, 6)
    assert torch.equal(
        direct.weight_grads(x, strided_grad, [strided], [strided.weight], [0], [True])[0],
        direct._ext.weight_grads(x, strided_grad, [list(strided.weight.shape)], [1], [0], 2,
                                 empty, empty)[0])
    nchw = direct.weight_grads(x.contiguous(), grad, levels[:1], weights[:1], [0], [True])[0]
    assert torch.equal(nchw, stock(x.contiguous(), 0))
    wide = nn.Conv2d(32, 288, 3, padding=1, bias=False)  # 82 944 floats: its accumulators
    wide_grad = torch.randn(2, 288, 10, 12)  # per thread would leave L2
    assert torch.equal(
        direct.weight_grads(x, wide_grad, [wide], [wide.weight], [0], [True])[0],
        torch.ops.aten.convolution_backward(wide_grad, x, wide.weight, None, [1, 1], [1, 1],
                                            [1, 1], False, [0, 0], 1, [False, True, False])[1])


@needs_direct_kernel
@pytest.mark.parametrize('stride', [1, 2])
@pytest.mark.parametrize('activated', [False, True])
def test_weight_gradients_of_levels_in_one_pass(stride, activated):
    """``channels_last_weight_grads`` computes several levels' weight gradients in one pass
    over the input: each equals a call for that level alone,
    bit for bit (lane groups of 4 and 8 channels with one or two outputs a group, and whole
    16-channel groups, as in PyConvHGResNet's stride-1 PyConvs), and oneDNN's gradient of the
    (activated) input within fp32 rounding."""
    from pyconv_mm.ops import direct
    torch.manual_seed(stride * 2 + activated)
    x = torch.randn(2, 64, 13, 10).contiguous(memory_format=torch.channels_last)
    levels = [nn.Conv2d(64, 16, 3, stride, 1, groups=16, bias=False),  # 4 in, 1 out a group
              nn.Conv2d(64, 16, 9, stride, 4, groups=16, bias=False),
              nn.Conv2d(64, 16, 7, stride, 3, groups=8, bias=False),  # 8 in, 2 out a group
              nn.Conv2d(64, 8, 5, stride, 2, groups=4, bias=False)]  # 16 in, 2 out a group
    if stride == 2:  # lane groups go by channels at stride 1 only
        levels = [levels[3], nn.Conv2d(64, 8, 3, 2, 1, bias=False)]
    offsets, start = [], 3
    for level in levels:
        offsets.append(start)
        start += level.out_channels
    out_size = [(s - 1) // stride + 1 for s in x.shape[2:]]
    grad = torch.randn(2, start + 2, *out_size)
    scale, shift = torch.rand(64) + 0.5, torch.randn(64) * 0.5
    activation = (scale, shift) if activated else (torch.empty(0), torch.empty(0))
    read = torch.relu(x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)) if activated else x
    got = direct._ext.channels_last_weight_grads(
        x, grad, offsets, [lvl.out_channels for lvl in levels], [lvl.groups for lvl in levels],
        [lvl.kernel_size[0] for lvl in levels], stride, *activation)
    assert len(got) == len(levels)
    for level, offset, weight_grad in zip(levels, offsets, got):
        alone = _level_weight_grad_by_channels(
            x, grad, offset, level.out_channels, level.groups, level.kernel_size[0], stride,
            *activation)
        assert torch.equal(weight_grad, alone)
        want = torch.ops.aten.convolution_backward(
            grad.narrow(1, offset, level.out_channels), read, level.weight, None,
            [stride] * 2, list(level.padding), [1, 1], False, [0, 0], level.groups,
            [False, True, False])[1]
        torch.testing.assert_close(weight_grad, want, rtol=1e-5, atol=1e-4)


def test_levels_share_a_weight_gradient_pass_while_their_weights_fit():
    """Levels going by channels share one call while their weights together stay within the
    per-thread accumulators' limit (PyConvHGResNet: stage 1's four levels and stage 2's three
    in one call each, stage 3's two apart)."""
    from pyconv_mm.ops import direct
    limit = direct._BY_CHANNELS_MAX_WEIGHT

    def weights(*floats):
        return [torch.empty(n) for n in floats]
    stage1 = weights(32 * 4 * 9, 32 * 4 * 25, 32 * 4 * 49, 32 * 4 * 81)
    assert direct._one_pass_batches([0, 1, 2, 3], stage1) == [[0, 1, 2, 3]]
    stage3 = weights(256 * 16 * 9, 256 * 8 * 25)
    assert direct._one_pass_batches([0, 1], stage3) == [[0], [1]]
    mixed = weights(limit // 2, limit // 2, 1, limit, 7)
    assert direct._one_pass_batches([0, 1, 2, 3, 4], mixed) == [[0, 1], [2], [3], [4]]
    assert direct._one_pass_batches([1, 3], mixed) == [[1], [3]]
    assert direct._one_pass_batches([], mixed) == []


@needs_direct_kernel
def test_hg_pyconv_weight_gradients_match_reference_convs():
    """A PyConvHGResNet stage-1 and stage-2 PyConv, and a strided stage-2 one (every level a
    lane group, their weight gradients in one pass) trained through the module: its output
    and every gradient equal those of the reference grouped convolutions within fp32
    rounding."""
    from pyconv_mm.ops import set_algorithm
    torch.manual_seed(0)
    for channels, kernels, groups, shares, size, stride in [
            (128, [3, 5, 7, 9], [32] * 4, None, 12, 1),
            (256, [3, 5, 7], [32, 64, 64], [0.25, 0.25, 0.5], 9, 1),
            (256, [3, 5, 7], [32, 64, 64], [0.25, 0.25, 0.5], 10, 2)]:  # strided lane groups
        pyconv = PyConv2d(channels, channels, kernels, groups, stride=stride, bias=False,
                          shares=shares)
        x = torch.randn(2, channels, size, size).contiguous(memory_format=torch.channels_last)
        x.requires_grad_()
        set_algorithm('direct')
        try:
            out = pyconv(x)
            grad = torch.randn_like(out)
            out.backward(grad)
        finally:
            set_algorithm('auto')
        ref_x = x.detach().clone().requires_grad_()
        ref_weights = [lvl.weight.detach().clone().requires_grad_() for lvl in pyconv.levels]
        ref_out = torch.cat([F.conv2d(ref_x, w, None, stride, lvl.padding, 1, lvl.groups)
                             for lvl, w in zip(pyconv.levels, ref_weights)], 1)
        ref_out.backward(grad)
        torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(x.grad, ref_x.grad, rtol=1e-5, atol=1e-4)
        for lvl, w in zip(pyconv.levels, ref_weights):
            torch.testing.assert_close(lvl.weight.grad, w.grad, rtol=1e-5, atol=1e-4)


def test_strided_lane_groups_go_by_channels_in_one_pass_where_they_pay():
    """At stride 2, lane-group levels go by channels (one pass over the input with the other
    levels) where more than one level then does and, with an activation, one of them reads
    the input in place anyway; elsewhere (one level alone, an activated input with lane
    groups only, stride 1) the rule does not apply."""
    from pyconv_mm.ops import direct
    x = torch.empty(2, 64, 8, 8).contiguous(memory_format=torch.channels_last)

    def level(out_channels, kernel, groups, stride=2):
        return nn.Conv2d(64, out_channels, kernel, stride, kernel // 2, groups=groups, bias=False)
    lanes = [level(16, 3, 16), level(16, 9, 16), level(16, 7, 8)]  # 4, 4 and 8 channels a group
    dense = level(8, 3, 1)
    assert direct._strided_lanes(x, lanes, [0, 1, 2], activated=False)
    assert not direct._strided_lanes(x, lanes, [0, 1, 2], activated=True)
    assert direct._strided_lanes(x, lanes + [dense], [0, 1, 2, 3], activated=True)
    assert not direct._strided_lanes(x, lanes, [1], activated=False)  # one level: column pass
    assert not direct._strided_lanes(x, [level(16, 3, 16, 1), level(16, 9, 16, 1)], [0, 1],
                                     activated=False)  # stride 1: lane groups anyway
    assert direct._channel_vectorised(x, lanes[0], strided_lanes=True)
    assert not direct._channel_vectorised(x, lanes[0])


@needs_direct_kernel
@pytest.mark.parametrize('activated', [False, True])
def test_strided_weight_gradients_by_lane_groups_match_onednn(activated):
    """``direct.weight_grads`` of strided lane-group levels (beside a dense one when
    activated) runs them in one pass by channels: each equals the kernel's call for that
    level alone, bit for bit, and oneDNN's gradient of the (activated) input within fp32
    rounding; with 256 channels of 56 columns the kernel's bands of output rows are halved
    to 2 (so that the band's input stays in L2)."""
    from pyconv_mm.ops import direct
    torch.manual_seed(activated)
    x = torch.randn(1, 256, 7, 56).contiguous(memory_format=torch.channels_last)
    levels = [nn.Conv2d(256, 64, 3, 2, 1, groups=32, bias=False),  # 8 in, 2 out a group
              nn.Conv2d(256, 64, 5, 2, 2, groups=64, bias=False),  # 4 in, 1 out
              nn.Conv2d(256, 128, 7, 2, 3, groups=64, bias=False)]  # 4 in, 2 out
    if activated:
        levels.append(nn.Conv2d(256, 16, 3, 2, 1, bias=False))
    offsets = [0, 64, 128, 256][:len(levels)]
    grad = torch.randn(1, sum(lvl.out_channels for lvl in levels), 4, 28)
    scale, shift = torch.rand(256) + 0.5, torch.randn(256) * 0.5
    activation = (scale, shift) if activated else None
    read = torch.relu(x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)) if activated else x
    weights = [lvl.weight for lvl in levels]
    got = direct.weight_grads(x, grad, levels, weights, offsets, [True] * len(levels),
                              activation)
    empty = torch.empty(0)
    for lvl, offset, weight_grad in zip(levels, offsets, got):
        alone = _level_weight_grad_by_channels(
            x, grad, offset, lvl.out_channels, lvl.groups, lvl.kernel_size[0], 2,
            *(activation or (empty, empty)))
        assert torch.equal(weight_grad, alone)
        want = torch.ops.aten.convolution_backward(
            grad.narrow(1, offset, lvl.out_channels), read, lvl.weight, None, [2, 2],
            list(lvl.padding), [1, 1], False, [0, 0], lvl.groups, [False, True, False])[1]
        torch.testing.assert_close(weight_grad, want, rtol=1e-5, atol=1e-4)


@needs_direct_kernel
def test_channels_last_weight_gradient_reports_bad_input():
    from pyconv_mm.ops import direct
    x = torch.randn(2, 32, 8, 8).contiguous(memory_format=torch.channels_last)
    grad, empty = torch.randn(2, 4, 8, 8), torch.empty(0)

    def by_channels(x, grad, c_offset=0, out_channels=4, groups=1, kernel=3, stride=1,
                    scale=empty, shift=empty):
        return _level_weight_grad_by_channels(x, grad, c_offset, out_channels, groups, kernel,
                                              stride, scale, shift)
    with pytest.raises(RuntimeError, match='must be channels_last with whole 16-channel blocks'):
        by_channels(x.contiguous(), grad)
    with pytest.raises(RuntimeError, match='must be channels_last with whole 16-channel blocks'):
        by_channels(torch.randn(2, 8, 8, 8).contiguous(memory_format=torch.channels_last), grad)
    with pytest.raises(RuntimeError, match="4 groups need to divide the input's 32 and the "
                       "output's 36 channels, with whole 16-channel blocks of input per group, "
                       "or 2, 4 or 8 input channels and at most as many output channels"):
        by_channels(x, grad, out_channels=36, groups=4)
    with pytest.raises(RuntimeError, match="32 groups need to divide"):
        by_channels(x, torch.randn(2, 32, 8, 8), out_channels=32, groups=32)
    with pytest.raises(RuntimeError, match='stride must be 1 or 2, got 3'):
        by_channels(x, grad, stride=3)
    with pytest.raises(RuntimeError, match=r'kernel size 4 not supported \(3, 5, 7 or 9\)'):
        by_channels(x, grad, kernel=4)
    with pytest.raises(RuntimeError, match=r'gradient channels \[2, 6\) of \[2, 4, 8, 8\]'):
        by_channels(x, grad, c_offset=2)
    with pytest.raises(RuntimeError, match=r'expected \(2, >= 4, 4, 4\)'):
        by_channels(x, grad, stride=2)
    with pytest.raises(RuntimeError, match=r'per input channel \(32\), got 3 and 32'):
        by_channels(x, grad, scale=torch.ones(3), shift=torch.zeros(32))
    with pytest.raises(RuntimeError, match='expected 4D float32 CPU tensors'):
        by_channels(x.double(), grad)


@needs_direct_kernel
def test_weight_gradient_kernel_reports_bad_input():
    from pyconv_mm.ops import direct
    x, grad = torch.randn(2, 8, 9, 9), torch.randn(2, 4, 9, 9)
    empty = torch.empty(0)

    def weight_grads(*args):
        return direct._ext.weight_grads(*args, empty, empty)
    with pytest.raises(RuntimeError, match=r'weight shape \[4, 3, 3, 3\] is not .* C_in = 8'):
        weight_grads(x, grad, [[4, 3, 3, 3]], [1], [0], 1)
    with pytest.raises(RuntimeError, match=r'weight shape \[2, 1, 3, 3\] is not'):
        weight_grads(x, grad, [[2, 1, 3, 3]], [1], [0], 1)  # 8 groups, 2 outputs
    with pytest.raises(RuntimeError, match=r'gradient channels \[2, 6\) of 4'):
        weight_grads(x, grad, [[4, 2, 3, 3]], [1], [2], 1)
    with pytest.raises(RuntimeError, match='dilation 0'):
        weight_grads(x, grad, [[4, 2, 3, 3]], [0], [0], 1)
    with pytest.raises(RuntimeError, match='1 weight shapes, 2 dilations and 1 channel offsets'):
        weight_grads(x, grad, [[4, 2, 3, 3]], [1, 1], [0], 1)
    with pytest.raises(RuntimeError, match=r'kernel size 11 not supported \(3, 5, 7 or 9\)'):
        weight_grads(x, grad, [[4, 2, 11, 11]], [1], [0], 1)
    with pytest.raises(RuntimeError, match='a gradient of its batch and size / stride'):
        weight_grads(x, grad[:1], [[4, 2, 3, 3]], [1], [0], 1)


@needs_direct_kernel
@pytest.mark.parametrize('channels_last', [False, True])
@pytest.mark.parametrize('accumulate', [False, True])
def test_direct_kernel_writes_levels_into_several_outputs(channels_last, accumulate):
    """One call with several outputs (as for the phases of a strided input gradient) leaves
    each output as a call with only its own levels does, bit for bit: the levels of one output
    with the same channels summed, channels no level writes untouched."""
    from pyconv_mm.ops import direct
    torch.manual_seed(0)
    x = torch.randn(2, 32, 19, 23)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    # (output, weight, input channels (start, count), padding (top, left), output channel)
    levels = [(0, torch.randn(16, 8, 3, 3), (0, 32), (1, 1), 0),
              (0, torch.randn(16, 4, 2, 3), (8, 16), (0, 2), 0),
              (1, torch.randn(16, 2, 5, 4), (0, 16), (2, 1), 16),
              (2, torch.randn(32, 1, 1, 2), (16, 16), (0, 0), 0)]
    outs = [direct.empty_output(x, 32, (19, 23)).normal_() for _ in range(3)]
    expected = [out.clone() for out in outs]
    for o, out in enumerate(expected):
        own = [level for level in levels if level[0] == o]
        direct._run(x, [w for _, w, *_ in own], [None] * len(own), [1] * len(own),
                    [c for *_, c in own], 1, out, accumulate=accumulate,
                    in_ranges=[r for _, _, r, _, _ in own], paddings=[p for *_, p, _ in own])
    direct._run(x, [w for _, w, *_ in levels], [None] * len(levels), [1] * len(levels),
                [c for *_, c in levels], 1, outs, accumulate=accumulate,
                in_ranges=[r for _, _, r, _, _ in levels],
                paddings=[p for *_, p, _ in levels], out_indices=[o for o, *_ in levels])
    for out, wanted in zip(outs, expected):
        assert torch.equal(out, wanted)


@needs_direct_kernel
@settings(max_examples=40, deadline=None, derandomize=True)
@given(kernel=st.tuples(st.integers(1, 5), st.integers(1, 5)), data=st.data(),
       groups=st.sampled_from([1, 2, 4]), out_per_group=st.sampled_from([1, 2, 4, 8]),
       size=st.tuples(st.integers(3, 21), st.integers(3, 21)), channels_last=st.booleans())
def test_direct_kernel_runs_rectangular_kernels_with_any_padding(kernel, data, groups,
                                                                 out_per_group, size,
                                                                 channels_last):
    """The kernel's form for the phases of a strided level's input gradient: any KH x KW
    kernel at stride 1 with (top, left) zeros and an output of the input's size equals the
    stock convolution of the input padded so, 1e-5."""
    from pyconv_mm.ops import direct
    kh, kw = kernel
    top, left = data.draw(st.integers(0, kh - 1)), data.draw(st.integers(0, kw - 1))
    torch.manual_seed(0)
    x = torch.randn(2, 4 * groups, *size)
    weight = torch.randn(out_per_group * groups, 4, kh, kw)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    out = direct.empty_output(x, weight.shape[0], size)
    direct._run(x, [weight], [None], [1], [0], 1, out, paddings=[(top, left)])
    expected = F.conv2d(F.pad(x, (left, kw - 1 - left, top, kh - 1 - top)), weight,
                        groups=groups)
    torch.testing.assert_close(out, expected, rtol=1e-5,
                               atol=1e-5 * expected.abs().max().item())


@needs_direct_kernel
def test_auto_times_the_kernel_per_pyconv_and_compiled_inference_runs_it_as_a_custom_op():
    """``auto`` decides between the kernel and the levels' stock forms once per PyConv and
    input; a compiled model (inference) runs the form that eager call chose, the kernel as the
    custom op ``pyconv_mm::conv_levels`` inside one graph."""
    from pyconv_mm.ops import algorithms, direct
    torch.manual_seed(0)
    conv = PyConv2d(16, 32, [3, 5, 7, 9], [1, 2, 4, 8]).eval()
    x = torch.randn(2, 16, 20, 20)
    with algorithm_policy('native'), torch.no_grad():
        expected = conv(x)
    calls = []
    original = direct._run

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    with algorithm_policy('auto'), torch.no_grad():
        torch.testing.assert_close(conv(x), expected, rtol=1e-5, atol=1e-5)
        (choice, ) = [form for key, form in algorithms._CACHE.items() if key[1] == 'direct']
        assert choice in ('direct', 'direct_all', 'stock')
        compiled = torch.compile(conv, backend='aot_eager', fullgraph=True)
        direct._run = counted
        try:
            torch.testing.assert_close(compiled(x), expected, rtol=1e-5, atol=1e-5)
        finally:
            direct._run = original
    assert len(calls) == (0 if choice == 'stock' else 1)


@needs_direct_kernel
def test_compiled_inference_of_a_block_applies_its_norms_in_the_kernel():
    """A compiled bottleneck in inference takes the kernel with its norms and ReLUs (policy
    ``direct``) through the custom op, in one graph, with the values of the modules."""
    from pyconv_mm.models.backbones import PyConvResNet
    from pyconv_mm.ops import direct
    torch.manual_seed(0)
    block = PyConvResNet(50).layer2[1].eval()
    for norm in (block.bn1, block.bn2, block.bn3):
        norm.load_state_dict(random_eval_norm(norm.num_features).state_dict())
    x = torch.randn(2, 512, 12, 12)
    with torch.no_grad():
        expected = block.forward_as_written(x)
    activations = []
    original = direct._run

    def recorded(*args, **kwargs):
        activations.append(kwargs.get('activation'))
        return original(*args, **kwargs)

    direct._run = recorded
    try:
        with algorithm_policy('direct'), torch.no_grad():
            out = torch.compile(block, backend='aot_eager', fullgraph=True)(x)
    finally:
        direct._run = original
    assert len(activations) == 1 and activations[0] is not None
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())


@needs_direct_kernel
def test_direct_kernel_leaves_autocast_to_the_stock_forms():
    conv = PyConv2d(16, 32, [3, 5, 7, 9], [1, 2, 4, 8]).eval()
    with algorithm_policy('direct'), torch.no_grad(), torch.autocast('cpu', torch.bfloat16):
        assert conv(torch.randn(1, 16, 8, 8)).dtype == torch.bfloat16
