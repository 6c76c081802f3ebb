"""The segmentation demo learns (IoUMetric through tools/test.py beats the majority class),
draws overlays, and runs under mmseg's own tools."""
import glob
import os.path as osp
import re

import numpy as np
import pytest

from conftest import PYTHON, config, run, tool, upstream_tool

pytestmark = pytest.mark.slow
SEG_DEMO = config('demo/pyconvsegnet_demo.py')


def short(iters):
    return ['--cfg-options', f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={iters}',
            f'param_scheduler.1.end={iters}', f'default_hooks.checkpoint.interval={iters}',
            'default_hooks.logger.interval=10']


def majority_class_miou() -> float:
    """mIoU (%) of predicting the most frequent training class everywhere on the val set."""
    import cv2

    from pyconv_mm.datasets.demo import prepare
    from pyconv_mm.datasets.demo.segmentation import ADE_VALUES, DEMO_CLASSES
    root = prepare('ade20k')
    values = [ADE_VALUES[c] for c in DEMO_CLASSES]

    def counts(split):
        maps = [cv2.imread(p, cv2.IMREAD_UNCHANGED)
                for p in sorted(glob.glob(osp.join(root, 'annotations', split, '*.png')))]
        return maps, np.array([sum((m == v).sum() for m in maps) for v in values])

    _, train_counts = counts('training')
    val_maps, val_counts = counts('validation')
    majority = values[int(train_counts.argmax())]
    labelled = sum((m > 0).sum() for m in val_maps)  # "other" (0) is ignored
    ious = [(val_counts[i] / labelled if v == majority else 0.0)
            for i, v in enumerate(values) if val_counts[i] > 0]
    return 100 * float(np.mean(ious))


def test_demo_segmentation_learns_and_draws(tmp_path):
    work_dir = str(tmp_path / 'seg')
    run([PYTHON, tool('train.py'), SEG_DEMO, '--work-dir', work_dir, *short(120)])
    ckpt = osp.join(work_dir, 'iter_120.pth')
    show_dir = str(tmp_path / 'show')
    proc = run([PYTHON, tool('test.py'), SEG_DEMO, ckpt, '--work-dir', str(tmp_path / 'test'),
                '--show-dir', show_dir])
    miou = float(re.search(r'Iter\(test\).*?mIoU: ([\d.]+)', proc.stdout).group(1))
    baseline = majority_class_miou()
    assert 3 < baseline < 15
    assert miou > baseline + 25, f'mIoU {miou} vs majority-class {baseline:.1f}'
    overlays = glob.glob(osp.join(show_dir, '**', '*.png'), recursive=True)
    assert len(overlays) == 60

    from pyconv_mm.datasets.demo import prepare
    image = osp.join(prepare('ade20k'), 'images', 'validation', 'ADE_val_00000001.jpg')
    out = tmp_path / 'overlay.png'
    proc = run([PYTHON, tool('demo/seg_demo.py'), image, SEG_DEMO, ckpt, '--out', str(out)])
    assert out.stat().st_size > 0 and 'sky' in proc.stdout
    again = run([PYTHON, tool('demo/seg_demo.py'), image, SEG_DEMO, ckpt, '--out', str(out)],
                check=False)
    assert again.returncode != 0 and '--force' in again.stdout


def test_upstream_mmseg_tools_run_the_demo_config(tmp_path):
    work_dir = str(tmp_path / 'upstream')
    subset = ['val_dataloader.dataset.indices=8', 'test_dataloader.dataset.indices=8']
    warmup = ['param_scheduler.0.end=4', 'param_scheduler.1.begin=4']  # 50 in the config
    run([PYTHON, upstream_tool('mmseg', 'train.py'), SEG_DEMO, '--work-dir', work_dir,
         *short(8), *warmup, *subset])
    proc = run([PYTHON, upstream_tool('mmseg', 'test.py'), SEG_DEMO,
                osp.join(work_dir, 'iter_8.pth'), '--work-dir', work_dir, '--cfg-options', *subset])
    assert 'mIoU' in proc.stdout
