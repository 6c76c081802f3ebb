"""Inference with norms, ReLUs and residual adds inside oneDNN convolutions equals the modules
run as written, sees every change of the weights, and steps aside where it must."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from pyconv_mm.models.backbones import PyConvHGResNet, PyConvResNet, PyConvResNet3D
from pyconv_mm.ops import fuse_conv_bn, fused_inference, set_algorithm

pytestmark = pytest.mark.skipif(not fused_inference.AVAILABLE,
                                reason='this torch has no oneDNN fused convolution')


def randomize_norms(model: nn.Module) -> nn.Module:
    """Running statistics and affine parameters far from 0 / 1, so that a fold that drops or
    misplaces any of them shows."""
    torch.manual_seed(1)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.25, 4)
                module.weight.uniform_(-2, 2)
                module.bias.uniform_(-1, 1)
    return model


def assert_close(out: torch.Tensor, expected: torch.Tensor) -> None:
    """Relative 1e-5 of the output's range (the fold reorders a multiplication)."""
    torch.testing.assert_close(out, expected, rtol=1e-5,
                               atol=1e-5 * max(expected.abs().max().item(), 1e-3))


def in_format(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    fmt = {4: torch.channels_last, 5: torch.channels_last_3d}[x.dim()]
    return x.contiguous(memory_format=fmt) if channels_last else x


@st.composite
def chains(draw):
    ndim = draw(st.sampled_from([2, 3]))
    groups = draw(st.sampled_from([1, 2, 4]))
    in_channels, out_channels = 8 * groups, draw(st.sampled_from([4, 8, 16])) * groups
    kernel = draw(st.sampled_from([1, 3, 5]))
    stride, dilation = draw(st.sampled_from([1, 2])), draw(st.sampled_from([1, 2]))
    spatial = [draw(st.integers(4, 9)) for _ in range(ndim)]
    conv_cls = nn.Conv2d if ndim == 2 else nn.Conv3d
    conv = conv_cls(in_channels, out_channels, kernel, stride=stride, groups=groups,
                    padding=kernel // 2 * dilation, dilation=dilation,
                    bias=draw(st.booleans()))
    norm = (nn.BatchNorm2d if ndim == 2 else nn.BatchNorm3d)(out_channels)
    return conv, randomize_norms(norm).eval(), (draw(st.integers(1, 2)), in_channels, *spatial)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(case=chains(), channels_last=st.booleans(), relu=st.booleans(),
       residual=st.sampled_from(['none', 'new', 'into']))
def test_conv_norm_act_matches_the_modules(case, channels_last, relu, residual):
    """``relu(norm(conv(x)) + residual)`` in one convolution: 2D and 3D, grouped, strided,
    dilated, with and without bias; ``into_residual`` writes into the residual it is given
    and nothing else, and the output keeps the input's memory format."""
    conv, norm, shape = case
    torch.manual_seed(0)
    x = in_format(torch.randn(shape), channels_last)
    x_before = x.clone()
    with torch.no_grad():
        expected = norm(conv(x))
        other = None if residual == 'none' else in_format(torch.randn_like(expected),
                                                           channels_last)
        if other is not None:
            expected = expected + other
        if relu:
            expected = torch.relu(expected)
        given_residual = None if other is None else other.clone()
        out = fused_inference.conv_norm_act(x, conv, norm, relu, given_residual,
                                            into_residual=residual == 'into')
    assert_close(out, expected)
    assert torch.equal(x, x_before)
    if residual == 'into':
        assert out.data_ptr() == given_residual.data_ptr()
    elif residual == 'new':
        assert torch.equal(given_residual, other)
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last and x.dim() == 4
                             else torch.channels_last_3d if channels_last
                             else torch.contiguous_format)


def first_and_second_blocks(model: nn.Module):
    """Each stage's first block (stride, shortcut) and second (identity shortcut), with the
    input each sees in the model."""
    features = {}
    hooks = [block.register_forward_pre_hook(
        lambda module, args, name=name: features.setdefault(name, args[0].clone()))
        for name, block in model.named_modules()
        if name.startswith('layer') and name.endswith(('.0', '.1')) and name.count('.') == 1]
    with torch.no_grad(), fused_inference_off():
        model(torch.randn(2, 3, *([8] if isinstance(model, PyConvResNet3D) else []), 64, 64))
    for hook in hooks:
        hook.remove()
    return [(model.get_submodule(name), x) for name, x in features.items()]


class fused_inference_off:
    def __enter__(self):
        fused_inference.set_enabled(False)

    def __exit__(self, *exc):
        fused_inference.set_enabled(True)


BACKBONES = {
    'pyconvresnet18': lambda: PyConvResNet(18),
    'pyconvresnet50': lambda: PyConvResNet(50),
    'pyconvresnet50-stempool': lambda: PyConvResNet(50, pyramids=(1, 1, 1, 1), maxpool='stem'),
    'pyconvhgresnet50': lambda: PyConvHGResNet(50),
    'pyconvresnet3d18': lambda: PyConvResNet3D(18),
}


@pytest.mark.parametrize('channels_last', [False, True])
@pytest.mark.parametrize('name', sorted(BACKBONES))
def test_fused_blocks_equal_the_blocks_as_written(name, channels_last):
    """Every kind of block (bottleneck, basic, HG; pooled, projected and identity shortcuts;
    2D and 3D), fused, equals the block run module by module; the block's input is left as
    it was (the fused add writes into the shortcut's new tensor only)."""
    model = randomize_norms(BACKBONES[name]()).eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last if '3d' not in name
                         else torch.channels_last_3d)
    for block, x in first_and_second_blocks(model):
        x = in_format(x, channels_last)
        x_before = x.clone()
        with torch.no_grad():
            assert block._fusable(x)
            out = block.fused_forward(x)
            expected = block.forward_as_written(x_before.clone())
        assert_close(out, expected)
        assert torch.equal(x, x_before)


@pytest.mark.parametrize('fold_first', [False, True])
def test_backbone_output_in_eval_mode(monkeypatch, fold_first):
    """A whole PyConvResNet-50 in eval mode, every block and the stem fused, equals it unfused;
    also after ``fuse_conv_bn`` (the norms are Identity, nothing to fold per call)."""
    torch.manual_seed(0)
    model = randomize_norms(PyConvResNet(50, out_indices=(0, 1, 2, 3))).eval()
    if fold_first:
        model = fuse_conv_bn(model)
    x = torch.randn(2, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    model = model.to(memory_format=torch.channels_last)
    with torch.no_grad(), fused_inference_off():
        expected = model(x)
    chains = []
    original = fused_inference.conv_norm_act
    monkeypatch.setattr(fused_inference, 'prefer_fused', lambda *args: True)
    monkeypatch.setattr(fused_inference, 'conv_norm_act',
                        lambda *args, **kw: chains.append(1) or original(*args, **kw))
    with torch.no_grad():
        out = model(x)
    # stem, and per block conv1 and conv3 (plus the 4 projection shortcuts)
    assert len(chains) == 1 + 16 * 2 + 4
    for o, e in zip(out, expected):
        assert_close(o, e)


def test_changed_weights_are_always_seen(monkeypatch):
    """Folded weights kept in oneDNN's layout (channels_last) are checked on every call:
    weights written through ``.data`` (as EMA hooks swap them), new running statistics and a
    new eps change the next fused output as they change the modules'."""
    from pyconv_mm.ops import packed_weights
    monkeypatch.setattr(fused_inference, 'prefer_fused', lambda *args: True)
    model = randomize_norms(PyConvResNet(50)).eval().to(memory_format=torch.channels_last)
    block = model.layer2[0]
    x = torch.randn(2, 256, 16, 16).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        first = block(x)
        if packed_weights.enabled():
            assert packed_weights.kept(block.conv3) and packed_weights.kept(block.downsample[1])
        block.conv3.weight.data.copy_(torch.randn_like(block.conv3.weight))
        block.bn3.running_var.data.mul_(3)
        block.bn1.eps = 0.5
        block.downsample[1].weight.data.mul_(-1)
        second = block(x)
        expected = block.forward_as_written(x)
    assert not torch.allclose(first, second)
    assert_close(second, expected)


def test_fusion_steps_aside_where_it_must(monkeypatch):
    """Gradients recorded, a norm in training mode, another norm, autocast, hooks on a module
    it would skip (the hook runs), a forced algorithm policy or the switch turned off: the
    block runs as written."""
    fused_calls = []
    original = fused_inference.conv_norm_act
    monkeypatch.setattr(fused_inference, 'conv_norm_act',
                        lambda *args, **kw: fused_calls.append(1) or original(*args, **kw))
    monkeypatch.setattr(fused_inference, 'prefer_fused', lambda *args: True)
    block = randomize_norms(PyConvResNet(50)).eval().layer1[1]
    x = torch.randn(2, 256, 8, 8)

    def fused(grad=False):
        fused_calls.clear()
        with torch.set_grad_enabled(grad):
            block(x)
        return bool(fused_calls)

    assert fused()
    assert not fused(grad=True)
    block.bn3.train()
    assert not fused()
    block.bn3.eval()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert not fused()
    seen = []
    handle = block.conv1.register_forward_hook(lambda *args: seen.append(1))
    assert not fused() and seen == [1]
    handle.remove()
    with fused_inference_off():
        assert not fused()
    assert fused()
    gn_block = PyConvResNet(50, norm_cfg=dict(type='GN', num_groups=4)).eval().layer1[1]
    fused_calls.clear()
    with torch.no_grad():
        gn_block(x)
    assert not fused_calls


def test_auto_times_each_structure_once_and_a_policy_forces_the_modules():
    """``prefer_fused`` keeps one timed choice per block structure and input; a forced
    algorithm policy (the authors' native form, ...) runs the modules as written."""
    from pyconv_mm.ops import algorithms
    model = randomize_norms(PyConvResNet(50)).eval()
    x = torch.randn(2, 256, 8, 8)
    before = {k for k in algorithms.choices() if k[0] == 'fused_inference'}
    with torch.no_grad():
        model.layer1[1](x)
        model.layer1[2](x)  # the same structure and input: no new timing
    new = {k for k in algorithms.choices() if k[0] == 'fused_inference'} - before
    assert len(new) == 1
    set_algorithm('native')
    try:
        with torch.no_grad():
            assert not fused_inference.prefer_fused(model.layer1[1], x, lambda t: t,
                                                    lambda t: t)
    finally:
        set_algorithm('auto')


def test_conv_norm_act_reports_a_residual_of_another_shape():
    conv, norm = nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8).eval()
    with torch.no_grad(), pytest.raises(ValueError, match=r'residual of shape \(1, 8, 5, 5\)'
                                        r'.*output \(1, 8, 3, 3\)'):
        fused_inference.conv_norm_act(torch.randn(1, 4, 5, 5), conv, norm, True,
                                      residual=torch.randn(1, 8, 5, 5), into_residual=True)


def test_a_stage_adds_into_the_outputs_it_owns(monkeypatch):
    """In a stage (``PyConvStage``), a fused block after the first writes its output into its
    input, the output of the block before, which nothing else holds; never into the stage's
    input. A forward hook on a block (it may keep the output) leaves that output to it, as do
    global hooks."""
    monkeypatch.setattr(fused_inference, 'prefer_fused', lambda *args: True)
    stage = randomize_norms(PyConvResNet(50)).eval().layer1
    x = torch.randn(2, 64, 16, 16)
    x_before = x.clone()
    with torch.no_grad(), fused_inference_off():
        expected = stage(x)
    into_residual = []  # per fused add: whether it wrote into the tensor it added
    original = fused_inference.convolve

    def recording(*args, **kwargs):
        if len(args) > 8 and args[8] is not None:  # as conv_norm_act calls it
            into_residual.append(args[9])
        return original(*args, **kwargs)

    monkeypatch.setattr(fused_inference, 'convolve', recording)
    with torch.no_grad():
        out = stage(x)
    assert_close(out, expected)
    assert torch.equal(x, x_before)
    assert into_residual == [True, True, True]  # the shortcut's new tensor, then owned inputs
    kept = []
    handle = stage[0].register_forward_hook(lambda module, args, output: kept.append(
        (output, output.clone())))
    into_residual.clear()
    with torch.no_grad():
        out = stage(x)
    assert into_residual == [True, False, True]
    assert torch.equal(*kept[0])
    assert_close(out, expected)
    handle.remove()
    # a global hook: no block fuses (the hook would miss the modules fused away), none
    # writes into an output the hook kept
    kept.clear()
    handle = torch.nn.modules.module.register_module_forward_hook(
        lambda module, args, output: kept.append((output, output.clone()))
        if module in list(stage) else None)
    into_residual.clear()
    try:
        with torch.no_grad():
            out = stage(x)
    finally:
        handle.remove()
    assert into_residual == [] and len(kept) == 3
    assert all(torch.equal(*pair) for pair in kept)
    assert_close(out, expected)


@pytest.mark.parametrize('channels_last', [False, True])
@pytest.mark.parametrize('form', ['native', 'dense'])
def test_pyconv_levels_as_onednn_convolutions_with_their_norm_slices(monkeypatch, channels_last,
                                                                     form):
    """The PyConv's oneDNN form: each level one convolution with its slice of the norm after
    it folded in (grouped levels grouped or expanded dense), equal to the modules, also on
    the next call after a level's weight and the norm's statistics change through ``.data``
    (the folded weights are kept in oneDNN's layout for channels_last inputs)."""
    from pyconv_mm.ops import PyConv2d
    torch.manual_seed(0)
    conv = PyConv2d(32, 32, [3, 5, 7], [1, 4, 8], shares=[0.25, 0.25, 0.5]).eval()
    norm = randomize_norms(nn.BatchNorm2d(32)).eval()
    x = in_format(torch.randn(2, 32, 9, 9), channels_last)
    if channels_last:
        conv = conv.to(memory_format=torch.channels_last)
    monkeypatch.setattr(conv, '_algorithm', lambda level, data: form)
    with torch.no_grad():
        for _ in range(2):
            assert_close(conv._forward_normed_by_onednn(x, norm), torch.relu(norm(conv(x))))
        conv.levels[2].weight.data.mul_(-1)
        norm.running_var.data.mul_(2)
        assert_close(conv._forward_normed_by_onednn(x, norm), torch.relu(norm(conv(x))))
