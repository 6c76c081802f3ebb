"""The classification demo learns: a shortened run of configs/demo/pyconvresnet_demo_cls.py
through tools/train.py, then AccMetric through tools/test.py."""
import os.path as osp
import re

import pytest

from conftest import PYTHON, config, run, tool

pytestmark = pytest.mark.slow


def test_demo_classifier_learns(tmp_path):
    work_dir = str(tmp_path / 'cls')
    cfg = config('demo/pyconvresnet_demo_cls.py')
    train = run([PYTHON, tool('train.py'), cfg, '--work-dir', work_dir, '--cfg-options',
                 'train_cfg.max_epochs=5', 'train_cfg.val_interval=1',
                 'param_scheduler.1.T_max=4'])
    accuracies = [float(a) for a in re.findall(r'Epoch\(val\) \[\d+\].*?accuracy/top1: ([\d.]+)',
                                               train.stdout)]
    assert len(accuracies) == 5
    test = run([PYTHON, tool('test.py'), cfg, osp.join(work_dir, 'epoch_5.pth'),
                '--work-dir', str(tmp_path / 'test')])
    final = float(re.search(r'Epoch\(test\).*?accuracy/top1: ([\d.]+)', test.stdout).group(1))
    assert final == pytest.approx(accuracies[-1])
    assert final >= 25.0, f'top-1 {final}% after 5 epochs (chance: 10%)'
    assert final >= accuracies[0] + 10, f'accuracy did not rise: {accuracies}'
