"""The video demo learns motion classes: mmaction2's AccMetric through tools/test.py reports a
top-1 clearly above chance (1/6), and mmaction2's own tools run the config."""
import os.path as osp
import re

import pytest

from conftest import PYTHON, config, run, tool, upstream_tool

pytestmark = pytest.mark.slow
VIDEO_DEMO = config('demo/pyconvresnet3d_demo.py')


def short(epochs):
    return ['--cfg-options', f'train_cfg.max_epochs={epochs}', f'train_cfg.val_interval={epochs}',
            f'param_scheduler.1.T_max={epochs - 1}', f'default_hooks.checkpoint.interval={epochs}']


def test_demo_video_classifier_learns(tmp_path):
    work_dir = str(tmp_path / 'video')
    run([PYTHON, tool('train.py'), VIDEO_DEMO, '--work-dir', work_dir, *short(8)])
    proc = run([PYTHON, tool('test.py'), VIDEO_DEMO, osp.join(work_dir, 'epoch_8.pth'),
                '--work-dir', str(tmp_path / 'test')])
    top1 = float(re.search(r'Epoch\(test\).*?acc/top1: ([\d.]+)', proc.stdout).group(1))
    assert top1 >= 1 / 6 + 0.15, f'top-1 {top1} after 8 epochs (chance 0.167)'


def test_upstream_mmaction_tools_run_the_demo_config(tmp_path):
    work_dir = str(tmp_path / 'upstream')
    subset = ['train_dataloader.dataset.indices=32', 'val_dataloader.dataset.indices=10',
              'test_dataloader.dataset.indices=10']
    run([PYTHON, upstream_tool('mmaction', 'train.py'), VIDEO_DEMO, '--work-dir', work_dir,
         *short(2), *subset])
    proc = run([PYTHON, upstream_tool('mmaction', 'test.py'), VIDEO_DEMO,
                osp.join(work_dir, 'epoch_2.pth'), '--work-dir', work_dir, *short(2), *subset])
    assert 'acc/top1' in proc.stdout
