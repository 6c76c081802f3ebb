"""Each upstream fix: the problem exists without it (fresh interpreter), and is gone with it."""
import os
import os.path as osp
import pickle

import pytest
import torch

from conftest import run_python

NO_FIX = dict(PYCONV_DISABLE_COMPAT='all')


# ---------------------------------------------------------------- mmaction2 DRN (issue 2714)
def test_mmaction_models_fail_without_the_fix():
    proc = run_python('import mmaction.models', check=False)
    assert proc.returncode != 0
    assert "No module named 'mmaction.models.localizers.drn'" in proc.stdout


def test_mmaction_models_import_after_pyconv_mm():
    run_python('import pyconv_mm, mmaction.models\n'
               'from mmaction.utils import register_all_modules\n'
               'register_all_modules()\n'
               'from mmaction.registry import MODELS\n'
               'assert MODELS.get("Recognizer3D") is not None')


def test_drn_raises_a_clear_error():
    import pyconv_mm  # noqa: F401
    from mmaction.registry import MODELS
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmaction'):
        with pytest.raises(RuntimeError, match='DRN is unavailable.*issues/2714'):
            MODELS.build(dict(type='DRN'))


def test_drn_fix_stays_off_when_upstream_has_the_files(tmp_path):
    from pyconv_mm.compat import mmaction_drn
    assert mmaction_drn.drn_is_missing()  # the installed wheel (1.2.0) lacks it
    localizers = tmp_path / 'models' / 'localizers'
    localizers.mkdir(parents=True)
    (localizers / '__init__.py').write_text('')
    assert mmaction_drn.drn_is_missing(str(tmp_path))
    (localizers / 'drn').mkdir()
    (localizers / 'drn' / 'drn.py').write_text('')
    assert not mmaction_drn.drn_is_missing(str(tmp_path))


# ---------------------------------------------------------------- mmaction2 next to transformers 5
@pytest.mark.parametrize('version,breaks', [('5.17.0', True), ('5.0.0rc1', True),
                                            ('4.57.1', False), ('dev', False), (None, False)])
def test_multimodal_fix_decides_by_the_transformers_version(version, breaks):
    from pyconv_mm.compat import mmaction_multimodal
    assert mmaction_multimodal.breaks_mmaction(version) is breaks


def _transformers_metadata(root, version: str) -> dict:
    """A site folder whose metadata says transformers ``version`` is installed (its modules
    are not there: importing them fails, as mmaction2's VindLU imports fail with 5.x)."""
    info = root / f'transformers-{version}.dist-info'
    info.mkdir()
    (info / 'METADATA').write_text(f'Metadata-Version: 2.1\nName: transformers\n'
                                   f'Version: {version}\n')
    return dict(PYTHONPATH=os.pathsep.join([str(root), os.environ.get('PYTHONPATH', '')]))


def test_mmaction_models_import_next_to_transformers_5(tmp_path):
    env = _transformers_metadata(tmp_path, '5.17.0')
    code = 'import pyconv_mm, mmaction.models; print("imported")'
    without = run_python(code, env=dict(env, PYCONV_DISABLE_COMPAT='mmaction_multimodal'),
                         check=False)
    assert without.returncode != 0 and 'vindlu' in without.stdout
    run_python(code + '\n'
               'from pyconv_mm.compat import APPLIED\n'
               'assert APPLIED["mmaction_multimodal"]\n'
               'from mmaction.registry import MODELS\n'
               'assert MODELS.get("Recognizer3D") is not None\n'
               'try:\n'
               '    MODELS.get("VindLURetrieval")()\n'
               'except ImportError as e:\n'
               '    assert "multi-modal" in str(e), e\n'
               'else:\n'
               '    raise AssertionError("VindLU built without transformers")', env=env)


# ---------------------------------------------------------------- torch.load weights_only
def _runner_like_checkpoint(path: str) -> None:
    """What mmengine's Runner stores: a message hub with HistoryBuffers of numpy values."""
    import numpy as np
    from mmengine.logging import MessageHub
    hub = MessageHub.get_instance('pyconv_test_hub')
    for value in (1.5, 0.5):
        hub.update_scalar('train/loss', value)
    hub.update_info('iter', 7)
    torch.save(dict(meta=dict(epoch=1, iter=7, seed=np.int64(3)),
                    state_dict=dict(w=torch.ones(2)), message_hub=hub.state_dict()), path)


def test_runner_checkpoint_fails_to_load_without_the_fix(tmp_path):
    path = str(tmp_path / 'epoch_1.pth')
    _runner_like_checkpoint(path)
    proc = run_python('import torch, mmengine\n'
                      f'from mmengine.runner.checkpoint import _load_checkpoint\n'
                      f'_load_checkpoint({path!r}, map_location="cpu")', env=NO_FIX, check=False)
    assert proc.returncode != 0 and 'Weights only load failed' in proc.stdout


def test_runner_checkpoint_loads_with_the_fix(tmp_path):
    path = str(tmp_path / 'epoch_1.pth')
    _runner_like_checkpoint(path)
    run_python('import pyconv_mm\n'
               'from mmengine.runner.checkpoint import _load_checkpoint\n'
               f'ckpt = _load_checkpoint({path!r}, map_location="cpu")\n'
               'hub = ckpt["message_hub"]\n'
               'assert hub["log_scalars"]["train/loss"].mean() == 1.0\n'
               'assert ckpt["meta"]["iter"] == 7')


class _Exploit:
    def __reduce__(self):
        return (osp.join, ('not', 'allowed'))


def test_unknown_globals_are_still_refused(tmp_path):
    import pyconv_mm  # noqa: F401
    path = str(tmp_path / 'evil.pth')
    torch.save({'payload': _Exploit()}, path)
    with pytest.raises(pickle.UnpicklingError, match='Weights only load failed'):
        torch.load(path)


def test_restricted_getattr_only_resolves_history_buffer_statistics():
    from mmengine.logging import HistoryBuffer

    from pyconv_mm.compat.torch_load import history_buffer_getattr
    assert history_buffer_getattr(HistoryBuffer, 'mean') is HistoryBuffer.mean
    for obj, name in [(HistoryBuffer, '__init__'), (os_module(), 'system'), (dict, 'get')]:
        with pytest.raises(pickle.UnpicklingError, match='only allows'):
            history_buffer_getattr(obj, name)


def os_module():
    import os
    return os


# ---------------------------------------------------------------- CPU distributed (gloo)
_INIT_DIST = ('import os\n'
              'os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", '
              'MASTER_ADDR="127.0.0.1", MASTER_PORT="29561")\n'
              '{imports}\n'
              'from mmengine.dist import init_dist, get_world_size\n'
              'init_dist("pytorch", backend="nccl")\n'
              'assert get_world_size() == 1\n'
              'from mmengine.model import MMDistributedDataParallel\n'
              'ddp = MMDistributedDataParallel(torch.nn.Linear(2, 2), device_ids=[0])\n'
              'print("ok", torch.distributed.get_backend())\n')


@pytest.mark.skipif(torch.cuda.is_available(), reason='the fix applies only without CUDA')
def test_cpu_distributed_fails_without_the_fix():
    proc = run_python(_INIT_DIST.format(imports='import torch'), env=NO_FIX, check=False)
    assert proc.returncode != 0


@pytest.mark.skipif(torch.cuda.is_available(), reason='the fix applies only without CUDA')
def test_cpu_distributed_works_with_the_fix():
    proc = run_python(_INIT_DIST.format(imports='import torch, pyconv_mm'))
    assert 'ok gloo' in proc.stdout


def test_disable_variable_rejects_unknown_names():
    proc = run_python('import pyconv_mm', env=dict(PYCONV_DISABLE_COMPAT='nope'), check=False)
    assert 'unknown fixes' in proc.stdout and "['nope']" in proc.stdout
