"""What ``tools/train.py`` and ``tools/test.py`` share: loading a config of any codebase and
applying the standard OpenMMLab command-line options to it.

The codebase is read from the config's ``default_scope`` (mmpretrain, mmseg, mmdet, mmaction).
"""
import os.path as osp
from typing import Optional

from mmengine.config import Config, ConfigDict

SCOPES = ('mmpretrain', 'mmseg', 'mmdet', 'mmaction')


def load_config(path: str, cfg_options: Optional[dict] = None,
                work_dir: Optional[str] = None, launcher: str = 'none') -> Config:
    """Read a config, merge ``--cfg-options`` and fix ``work_dir`` (CLI > file > config name)."""
    import pyconv_mm  # noqa: F401  (compat fixes and registration before any build)
    if not osp.isfile(path):
        raise FileNotFoundError(f'config file {path!r} does not exist')
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    scope = cfg.get('default_scope')
    if scope not in SCOPES:
        raise ValueError(f'{path}: default_scope={scope!r}; pyconv_mm tools drive configs whose '
                         f'default_scope is one of {SCOPES}')
    cfg.launcher = launcher
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(path))[0])
    return cfg


def enable_amp(cfg: Config) -> None:
    """Automatic mixed precision: ``AmpOptimWrapper`` with a dynamic loss scale."""
    wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
    if wrapper == 'AmpOptimWrapper':
        return
    if wrapper != 'OptimWrapper':
        raise ValueError(f'--amp needs optim_wrapper.type OptimWrapper, got {wrapper!r}')
    cfg.optim_wrapper.type = 'AmpOptimWrapper'
    cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')


def set_resume(cfg: Config, resume: Optional[str]) -> None:
    """``--resume`` alone resumes from the latest checkpoint of work_dir; with a path, from it."""
    if resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif resume is not None:
        cfg.resume = True
        cfg.load_from = resume


def enable_visualization(cfg: Config, show_dir: Optional[str], show: bool = False,
                         wait_time: float = 2.0) -> None:
    """Turn on the codebase's visualization hook so that test images are drawn to ``show_dir``."""
    hooks = cfg.get('default_hooks', {})
    if 'visualization' not in hooks:
        raise ValueError('--show/--show-dir need default_hooks.visualization in the config, '
                         'e.g. visualization=dict(type="SegVisualizationHook")')
    hook = hooks['visualization']
    hook['interval'] = 1  # draw every test image (the hooks' default is every 50th batch)
    scope = cfg.default_scope
    if scope in ('mmseg', 'mmdet'):
        hook['draw'] = True
        hook['show'] = show
        hook['wait_time'] = wait_time
        if show_dir is not None:
            if scope == 'mmseg':
                cfg.visualizer['save_dir'] = show_dir
            else:
                hook['test_out_dir'] = osp.abspath(show_dir)
    else:  # mmpretrain, mmaction: VisualizationHook(enable, out_dir)
        hook['enable'] = True
        hook['show'] = show
        hook['wait_time'] = wait_time
        hook['out_dir'] = show_dir


def add_dump_metric(cfg: Config, out: str) -> None:
    """``--out results.pkl``: dump the raw predictions next to the evaluation."""
    if not out.endswith(('.pkl', '.pickle')):
        raise ValueError(f'--out {out!r}: the file must end with .pkl or .pickle')
    dump = (dict(type='DumpDetResults', out_file_path=out) if cfg.default_scope == 'mmdet'
            else dict(type='mmengine.DumpResults', out_file_path=out))
    evaluator = cfg.test_evaluator
    if isinstance(evaluator, (list, tuple)):
        cfg.test_evaluator = [*evaluator, dump]
    elif isinstance(evaluator, dict) and 'metrics' in evaluator:
        evaluator.metrics = [*evaluator.metrics, dump] if isinstance(
            evaluator.metrics, (list, tuple)) else [evaluator.metrics, dump]
    else:
        cfg.test_evaluator = [evaluator, dump]


def build_runner(cfg: Config):
    """The Runner (or the config's ``runner_type``)."""
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)


__all__ = ['load_config', 'enable_amp', 'set_resume', 'enable_visualization', 'add_dump_metric',
           'build_runner', 'ConfigDict']


def finish_distributed() -> None:
    """Tear the process group down before exit: left to interpreter shutdown, a gloo group's
    threads can abort a rank ("terminate called without an active exception")."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
