"""PyConvResNet / PyConvHGResNet: exact numbers of the paper and OpenMMLab conventions."""
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from torch.nn.modules.batchnorm import _BatchNorm

from conftest import ROOT, complexity, config
from pyconv_mm.models.backbones import PyConvBottleneck, PyConvHGResNet, PyConvResNet

# Exact parameter counts of the authors' models (1000 classes), ../shared/SPEC.md
EXACT_PARAMS = {
    'pyconvresnet/pyconvresnet50_8xb32_in1k.py': 24_847_720,
    'pyconvresnet/pyconvresnet101_8xb32_in1k.py': 42_307_944,
    'pyconvresnet/pyconvresnet152_8xb32_in1k.py': 56_640_872,
    'pyconvresnet/pyconvhgresnet50_8xb32_in1k.py': 25_234_728,
    'pyconvresnet/pyconvhgresnet101_8xb32_in1k.py': 44_627_240,
    'pyconvresnet/pyconvhgresnet152_8xb32_in1k.py': 60_657_960,
}
EXACT_PARAMS_18_34 = {18: 5_911_976, 34: 11_091_048}
# Paper GFLOPs at 224x224 (Table 3)
PAPER_GFLOPS = {
    'pyconvresnet/pyconvresnet50_8xb32_in1k.py': 3.88,
    'pyconvresnet/pyconvresnet101_8xb32_in1k.py': 7.31,
    'pyconvresnet/pyconvresnet152_8xb32_in1k.py': 10.72,
    'pyconvresnet/pyconvhgresnet50_8xb32_in1k.py': 4.61,
    'pyconvresnet/pyconvhgresnet101_8xb32_in1k.py': 8.42,
    'pyconvresnet/pyconvhgresnet152_8xb32_in1k.py': 12.29,
}
# Table 2 (params in M, GFLOPs)
TABLE2 = {
    'levels1111-stempool': (25.56, 4.14),
    'levels2221-stempool': (24.91, 3.91),
    'levels3321-stempool': (24.85, 3.85),
    'levels4321-stempool': (24.85, 3.84),
    'top4321-stempool': (24.24, 3.63),
    'levels5432-stempool': (23.45, 3.71),
    'levels4321-firstpool': (24.85, 3.88),
    'levels4321-allpool': (24.85, 3.88),
}
CLS_CONFIGS = sorted(osp.relpath(p, osp.join(ROOT, 'configs'))
                     for p in glob.glob(osp.join(ROOT, 'configs', 'pyconvresnet', '**', '*.py'),
                                        recursive=True))


@pytest.mark.parametrize('cfg', sorted(EXACT_PARAMS))
def test_exact_params_of_the_authors_models(cfg):
    assert complexity(cfg)['params'] == EXACT_PARAMS[cfg]


@pytest.mark.parametrize('depth', [18, 34])
def test_exact_params_basic_block_depths(depth):
    from mmpretrain.registry import MODELS
    import pyconv_mm  # noqa: F401
    model = MODELS.build(dict(
        type='ImageClassifier', backbone=dict(type='PyConvResNet', depth=depth),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=1000, in_channels=512)))
    assert sum(p.numel() for p in model.parameters()) == EXACT_PARAMS_18_34[depth]


@pytest.mark.parametrize('cfg', sorted(PAPER_GFLOPS))
def test_gflops_within_2_percent_of_the_paper(cfg):
    gflops = complexity(cfg)['gflops']
    assert gflops == pytest.approx(PAPER_GFLOPS[cfg], rel=0.02)


@pytest.mark.parametrize('row', sorted(TABLE2))
def test_table2_ablation_rows(row):
    info = complexity(f'pyconvresnet/ablation/pyconvresnet50-{row}_8xb32_in1k.py')
    params, gflops = TABLE2[row]
    assert info['params'] / 1e6 == pytest.approx(params, rel=0.005)
    assert info['gflops'] == pytest.approx(gflops, rel=0.02)


def test_test320_config_measures_at_320():
    info = complexity('pyconvresnet/pyconvresnet50_8xb128-amp-cutmix-cos-300e_in1k-test320.py')
    assert info['shape'] == (3, 320, 320)
    assert info['gflops'] == pytest.approx(7.91, rel=0.02)  # Table 4


def _train_step(cfg_path):
    import pyconv_mm  # noqa: F401
    from mmengine.optim import OptimWrapper
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    from mmpretrain.structures import DataSample
    cfg = Config.fromfile(config(cfg_path))
    init_default_scope(cfg.default_scope)
    cfg.model.setdefault('data_preprocessor', cfg.get('data_preprocessor'))  # as the Runner does
    model = MODELS.build(cfg.model)
    model.init_weights()
    data = dict(inputs=[torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8) for _ in range(2)],
                data_samples=[DataSample().set_gt_label(i) for i in (3, 7)])
    optimizer = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01))
    before = model.backbone.conv1.weight.detach().clone()
    losses = model.train_step(data, optimizer)
    assert torch.isfinite(losses['loss'])
    assert not torch.equal(before, model.backbone.conv1.weight)  # a real backward + step
    model.eval()
    with torch.no_grad():
        preds = model.val_step(data)
    assert preds[0].pred_score.shape == (1000, )


@pytest.mark.parametrize('cfg', CLS_CONFIGS)
def test_config_trains_one_step(cfg):
    if 'ablation' in cfg and 'levels4321-allpool' not in cfg:
        Config.fromfile(config(cfg))  # ablations differ only in the backbone, checked above
        return
    _train_step(cfg)


# ---------------------------------------------------------------- OpenMMLab conventions
def test_out_indices_shapes():
    model = PyConvResNet(50, out_indices=(0, 1, 2, 3))
    outs = model(torch.randn(1, 3, 64, 64))
    assert [tuple(o.shape[1:]) for o in outs] == [(256, 16, 16), (512, 8, 8), (1024, 4, 4),
                                                  (2048, 2, 2)]


def test_resnet_placement_keeps_stage1_resolution():
    model = PyConvResNet(50, pyramids=(1, 1, 1, 1), maxpool='stem', out_indices=(0, 3))
    outs = model(torch.randn(1, 3, 64, 64))
    assert [tuple(o.shape[1:]) for o in outs] == [(256, 16, 16), (2048, 2, 2)]


def test_dilated_output_stride_8_keeps_shortcut_pool():
    model = PyConvResNet(50, strides=(2, 2, 1, 1), dilations=(1, 1, 2, 4), out_indices=(2, 3))
    outs = model(torch.randn(1, 3, 64, 64))
    assert [tuple(o.shape[1:]) for o in outs] == [(1024, 8, 8), (2048, 8, 8)]
    pool = model.layer3[0].downsample[0]
    assert isinstance(pool, torch.nn.MaxPool2d) and pool.stride == 1
    assert model.layer4[1].conv2.levels[0].dilation == (4, 4)


def test_detection_cut_after_stage3():
    model = PyConvResNet(50, num_stages=3, strides=(2, 2, 1), out_indices=(2, ))
    assert not hasattr(model, 'layer4')
    assert model(torch.randn(1, 3, 300, 300))[0].shape == (1, 1024, 38, 38)


def test_frozen_stages():
    model = PyConvResNet(50, frozen_stages=2)
    model.train()
    for module in [model.conv1, model.bn1, model.layer1, model.layer2]:
        assert all(not p.requires_grad for p in module.parameters())
        assert all(not m.training for m in module.modules())
    assert all(p.requires_grad for p in model.layer3.parameters())
    assert model.layer3.training


def test_norm_eval():
    model = PyConvResNet(18, norm_eval=True)
    model.train()
    assert all(not m.training for m in model.modules() if isinstance(m, _BatchNorm))


def test_with_cp_reaches_every_block_and_matches():
    torch.manual_seed(0)
    model = PyConvResNet(50, with_cp=True, out_indices=(3, ))
    blocks = [m for m in model.modules() if isinstance(m, PyConvBottleneck)]
    assert len(blocks) == 16 and all(b.with_cp for b in blocks)
    model.train()
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    out = model(x)[0]
    out.sum().backward()
    # the modules as written (with_cp recomputes the same ops; the default entrance_cp may let
    # the kernel apply stage 1's first norm, whose rounding batch norms over 1 x 1 pixels of
    # two images at stage 4 would blow up)
    reference = PyConvResNet(50, entrance_cp=False, out_indices=(3, ))
    reference.load_state_dict(model.state_dict())
    reference.train()
    x2 = x.detach().clone().requires_grad_(True)
    torch.testing.assert_close(reference(x2)[0], out)
    reference(x2)[0].sum().backward()


def test_zero_init_residual():
    model = PyConvResNet(50, zero_init_residual=True)
    model.init_weights()
    for block in (m for m in model.modules() if isinstance(m, PyConvBottleneck)):
        assert torch.all(block.bn3.weight == 0)


def test_hg_widths_and_groups():
    model = PyConvHGResNet(50)
    conv = model.layer1[0].conv2
    assert conv.in_channels == 128 and [lvl.groups for lvl in conv.pyramid] == [32] * 4
    assert [lvl.groups for lvl in model.layer2[0].conv2.pyramid] == [32, 64, 64]
    assert model.layer4[0].conv3.out_channels == 2048


@pytest.mark.parametrize('kwargs, message', [
    (dict(depth=42), 'depth=42 is not supported; valid: \\[18, 34, 50, 101, 152\\]'),
    (dict(depth=50, maxpool='middle'), "maxpool='middle'"),
    (dict(depth=50, pyramids=(4, 3, 2)), 'pyramids=\\(4, 3, 2\\) has 3 entries'),
    (dict(depth=50, pyramids=(4, 3, 2, 'x')), "pyramids\\[3\\]='x'"),
    (dict(depth=50, pyramids=(4, 3, 2, dict(kernel_sizes=[3], level=1))), 'unknown keys'),
    (dict(depth=50, out_indices=(4, )), 'out_indices=\\(4,\\) contains 4'),
    (dict(depth=50, frozen_stages=7), 'frozen_stages=7'),
    (dict(depth=50, num_stages=5), 'num_stages=5'),
])
def test_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PyConvResNet(**kwargs)


def test_hg_rejects_basic_depths():
    with pytest.raises(ValueError, match='PyConvHGResNet: depth=18 .* valid: \\[50, 101, 152\\]'):
        PyConvHGResNet(18)


@pytest.mark.parametrize('scope', ['mmpretrain', 'mmseg', 'mmdet', 'mmaction'])
def test_backbone_builds_in_every_scope(scope):
    import importlib

    import pyconv_mm  # noqa: F401
    from mmengine.registry import DefaultScope
    registry = importlib.import_module(f'{scope}.registry').MODELS
    with DefaultScope.overwrite_default_scope(scope):
        model = registry.build(dict(type='PyConvResNet', depth=18))
    assert isinstance(model, PyConvResNet)
