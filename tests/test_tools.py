"""The real tools end to end: train/test, 2-process training, resume after SIGKILL,
and the codebases' own tools running our configs."""
import glob
import os
import os.path as osp
import re
import signal
import subprocess
import time

import pytest
import torch

from conftest import PYTHON, ROOT, config, run, tool, upstream_tool

pytestmark = pytest.mark.slow

CLS_DEMO = config('demo/pyconvresnet_demo_cls.py')
# a short run of the classification demo: 64 images, batches of 16 -> 4 iterations per epoch
SHORT = ['train_dataloader.dataset.indices=64', 'train_dataloader.batch_size=16',
         'train_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False',
         'val_dataloader.dataset.indices=32', 'val_dataloader.num_workers=0',
         'val_dataloader.persistent_workers=False', 'test_dataloader.dataset.indices=32',
         'test_dataloader.num_workers=0', 'test_dataloader.persistent_workers=False',
         'default_hooks.logger.interval=1']


def checkpoint_meta(path: str) -> dict:
    import pyconv_mm  # noqa: F401  (weights-only loading of Runner checkpoints)
    from mmengine.runner.checkpoint import _load_checkpoint
    return _load_checkpoint(path, map_location='cpu')['meta']


def test_train_then_test_with_out_and_show_dir(tmp_path):
    work_dir = str(tmp_path / 'work')
    run([PYTHON, tool('train.py'), CLS_DEMO, '--work-dir', work_dir, '--cfg-options', *SHORT,
         'train_cfg.max_epochs=2', 'train_cfg.val_interval=2'])
    ckpt = osp.join(work_dir, 'epoch_2.pth')
    assert checkpoint_meta(ckpt)['iter'] == 8
    out = str(tmp_path / 'preds.pkl')
    proc = run([PYTHON, tool('test.py'), CLS_DEMO, ckpt, '--work-dir', str(tmp_path / 'test'),
                '--out', out, '--show-dir', str(tmp_path / 'show'), '--cfg-options', *SHORT])
    assert re.search(r'accuracy/top1: \d+\.\d+', proc.stdout)
    import pickle
    with open(out, 'rb') as f:
        assert len(pickle.load(f)) == 32
    assert len(glob.glob(str(tmp_path / 'show' / '*.png'))) == 32


def test_bad_arguments_are_reported(tmp_path):
    proc = run([PYTHON, tool('test.py'), CLS_DEMO, str(tmp_path / 'missing.pth')], check=False)
    assert proc.returncode != 0 and 'missing.pth' in proc.stdout and 'does not exist' in proc.stdout
    proc = run([PYTHON, tool('test.py'), CLS_DEMO, __file__, '--out', 'x.json'], check=False)
    assert '--out' in proc.stdout and '.pkl' in proc.stdout


def test_dist_train_two_processes_on_cpu(tmp_path):
    work_dir = str(tmp_path / 'dist')
    proc = run(['bash', tool('dist_train.sh'), CLS_DEMO, '2', '--work-dir', work_dir,
                '--cfg-options', *SHORT, 'train_cfg.max_epochs=2', 'train_cfg.val_interval=2'],
               env=dict(PORT='29517'))
    assert 'Distributed training: True' in proc.stdout
    # both ranks ran: the DistributedSampler gave each rank half of the 64 images (2 iterations)
    assert re.search(r'Epoch\(train\) \[2\]\[2/2\]', proc.stdout), proc.stdout[-3000:]
    assert sorted(os.listdir(work_dir)).count('epoch_2.pth') == 1
    assert checkpoint_meta(osp.join(work_dir, 'epoch_2.pth'))['iter'] == 4


def test_resume_after_sigkill(tmp_path):
    work_dir = str(tmp_path / 'resume')
    args = [PYTHON, tool('train.py'), CLS_DEMO, '--work-dir', work_dir, '--cfg-options', *SHORT,
            'train_cfg.max_epochs=5', 'train_cfg.val_interval=5',
            'default_hooks.checkpoint.interval=1', 'default_hooks.checkpoint.max_keep_ckpts=-1']
    log = open(tmp_path / 'first_run.log', 'w')
    proc = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while not osp.exists(osp.join(work_dir, 'last_checkpoint')):
        assert proc.poll() is None, open(tmp_path / 'first_run.log').read()[-3000:]
        assert time.time() < deadline, 'no checkpoint within 5 minutes'
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not osp.exists(osp.join(work_dir, 'epoch_5.pth')), 'killed too late to test resuming'

    second = run(args + ['--resume'])
    resumed = re.search(r'resumed epoch: (\d+), iter: (\d+)', second.stdout)
    assert resumed and 1 <= int(resumed.group(1)) < 5
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        assert f.read().strip().endswith('epoch_5.pth')
    for epoch in range(1, 6):  # every checkpoint intact, with the right progress
        meta = checkpoint_meta(osp.join(work_dir, f'epoch_{epoch}.pth'))
        assert (meta['epoch'], meta['iter']) == (epoch, 4 * epoch)


def test_upstream_mmpretrain_tools_run_our_config(tmp_path):
    work_dir = str(tmp_path / 'upstream')
    run([PYTHON, upstream_tool('mmpretrain', 'train.py'), CLS_DEMO, '--work-dir', work_dir,
         '--cfg-options', *SHORT, 'train_cfg.max_epochs=2', 'train_cfg.val_interval=2'])
    proc = run([PYTHON, upstream_tool('mmpretrain', 'test.py'), CLS_DEMO,
                osp.join(work_dir, 'epoch_2.pth'), '--work-dir', work_dir, '--cfg-options',
                *SHORT])
    assert 'accuracy/top1' in proc.stdout
