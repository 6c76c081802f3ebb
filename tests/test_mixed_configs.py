"""configs/mixed: upstream recipes (inherited through the codebases' scopes) with PyConv
modules swapped in; each builds through its upstream registry and trains on the demo data."""
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from conftest import PYTHON, ROOT, complexity, run, tool, upstream_tool
from demo_adapters import to_demo

MIXED = sorted(glob.glob(osp.join(ROOT, 'configs', 'mixed', '*.py')))


def _demo_config(path, tmp_path, iters=2, validate=True):
    cfg = to_demo(Config.fromfile(path), iters)
    if not validate:
        cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    out = tmp_path / osp.basename(path)
    cfg.dump(str(out))
    return cfg, str(out)


@pytest.mark.parametrize('path', MIXED, ids=osp.basename)
def test_mixed_config_train_and_inference_step(path, tmp_path):
    import pyconv_mm  # noqa: F401
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner
    cfg, _ = _demo_config(path, tmp_path)
    init_default_scope(cfg.default_scope)
    cfg.work_dir = str(tmp_path / 'work')
    runner = Runner.from_cfg(cfg)
    model = runner.model
    assert any(type(m).__name__.startswith('PyConv') for m in model.modules())
    batch = next(iter(runner.build_dataloader(cfg.train_dataloader)))
    model.train()
    losses = model.train_step(batch, runner.build_optim_wrapper(cfg.optim_wrapper))
    assert all(torch.isfinite(v).all() for k, v in losses.items() if 'loss' in k)
    model.eval()
    with torch.no_grad():
        outputs = model.val_step(next(iter(runner.build_dataloader(cfg.val_dataloader))))
    assert len(outputs) == cfg.val_dataloader.batch_size


@pytest.mark.slow
@pytest.mark.parametrize('name, tool_path', [
    ('upernet_pyconvr50_4xb4-80k_ade20k-512x512.py', tool('train.py')),
    ('deeplabv3_pyconvr50-d8_4xb4-80k_ade20k-512x512.py', upstream_tool('mmseg', 'train.py')),
    ('faster-rcnn_pyconvr50_pyconv-fpn_1x_coco.py', upstream_tool('mmdet', 'train.py')),
])
def test_mixed_configs_train_with_the_tools(name, tool_path, tmp_path):
    _, cfg_file = _demo_config(osp.join(ROOT, 'configs', 'mixed', name), tmp_path, iters=2,
                               validate=False)
    proc = run([PYTHON, tool_path, cfg_file, '--work-dir', str(tmp_path / 'work')])
    assert 'Iter(train) [2/2]' in proc.stdout
    assert osp.isfile(tmp_path / 'work' / 'iter_2.pth')


def test_conv_cfg_drop_in_replaces_only_kxk_convs():
    fcn = complexity(osp.join(ROOT, 'configs', 'mixed',
                              'fcn-pyconv_r50-d8_4xb4-80k_ade20k-512x512.py'))
    pyconvs = [line for line in fcn['layers']['pyconv'] if 'head' in line]
    assert len(pyconvs) == 4  # decode head: 2 convs + conv_cat; auxiliary head: 1 conv
    assert all('9x9/G16' in line for line in pyconvs)
    assert not any('head' in line for line in fcn['layers']['plain'])
    fpn = complexity(osp.join(ROOT, 'configs', 'mixed',
                              'faster-rcnn_pyconvr50_pyconv-fpn_1x_coco.py'))
    plain_fpn = complexity(osp.join(ROOT, 'configs', 'mixed',
                                    'faster-rcnn_pyconvr50_fpn_1x_coco.py'))
    assert sum('neck.fpn_convs' in line for line in fpn['layers']['pyconv']) == 4
    assert fpn['params'] < plain_fpn['params'] and fpn['gflops'] < plain_fpn['gflops']


def test_conv_cfg_bad_settings_name_the_module():
    import pyconv_mm  # noqa: F401
    from mmengine.registry import DefaultScope
    from mmseg.registry import MODELS
    DefaultScope.get_instance('pyconv_mixed_test', scope_name='mmseg')
    base = dict(type='FCNHead', in_channels=64, in_index=0, num_classes=3, num_convs=1)
    with pytest.raises(ValueError, match="FCNHead: conv_cfg PyConv for a 64->60 3x3 conv.*"
                                         "groups\\[2\\]=8 must divide"):
        MODELS.build(dict(base, channels=60, conv_cfg=dict(
            type='PyConv', pyconv_kernels=[3, 5, 7], pyconv_groups=[1, 4, 8])))
    from mmdet.registry import MODELS as DET_MODELS
    DefaultScope.get_instance('pyconv_mixed_test_det', scope_name='mmdet')
    with pytest.raises(ValueError, match='SSDNeck: a 3x3 conv with padding=0 changes the '
                                         'spatial size'):
        DET_MODELS.build(dict(type='SSDNeck', in_channels=(64, ), out_channels=(64, 64, 64),
                              level_strides=(2, 1), level_paddings=(1, 0), l2_norm_scale=None,
                              conv_cfg=dict(type='PyConv', levels=2)))


def test_conv_cfg_default_rule_follows_the_paper():
    import pyconv_mm  # noqa: F401
    from mmcv.cnn import ConvModule
    levels = {c: len(ConvModule(c, c, 3, padding=1, conv_cfg=dict(type='PyConv')).conv.levels)
              for c in (64, 128, 256, 512)}
    assert levels == {64: 4, 128: 3, 256: 2, 512: 1}
    stem = ConvModule(3, 64, 7, padding=3, conv_cfg=dict(type='PyConv'))
    assert isinstance(stem.conv, torch.nn.Conv2d)  # narrow inputs (an image) stay plain
