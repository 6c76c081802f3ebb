"""Folded weights kept in oneDNN's layout: the fingerprint sees every change of their sources,
an entry serves only the input shape and settings it was made for, and releasing, turning
off and training drop them."""
import gc

import pytest
import torch
from torch import nn

from pyconv_mm.models.backbones import PyConvResNet
from pyconv_mm.ops import fused_inference, packed_weights

pytestmark = pytest.mark.skipif(not packed_weights.AVAILABLE,
                                reason='built without our extension or oneDNN weight packing')


def channels_last(*shape: int) -> torch.Tensor:
    return torch.randn(*shape).contiguous(memory_format=torch.channels_last)


def test_fingerprint_sees_every_change_of_bytes_and_layout():
    torch.manual_seed(0)
    weight = torch.randn(64, 96, 3, 3)  # 216 KiB: several chunks, hashed by two threads
    base = packed_weights.fingerprint([weight])
    assert packed_weights.fingerprint([weight.clone()]) == base
    torch.set_num_threads(1)
    try:
        assert packed_weights.fingerprint([weight]) == base
    finally:
        torch.set_num_threads(2)
    flat = weight.reshape(-1)

    def at(*positions: int):
        """An edit writing ``values(flat)`` at ``positions`` of the flattened weight."""
        index = torch.tensor(positions)
        return lambda values: (lambda w: w.view(-1).index_copy_(0, index, values(flat[index])))

    one_ulp = torch.nextafter(flat[1000], torch.tensor(float('inf')))
    changed = {
        'one ulp': at(1000)(lambda v: one_ulp.reshape(1)),
        'two signs': at(5, 40000)(lambda v: -v),
        'swap in a chunk': at(7, 9)(lambda v: v.flip(0)),
        'swap across chunks': at(7, 50007)(lambda v: v.flip(0)),
        'negated': lambda w: w.neg_(),
        'rolled': lambda w: w.copy_(weight.roll(1)),
        'channels permuted': lambda w: w.copy_(weight[torch.randperm(64)]),
    }
    for name, change in changed.items():
        edited = weight.clone()
        change(edited)
        assert not torch.equal(edited, weight), name
        assert packed_weights.fingerprint([edited]) != base, name
    layouts = [weight.reshape(96, 64, 3, 3), weight.view(torch.int32),
               weight.contiguous(memory_format=torch.channels_last), weight.double()]
    assert len({base, *(packed_weights.fingerprint([t]) for t in layouts)}) == 5
    assert packed_weights.fingerprint([weight, None]) != base
    assert packed_weights.fingerprint([None, weight]) != packed_weights.fingerprint([weight, None])
    tail = torch.arange(1001, dtype=torch.uint8)  # not a whole number of words
    edited = tail.clone()
    edited[-1] += 1
    assert packed_weights.fingerprint([tail]) != packed_weights.fingerprint([edited])
    strided = weight[:, ::2]  # not dense: hashed from a contiguous copy with its strides
    assert packed_weights.fingerprint([strided]) == packed_weights.fingerprint([strided])


class CountingFold:
    """A 1x1 convolution's fold (norm scale 2) that counts its calls."""

    def __init__(self, conv: nn.Conv2d) -> None:
        self.conv, self.calls = conv, 0

    def __call__(self):
        self.calls += 1
        return self.conv.weight * 2, None


def kept_folded(conv: nn.Conv2d, x: torch.Tensor, fold: CountingFold, settings=()):
    return packed_weights.folded(conv, x, (conv.weight, ), settings, conv.stride, conv.padding,
                                 conv.dilation, conv.groups, fold)


def test_a_kept_weight_serves_while_its_sources_shape_and_settings_are_unchanged():
    conv = nn.Conv2d(32, 16, 1, bias=False)
    fold = CountingFold(conv)
    x = channels_last(2, 32, 7, 7)
    with torch.no_grad():
        weight, _ = kept_folded(conv, x, fold)
        assert kept_folded(conv, x, fold)[0] is weight and fold.calls == 1
        out = torch.ops.mkldnn._convolution_pointwise(x, weight, None, [0, 0], [1, 1], [1, 1], 1,
                                                      'none', [], '')
        torch.testing.assert_close(out, nn.functional.conv2d(x, conv.weight * 2))
        conv.weight.data.mul_(-1)  # unseen by autograd's version counter
        assert kept_folded(conv, x, fold)[0] is not weight and fold.calls == 2
        kept_folded(conv, channels_last(2, 32, 14, 14), fold)  # another input shape
        kept_folded(conv, channels_last(2, 32, 14, 14), fold, settings=(0.5, ))
        assert fold.calls == 4
        for _ in range(2):  # NCHW: oneDNN would answer channels_last, so nothing is kept
            assert kept_folded(conv, torch.randn(2, 32, 7, 7), fold)[0].layout == torch.strided
        assert fold.calls == 6
        kept_folded(conv, x, fold)
        packed_weights.release(conv)
        assert not packed_weights.kept(conv)
        packed_weights.set_enabled(False)
        try:
            kept_folded(conv, x, fold)
            kept_folded(conv, x, fold)
            assert fold.calls == 9 and not packed_weights.kept(conv)
        finally:
            packed_weights.set_enabled(True)


def test_entries_go_with_their_modules_and_training_releases_them(monkeypatch):
    monkeypatch.setattr(fused_inference, 'prefer_fused', lambda *args: True)
    model = PyConvResNet(50).eval().to(memory_format=torch.channels_last)
    with torch.no_grad():
        model(channels_last(1, 3, 64, 64))
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert packed_weights.kept(model.conv1) and packed_weights.kept(model.layer4[2].conv3)
    model.train()
    assert not any(packed_weights.kept(m) for m in convs)

    conv = nn.Conv2d(8, 8, 1)
    kept_folded(conv, channels_last(1, 8, 4, 4), CountingFold(conv))
    count = len(packed_weights._ENTRIES)
    del conv
    gc.collect()
    assert len(packed_weights._ENTRIES) == count - 1
