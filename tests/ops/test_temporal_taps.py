"""3D PyConv levels by the 2D kernel, one temporal tap at a time (pyconv_mm.ops.temporal_taps):
outputs and gradients equal separate Conv3d's, on random clips (hypothesis)."""
import contextlib
import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from conftest import needs_direct_kernel, step_against_switched_off
from pyconv_mm.ops import PyConv3d, direct, divisors, temporal_taps
from test_pyconv import algorithm_policy

pytestmark = needs_direct_kernel


@st.composite
def clip_cases(draw, trainable=True):
    """PyConv3d's the kernel takes by taps: odd temporal kernels 1-7 (dilation 1 or 2, stride
    1 or 2, clips of 1-8 frames: taps past either end of the clip are left out), odd square
    spatial kernels 3-9 at stride 1 or 2 (even sizes and spatial dilation 1 at stride 2 when
    ``trainable``)."""
    n_levels = draw(st.integers(1, 3))
    in_channels = draw(st.sampled_from([8, 16, 32]))
    widths = [draw(st.sampled_from([4, 8])) for _ in range(n_levels)]
    groups = [draw(st.sampled_from([g for g in divisors(in_channels) if w % g == 0]))
              for w in widths]
    kernels = [(draw(st.sampled_from([1, 3, 5, 7])), k, k)
               for k in [draw(st.sampled_from([3, 5, 7, 9])) for _ in range(n_levels)]]
    spatial_stride = draw(st.sampled_from([1, 2]))
    spatial_dilation = 1 if trainable and spatial_stride == 2 else draw(st.sampled_from([1, 2]))
    dilation = (draw(st.sampled_from([1, 2])), spatial_dilation, spatial_dilation)
    stride = (draw(st.sampled_from([1, 2])), spatial_stride, spatial_stride)
    even = trainable and spatial_stride == 2
    height, width = (draw(st.integers(3, 8)) * (2 if even else 1) + (0 if even else 5)
                     for _ in range(2))
    shape = (draw(st.integers(1, 2)), in_channels, draw(st.integers(1, 8)), height, width)
    return dict(in_channels=in_channels, out_channels=widths, kernel_sizes=kernels,
                groups=groups, dilations=[dilation] * n_levels, stride=stride), shape


def every_level_in_kernel(conv: PyConv3d) -> PyConv3d:
    """``conv`` with each level the kernel takes in it, the ungrouped ones too (``auto``
    offers that form; the policy ``direct`` puts only grouped levels there)."""
    conv._forms = lambda x: ['direct' if temporal_taps.usable(x, level) else 'native'
                             for level in conv.levels]
    return conv


@contextlib.contextmanager
def kernel_calls():
    """How many levels each call of the 2D kernel made meanwhile computed."""
    calls, original = [], direct._run

    def counted(x, weights, *args, **kwargs):
        calls.append(len(weights))
        return original(x, weights, *args, **kwargs)

    direct._run = counted
    try:
        yield calls
    finally:
        direct._run = original


def random_clip(shape: tuple, channels_last: bool) -> torch.Tensor:
    torch.manual_seed(0)
    x = torch.randn(shape)
    return x.contiguous(memory_format=torch.channels_last_3d) if channels_last else x


def check_training(conv: PyConv3d, x: torch.Tensor) -> torch.Tensor:
    """A training step of ``conv`` on ``x``: output, input, weight and bias gradients as
    separate Conv3d's in float64, relative 1e-5; the output in ``x``'s memory format.
    Returns the output."""
    channels_last = x.is_contiguous(memory_format=torch.channels_last_3d)
    x_ours, x_want = x.clone().requires_grad_(), x.double().requires_grad_()
    # the reference in float64: torch 2.14's float32 Conv3d weight gradient on CPU (oneDNN)
    # is wrong for some clips shorter than the kernel at stride 2 (e.g. 7x9x9, 5 frames)
    levels = [copy.deepcopy(level).double() for level in conv.levels]
    out = conv(x_ours)
    grad = torch.randn_like(out)
    out.backward(grad)
    want = torch.cat([level(x_want) for level in levels], 1)
    want.backward(grad.double())
    for got, wanted in [(out, want), (x_ours.grad, x_want.grad),
                        *[(lvl.weight.grad, ref.weight.grad)
                          for lvl, ref in zip(conv.levels, levels)],
                        *[(lvl.bias.grad, ref.bias.grad)
                          for lvl, ref in zip(conv.levels, levels) if lvl.bias is not None]]:
        torch.testing.assert_close(got.double(), wanted, rtol=1e-5,
                                   atol=1e-5 * max(wanted.abs().max().item(), 1e-3))
    assert out.is_contiguous(memory_format=torch.channels_last_3d if channels_last
                             else torch.contiguous_format)
    return out


@settings(max_examples=40, deadline=None, derandomize=True)
@given(case=clip_cases(), channels_last=st.booleans(), bias=st.booleans())
def test_taps_train_as_separate_convs(case, channels_last, bias):
    """Training with every level in the kernel: output, input, weight and bias gradients equal
    separate Conv3d's (in float64), relative 1e-5, on channels_last_3d and contiguous clips;
    the output in the clip's memory format."""
    kwargs, shape = case
    conv = every_level_in_kernel(PyConv3d(**kwargs, bias=bias))
    with kernel_calls() as calls:
        out = check_training(conv, random_clip(shape, channels_last))
    assert type(out.grad_fn).__name__ == 'LevelsFunctionBackward'
    # every level runs in the kernel at its centre tap: one call per clip covers them all
    assert calls.count(len(conv.levels)) >= shape[0]


@settings(max_examples=40, deadline=None, derandomize=True)
@given(case=clip_cases(trainable=False), channels_last=st.booleans(), bias=st.booleans())
def test_taps_infer_as_separate_convs(case, channels_last, bias):
    """Inference (any spatial dilation at stride 2, odd sizes): relative 1e-5; the output in
    the clip's memory format."""
    kwargs, shape = case
    torch.manual_seed(0)
    conv = every_level_in_kernel(PyConv3d(**kwargs, bias=bias).eval())
    x = torch.randn(shape)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last_3d)
    with torch.no_grad():
        expected = torch.cat([level(x) for level in conv.levels], 1)
        with kernel_calls() as calls:
            out = conv(x)
    runs = temporal_taps._runs(list(conv.levels), shape[2])  # one call per clip and offset
    assert calls == [len(run.taps) for run in runs] * shape[0]
    torch.testing.assert_close(out, expected, rtol=1e-5,
                               atol=1e-5 * max(expected.abs().max().item(), 1e-3))
    assert out.is_contiguous(memory_format=torch.channels_last_3d if channels_last
                             else torch.contiguous_format)


@pytest.mark.parametrize('size', [(1, 1), (1, 2), (2, 1)])
def test_taps_train_on_frames_of_one_pixel_row_or_column(size):
    """Clips of 1 pixel or one row or column (the last stage of a small clip), with strides
    of 1 on their size-1 dimensions, as some ops leave them (a frame is then channels_last
    without a pixel stride of C): gradients still equal separate Conv3d's."""
    conv = every_level_in_kernel(PyConv3d(32, 32, [(3, 3, 3), (3, 5, 5)], [1, 2]))
    height, width = size
    frame = 32 * height * width
    ones = torch.randn(3 * frame).as_strided(
        (1, 32, 3, height, width), (3 * frame, 1, frame, 1 if height == 1 else 32 * width,
                                    1 if width == 1 else 32))
    assert ones.is_contiguous(memory_format=torch.channels_last_3d)
    for x in (ones, random_clip((1, 32, 3, height, width), False)):
        conv.zero_grad()
        check_training(conv, x)


def test_each_offset_is_one_call_over_the_frames_it_reaches():
    """Stage 1's pyramid (temporal 3, 3, 5, 7) on 4 frames: offset 0 takes every level over all
    frames, offsets +-1 the four, +-2 two, +-3 the 7x9x9 alone over the one frame it reaches
    from each end; temporal stride 2 halves the output frames each offset reaches."""
    conv = PyConv3d(64, 64, [(3, 3, 3), (3, 5, 5), (5, 7, 7), (7, 9, 9)], [1, 4, 8, 16])
    runs = temporal_taps._runs(list(conv.levels), 4)
    assert [(run.offset, len(run.taps), run.first, run.end) for run in runs] == [
        (0, 4, 0, 4), (-1, 4, 1, 4), (1, 4, 0, 3), (-2, 2, 2, 4), (1 + 1, 2, 0, 2),
        (-3, 1, 3, 4), (3, 1, 0, 1)]
    strided = PyConv3d(64, 64, [(3, 3, 3), (7, 9, 9)], [1, 16], stride=(2, 1, 1))
    runs = temporal_taps._runs(list(strided.levels), 5)  # output frames 0..2 read 0, 2, 4
    assert [(run.offset, run.first, run.end) for run in runs] == [
        (0, 0, 3), (-1, 1, 3), (1, 0, 2), (-2, 1, 3), (2, 0, 2), (-3, 2, 3), (3, 0, 1)]
    x = torch.randn(1, 64, 5, 8, 8)
    assert [tuple(run.inputs(temporal_taps.frames(x[0])).shape) for run in runs[:3]] == [
        (3, 64, 8, 8), (2, 64, 8, 8), (2, 64, 8, 8)]


def test_which_levels_the_kernel_takes():
    x = torch.randn(1, 16, 4, 8, 8)
    assert temporal_taps.usable(x, nn.Conv3d(16, 16, (3, 5, 5), padding=(1, 2, 2), groups=4))
    assert temporal_taps.usable(x, nn.Conv3d(16, 16, (1, 3, 3), padding=(0, 1, 1)))
    assert not temporal_taps.usable(x, nn.Conv3d(16, 16, (3, 5, 5), padding=(0, 2, 2)))
    assert not temporal_taps.usable(x, nn.Conv3d(16, 16, (3, 5, 5), padding='same'))
    assert not temporal_taps.usable(x, nn.Conv3d(16, 16, (3, 4, 4), padding=(1, 2, 2)))
    assert not temporal_taps.usable(x[:, :, 0], nn.Conv3d(16, 16, 3, padding=1))
    assert not temporal_taps.usable(x.double(), nn.Conv3d(16, 16, 3, padding=1).double())
    with torch.no_grad():  # odd sizes: stride 2 in inference only
        assert temporal_taps.usable(x[..., :7], nn.Conv3d(16, 16, 3, stride=2, padding=1))
    assert not temporal_taps.usable(x[..., :7], nn.Conv3d(16, 16, 3, stride=2, padding=1))


def test_a_video_block_trains_as_with_the_kernel_switched_off():
    """PyConvResNet3D's first bottleneck (stage 1's pyramid at spatial stride 2), with and
    without ``with_cp``: output, input and parameter gradients as with its PyConv on the stock
    forms."""
    from conftest import assert_same_parameter_grads
    from pyconv_mm.models.backbones.pyconv_resnet3d import PyConvResNet3D

    torch.manual_seed(0)
    backbone = PyConvResNet3D(depth=50, stem_channels=16, out_indices=(0, ))
    for with_cp in (False, True):
        block = backbone.layer1[0].train()
        block.with_cp = with_cp
        block.zero_grad(set_to_none=True)
        reference = copy.deepcopy(block)
        x = torch.randn(2, 16, 4, 12, 12).contiguous(memory_format=torch.channels_last_3d)
        with algorithm_policy('direct'), kernel_calls() as calls:
            step_against_switched_off(block, reference, x, direct.set_enabled)
        assert calls
        assert_same_parameter_grads(block, reference)
