"""Deterministic, cached generation of the embedded demo datasets.

A demo dataset is written once per (name, version, seed, size) into a cache directory and
reused afterwards. Generation goes to a temporary folder that is renamed into place, so an
interrupted run or two processes generating at the same time (distributed training) never
leave a half-written dataset behind.
"""
import hashlib
import json
import os
import os.path as osp
import shutil
import tempfile
import time
from typing import Dict, Optional, Type

import numpy as np
from mmengine.logging import print_log

MANIFEST = 'pyconv_demo.json'
DEMO_DATASETS: Dict[str, Type['DemoDataset']] = {}


def default_cache_dir() -> str:
    """``$PYCONV_DEMO_DATA``, else ``$XDG_CACHE_HOME/pyconv_mm/demo`` (``~/.cache/...``)."""
    if os.environ.get('PYCONV_DEMO_DATA'):
        return osp.abspath(os.environ['PYCONV_DEMO_DATA'])
    cache = os.environ.get('XDG_CACHE_HOME') or osp.join(osp.expanduser('~'), '.cache')
    return osp.join(cache, 'pyconv_mm', 'demo')


class DemoDataset:
    """A generator of one demo dataset in a codebase's standard on-disk format.

    Subclasses set ``name``, ``version`` (bump it when the output changes), ``sizes``
    (number of samples per split) and implement :meth:`generate`.
    """
    name = ''
    version = 1
    sizes: Dict[str, int] = {}

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if cls.name:
            DEMO_DATASETS[cls.name] = cls

    def __init__(self, **sizes: int) -> None:
        unknown = set(sizes) - set(self.sizes)
        if unknown:
            raise ValueError(f'demo dataset {self.name!r}: unknown splits {sorted(unknown)}; '
                             f'valid: {sorted(self.sizes)}')
        self.sizes = {**self.sizes, **sizes}

    def generate(self, root: str, rng: np.random.Generator) -> None:
        """Write every split under ``root``."""
        raise NotImplementedError

    def folder_name(self, seed: int) -> str:
        tag = hashlib.sha1(json.dumps(self.sizes, sort_keys=True).encode()).hexdigest()[:8]
        return f'{self.name}-v{self.version}-seed{seed}-{tag}'


def prepare(name: str, seed: int = 0, cache_dir: Optional[str] = None, **sizes: int) -> str:
    """Return the folder of demo dataset ``name``, generating it on first use.

    Args:
        name: one of :data:`DEMO_DATASETS` (``imagenet``, ``ade20k``, ``coco``, ``kinetics``).
        seed: random seed; the same seed always gives the same files.
        cache_dir: where datasets are kept (default :func:`default_cache_dir`).
        **sizes: number of samples per split, e.g. ``train=200``.
    """
    if name not in DEMO_DATASETS:
        raise ValueError(f'unknown demo dataset {name!r}; valid: {sorted(DEMO_DATASETS)}')
    dataset = DEMO_DATASETS[name](**sizes)
    cache_dir = cache_dir or default_cache_dir()
    target = osp.join(cache_dir, dataset.folder_name(seed))
    if osp.isfile(osp.join(target, MANIFEST)):
        return target
    os.makedirs(cache_dir, exist_ok=True)
    start = time.time()
    print_log(f'generating demo dataset {name!r} (seed {seed}, {dataset.sizes}) into {target}',
              logger='current')
    tmp = tempfile.mkdtemp(prefix=f'.{name}-', dir=cache_dir)
    try:
        dataset.generate(tmp, np.random.default_rng(seed))
        with open(osp.join(tmp, MANIFEST), 'w') as f:
            json.dump(dict(name=name, version=dataset.version, seed=seed, sizes=dataset.sizes),
                      f, indent=2)
        try:
            os.rename(tmp, target)
        except OSError:  # another process finished first: its copy is identical
            if not osp.isfile(osp.join(target, MANIFEST)):
                raise
    finally:
        if osp.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    print_log(f'demo dataset {name!r} ready in {time.time() - start:.1f}s', logger='current')
    return target
