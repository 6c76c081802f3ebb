"""The video demo trains end to end: through tools/train.py and tools/test.py (mmaction2's
RawframeDataset, pipeline and AccMetric) a PyConvResNet3D fits a subset of the training clips,
and mmaction2's own tools run the config.

Generalising to unseen clips takes the demo 6 to 12 epochs of the full set (the epoch of the
breakthrough varies between runs), too long and too variable for a test: the README reports
full runs.
"""
import os.path as osp
import re

import pytest

from conftest import PYTHON, config, run, tool, upstream_tool

from pyconv_mm.datasets.demo import prepare

pytestmark = pytest.mark.slow
VIDEO_DEMO = config('demo/pyconvresnet3d_demo.py')


def short(epochs):
    return ['--cfg-options', f'train_cfg.max_epochs={epochs}', f'train_cfg.val_interval={epochs}',
            f'param_scheduler.1.T_max={epochs - 1}', f'default_hooks.checkpoint.interval={epochs}']


def test_demo_video_classifier_fits_its_training_clips(tmp_path):
    root = prepare('kinetics')
    clips = 48
    on_train_clips = [f'test_dataloader.dataset.ann_file={root}/train_list.txt',
                      f'test_dataloader.dataset.data_prefix.img={root}/rawframes/train',
                      f'test_dataloader.dataset.indices={clips}']
    work_dir = str(tmp_path / 'video')
    run([PYTHON, tool('train.py'), VIDEO_DEMO, '--work-dir', work_dir, *short(20),
         f'train_dataloader.dataset.indices={clips}'])
    proc = run([PYTHON, tool('test.py'), VIDEO_DEMO, osp.join(work_dir, 'epoch_20.pth'),
                '--work-dir', str(tmp_path / 'test'), '--cfg-options', *on_train_clips])
    top1 = float(re.search(r'Epoch\(test\).*?acc/top1: ([\d.]+)', proc.stdout).group(1))
    assert top1 >= 0.8, f'top-1 {top1} on the {clips} training clips (chance 0.167)'


def test_upstream_mmaction_tools_run_the_demo_config(tmp_path):
    work_dir = str(tmp_path / 'upstream')
    subset = ['train_dataloader.dataset.indices=8', 'val_dataloader.dataset.indices=6',
              'test_dataloader.dataset.indices=6']
    run([PYTHON, upstream_tool('mmaction', 'train.py'), VIDEO_DEMO, '--work-dir', work_dir,
         *short(2), *subset])
    proc = run([PYTHON, upstream_tool('mmaction', 'test.py'), VIDEO_DEMO,
                osp.join(work_dir, 'epoch_2.pth'), '--work-dir', work_dir, *short(2), *subset])
    assert 'acc/top1' in proc.stdout
