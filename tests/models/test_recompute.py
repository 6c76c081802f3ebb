"""Recomputing activations in backward (``entrance_cp``, ``with_cp``): the same outputs,
gradients and running statistics as keeping them, and fewer tensors kept."""
from typing import List, Tuple

import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from conftest import assert_same_buffers
from pyconv_mm.models.backbones import PyConvHGResNet, PyConvResNet, PyConvResNet3D


def _train_steps(model: torch.nn.Module, inputs: List[torch.Tensor]) -> List[Tuple]:
    """Forward and backward of each input in turn (gradients accumulate); the outputs."""
    model.train()
    outputs = []
    for x in inputs:
        outs = model(x.clone().requires_grad_(True))
        outs = outs if isinstance(outs, tuple) else (outs, )
        sum(o.square().mean() for o in outs).backward()
        outputs.append(tuple(o.detach() for o in outs))
    return outputs


def _assert_same_training(reference, model, inputs, exact_buffers: bool = True) -> None:
    """Same outputs and gradients, and bit-equal buffers (running statistics, batch counts);
    with ``exact_buffers=False`` the running statistics of the norms after stage 1's first
    PyConv within rounding (the kernel may apply that block's first norm as it reads, in
    another order of operations than the module), the others still bit for bit."""
    model.load_state_dict(reference.state_dict())

    def close(actual, expected, **kwargs):  # 1e-5 relative to the tensor's scale otherwise
        atol = 1e-6 if exact_buffers else 1e-5 * expected.abs().max().item()
        torch.testing.assert_close(actual, expected, rtol=1e-5, atol=atol, **kwargs)

    for expected, actual in zip(_train_steps(reference, inputs), _train_steps(model, inputs)):
        for want, got in zip(expected, actual):
            close(got, want)
    for (name, p), q in zip(reference.named_parameters(), model.parameters()):
        close(q.grad, p.grad, msg=name)
    # the stem's and the entrance's norm bit for bit either way
    assert_same_buffers(reference, model, lambda name: exact_buffers or name.startswith(
        ('bn1', 'layer1.0.bn1')))


def _saved_activations(model: torch.nn.Module, x: torch.Tensor) -> List[torch.Tensor]:
    """Tensors that one forward keeps for backward, each storage once, without the parameters
    and buffers."""
    own = {t.data_ptr() for t in list(model.parameters()) + list(model.buffers())}
    kept = {}

    def pack(tensor):
        ptr = tensor.untyped_storage().data_ptr()
        if ptr not in own:
            kept.setdefault(ptr, tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x.requires_grad_(True))
    return list(kept.values())


@pytest.mark.parametrize('memory_format', [torch.contiguous_format, torch.channels_last])
def test_entrance_cp_trains_as_keeping_the_activations(memory_format):
    """Stage 1 (where the kernel may apply the first block's norm as it reads, its rounding
    differs from the module's; through three more stages of batch norms over 2 x 2 pixels,
    differences of 1e-7 grow past 1e-5, as any other order of operations would)."""
    torch.manual_seed(0)
    reference = PyConvResNet(50, entrance_cp=False, num_stages=1, out_indices=(0, ))
    model = PyConvResNet(50, num_stages=1, out_indices=(0, ))
    assert model.layer1[0].cp_pyconv_input and not reference.layer1[0].cp_pyconv_input
    for m in (reference, model):
        m.to(memory_format=memory_format)
    inputs = [torch.randn(2, 3, 48, 48).to(memory_format=memory_format) for _ in range(2)]
    _assert_same_training(reference, model, inputs, exact_buffers=False)


def test_entrance_cp_keeps_no_pyconv_input_at_the_stem_resolution():
    """Without it, stage 1's first block keeps 3 activations at the stem's 24x24 (its input,
    the 1x1 reduce's output for BN, the BN/ReLU output for the PyConv); with it, the input
    and the reduce's output."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 48, 48)

    def at_stem_resolution(model):
        saved = _saved_activations(model.train(), x.clone())
        return [t for t in saved if t.shape[-2:] == (24, 24)]

    reference = at_stem_resolution(PyConvResNet(50, entrance_cp=False))
    kept = at_stem_resolution(PyConvResNet(50))
    # the stem's BN input and ReLU output are kept either way
    assert [tuple(t.shape) for t in reference] == [(2, 64, 24, 24)] * 4
    assert [tuple(t.shape) for t in kept] == [(2, 64, 24, 24)] * 3


def test_entrance_cp_only_where_the_first_block_strides_from_the_stem():
    model = PyConvResNet(50)
    assert model.layer1[0].cp_pyconv_input
    assert PyConvHGResNet(50).layer1[0].cp_pyconv_input
    assert PyConvResNet3D(50).layer1[0].cp_pyconv_input
    later = [block for name in ('layer1', 'layer2', 'layer3', 'layer4')
             for block in getattr(model, name)][1:]
    assert not any(block.cp_pyconv_input for block in later)
    # a max pool after the stem: stage 1 keeps its resolution, nothing is larger
    assert not PyConvResNet(50, maxpool='stem').layer1[0].cp_pyconv_input
    assert not PyConvResNet(50, entrance_cp=False).layer1[0].cp_pyconv_input
    # basic blocks start with the PyConv: no activation at the stem's resolution to drop
    assert not hasattr(PyConvResNet(18).layer1[0], 'cp_pyconv_input')


def test_entrance_cp_in_3d_trains_exactly_as_keeping_the_activations():
    torch.manual_seed(0)
    small = dict(depth=50, stem_channels=16, base_channels=8, stem_kernel=(3, 7, 7),
                 pyramids=[dict(kernel_sizes=[3, (3, 5, 5)], groups=[1, 2])] * 4)
    _assert_same_training(PyConvResNet3D(entrance_cp=False, **small),
                          PyConvResNet3D(**small), [torch.randn(2, 3, 4, 32, 32)])


def test_with_cp_updates_running_statistics_once():
    """A plain ``torch.utils.checkpoint`` runs every batch norm twice per step in training,
    doubling the momentum of its running statistics; ours recomputes on copies of them."""
    torch.manual_seed(0)
    reference = PyConvResNet(50, entrance_cp=False, out_indices=(1, 3))
    model = PyConvResNet(50, with_cp=True, out_indices=(1, 3))
    _assert_same_training(reference, model, [torch.randn(2, 3, 32, 32) for _ in range(2)])
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    assert all(int(m.num_batches_tracked) == 2 for m in norms)


def test_no_recomputation_in_eval_mode_or_without_grad():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 48, 48)
    model = PyConvResNet(50)
    # e.g. gradients of an input in eval mode: the block runs as usual
    saved = [t for t in _saved_activations(model.eval(), x.clone()) if t.shape[-2:] == (24, 24)]
    assert len(saved) == 4
    model.train()
    with torch.no_grad():
        model(x)
    assert all(int(m.num_batches_tracked) == 1 for m in model.modules()
               if isinstance(m, _BatchNorm))
