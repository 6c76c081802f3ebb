"""Registration into the installed codebases, through custom_imports, and without a codebase."""
import importlib

import pytest

from conftest import run_python
from pyconv_mm.registry import CODEBASES, _register


@pytest.mark.parametrize('codebase', sorted(CODEBASES))
def test_backbones_registered_in_every_codebase(codebase):
    import pyconv_mm
    registry = importlib.import_module(CODEBASES[codebase]).MODELS
    for name in ('PyConvResNet', 'PyConvHGResNet'):
        assert name in registry.module_dict, f'{name} missing from {codebase}'
    assert 'PyConvResNet' in pyconv_mm.REGISTERED[codebase]


@pytest.mark.parametrize('scope', ['mmpretrain', 'mmseg', 'mmdet', 'mmaction'])
def test_custom_imports_registers_in_a_fresh_interpreter(scope, tmp_path):
    cfg = tmp_path / 'cfg.py'
    cfg.write_text(f"default_scope = '{scope}'\n"
                   "custom_imports = dict(imports=['pyconv_mm'], allow_failed_imports=False)\n"
                   "backbone = dict(type='PyConvResNet', depth=18)\n")
    run_python('from mmengine.config import Config\n'
               'from mmengine.registry import init_default_scope\n'
               f'cfg = Config.fromfile({str(cfg)!r})\n'
               f'init_default_scope({scope!r})\n'
               f'from {scope}.registry import MODELS\n'
               'model = MODELS.build(cfg.backbone)\n'
               'assert type(model).__name__ == "PyConvResNet"')


def test_unregistered_module_without_import_fails_clearly():
    proc = run_python('from mmseg.registry import MODELS\n'
                      'MODELS.build(dict(type="PyConvResNet", depth=18))', check=False)
    assert 'PyConvResNet is not in the mmseg::model registry' in proc.stdout


def test_works_when_other_codebases_are_not_installed():
    """A user with only mmseg: pyconv_mm must not import (or need) the other codebases."""
    run_python(
        'import sys\n'
        'for name in ("mmdet", "mmpretrain", "mmaction"):\n'
        '    sys.modules[name] = None  # as if not installed: importing it raises ImportError\n'
        'import pyconv_mm\n'
        'assert set(pyconv_mm.REGISTERED) == {"mmengine", "mmseg"}, pyconv_mm.REGISTERED\n'
        'loaded = [m for m, mod in sys.modules.items() if mod is not None and\n'
        '          m.split(".")[0] in ("mmdet", "mmpretrain", "mmaction")]\n'
        'assert not loaded, loaded\n'
        'from mmseg.registry import MODELS\n'
        'import torch\n'
        'net = MODELS.build(dict(type="PyConvResNet", depth=50, out_indices=(3,),\n'
        '                        strides=(2, 2, 1, 1), dilations=(1, 1, 2, 4)))\n'
        'assert net(torch.randn(1, 3, 64, 64))[0].shape == (1, 2048, 8, 8)\n')


def test_name_conflicts_are_refused():
    from mmengine.registry import Registry
    registry = Registry('model', scope='pyconv_test')

    class Other:
        pass

    class Ours:
        pass

    registry.register_module(name='PyConvResNet', module=Other)
    with pytest.raises(KeyError, match='the name is taken by .*Other'):
        _register(registry, 'PyConvResNet', Ours)
    _register(registry, 'PyConvResNet', Other)  # the same class again is a no-op
