"""The detection demo learns: CocoMetric (pycocotools) through tools/test.py reports a bbox mAP
clearly above zero, --show-dir draws boxes, and mmdet's own tools run the config."""
import glob
import os.path as osp
import re

import pytest

from conftest import PYTHON, config, run, tool, upstream_tool

pytestmark = pytest.mark.slow
DET_DEMO = config('demo/pyconvssd_demo.py')


def short(epochs):
    return ['--cfg-options', f'train_cfg.max_epochs={epochs}', f'train_cfg.val_interval={epochs}',
            f'param_scheduler.1.T_max={epochs - 1}', f'default_hooks.checkpoint.interval={epochs}']


def test_demo_detector_learns_and_draws(tmp_path):
    work_dir = str(tmp_path / 'det')
    run([PYTHON, tool('train.py'), DET_DEMO, '--work-dir', work_dir, *short(8)])
    show_dir = str(tmp_path / 'show')
    proc = run([PYTHON, tool('test.py'), DET_DEMO, osp.join(work_dir, 'epoch_8.pth'),
                '--work-dir', str(tmp_path / 'test'), '--show-dir', show_dir,
                '--out', str(tmp_path / 'dets.pkl')])
    box_map = float(re.search(r'coco/bbox_mAP: ([\d.]+)', proc.stdout).group(1))
    assert box_map >= 0.05, f'bbox mAP {box_map} after 8 epochs'
    assert len(glob.glob(osp.join(show_dir, '*.jpg'))) == 60
    assert (tmp_path / 'dets.pkl').stat().st_size > 0


def test_upstream_mmdet_tools_run_the_demo_config(tmp_path):
    work_dir = str(tmp_path / 'upstream')
    subset = ['train_dataloader.dataset.indices=8', 'val_dataloader.dataset.indices=8',
              'test_dataloader.dataset.indices=8']
    args = short(2)
    run([PYTHON, upstream_tool('mmdet', 'train.py'), DET_DEMO, '--work-dir', work_dir,
         *args, *subset])
    proc = run([PYTHON, upstream_tool('mmdet', 'test.py'), DET_DEMO,
                osp.join(work_dir, 'epoch_2.pth'), '--work-dir', work_dir, *args, *subset])
    assert 'coco/bbox_mAP' in proc.stdout
