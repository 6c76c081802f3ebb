"""tools/convert/official_to_mmpretrain.py on checkpoints in the authors' layout."""
import os.path as osp

import pytest
import torch

from conftest import PYTHON, run, tool
from convert.reference_models import AuthorsPyConvResNet, randomize


def convert(src, dst, *extra, check=True):
    return run([PYTHON, tool('convert/official_to_mmpretrain.py'), str(src), str(dst), *extra],
               check=check)


def load_into_classifier(path, backbone_type, depth):
    import pyconv_mm  # noqa: F401
    from mmengine.registry import DefaultScope
    from mmengine.runner.checkpoint import load_checkpoint
    from mmpretrain.registry import MODELS
    with DefaultScope.overwrite_default_scope('mmpretrain'):  # whatever an earlier test left
        model = MODELS.build(dict(
            type='ImageClassifier', backbone=dict(type=backbone_type, depth=depth),
            neck=dict(type='GlobalAveragePooling'),
            head=dict(type='LinearClsHead', num_classes=1000, in_channels=2048)))
    load_checkpoint(model, str(path), map_location='cpu', strict=True)
    return model.eval()


@pytest.mark.parametrize('hg, backbone_type', [(False, 'PyConvResNet'), (True, 'PyConvHGResNet')])
def test_converted_weights_give_identical_logits(tmp_path, hg, backbone_type):
    reference = randomize(AuthorsPyConvResNet(50, hg=hg))
    src = tmp_path / 'authors.pth'
    state = {f'module.{k}': v for k, v in reference.state_dict().items()}  # DataParallel prefix
    torch.save(dict(state_dict=state, epoch=90, arch='pyconvresnet50'), src)
    dst = tmp_path / 'ours.pth'
    proc = convert(src, dst)
    assert f'{backbone_type}-50' in proc.stdout
    ours = load_into_classifier(dst, backbone_type, 50)
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=1e-4, atol=1e-4)


def test_backbone_only_for_init_cfg(tmp_path):
    import pyconv_mm  # noqa: F401
    from mmseg.registry import MODELS
    reference = randomize(AuthorsPyConvResNet(50))
    src, dst = tmp_path / 'authors.pth', tmp_path / 'backbone.pth'
    torch.save(reference.state_dict(), src)
    convert(src, dst, '--backbone-only')
    backbone = MODELS.build(dict(type='PyConvResNet', depth=50, out_indices=(3, ),
                                 init_cfg=dict(type='Pretrained', checkpoint=str(dst))))
    backbone.init_weights()
    backbone.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(backbone(x)[0], reference.features(x)[1])


def test_refuses_mismatched_keys_and_never_overwrites(tmp_path):
    state = randomize(AuthorsPyConvResNet(50)).state_dict()
    state.pop('layer2.0.conv2.conv2_3.weight')
    state['layer2.0.extra.weight'] = torch.zeros(1)
    src, dst = tmp_path / 'bad.pth', tmp_path / 'out.pth'
    torch.save(state, src)
    proc = convert(src, dst, check=False)
    assert proc.returncode != 0
    assert 'missing keys (1): backbone.layer2.0.conv2.levels.2.weight' in proc.stdout
    assert 'unexpected keys (1): backbone.layer2.0.extra.weight' in proc.stdout
    assert not osp.exists(dst)

    dst.write_bytes(b'precious')
    good = tmp_path / 'good.pth'
    torch.save(randomize(AuthorsPyConvResNet(50)).state_dict(), good)
    proc = convert(good, dst, check=False)
    assert proc.returncode != 0 and '--force' in proc.stdout
    assert dst.read_bytes() == b'precious'
    convert(good, dst, '--force')
    assert dst.read_bytes() != b'precious'


def test_refuses_pickled_code_and_wrong_hash(tmp_path):
    src = tmp_path / 'evil.pth'
    torch.save({'conv1.weight': torch.zeros(1), 'hook': osp.join}, src)
    proc = convert(src, tmp_path / 'out.pth', check=False)
    assert proc.returncode != 0 and 'Weights only load failed' in proc.stdout
    good = tmp_path / 'good.pth'
    torch.save(randomize(AuthorsPyConvResNet(50)).state_dict(), good)
    proc = convert(good, tmp_path / 'out.pth', '--sha256', '0' * 64, check=False)
    assert proc.returncode != 0 and 'SHA-256' in proc.stdout
