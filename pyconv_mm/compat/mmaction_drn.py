"""mmaction2 1.2.0 ships without ``mmaction/models/localizers/drn`` (upstream issue 2714).

``mmaction/models/localizers/__init__.py`` still does ``from .drn.drn import DRN``, so
``import mmaction.models`` (and ``mmaction.utils.register_all_modules()``) raise
``ModuleNotFoundError``. This fix answers that one import with a module whose ``DRN`` is
registered under its usual name and raises a clear error when built: the rest of mmaction2
imports and works, and DRN itself is reported as unavailable rather than faked.

The fix is installed only when the installed mmaction2 really lacks the files, so it
disappears by itself once a fixed mmaction2 is installed.
"""
import importlib.abc
import importlib.machinery
import importlib.util
import os.path as osp
import sys
import types
from typing import Optional

MISSING_PACKAGE = 'mmaction.models.localizers.drn'
UPSTREAM_ISSUE = 'https://github.com/open-mmlab/mmaction2/issues/2714'


def drn_is_missing(package_dir: Optional[str] = None) -> bool:
    """True when mmaction2 is installed (at ``package_dir``) but its DRN localizer is not."""
    if package_dir is None:
        spec = importlib.util.find_spec('mmaction')
        if spec is None or not spec.submodule_search_locations:
            return False
        package_dir = list(spec.submodule_search_locations)[0]
    localizers = osp.join(package_dir, 'models', 'localizers')
    return (osp.exists(osp.join(localizers, '__init__.py'))
            and not osp.exists(osp.join(localizers, 'drn', 'drn.py')))


class UnavailableDRN:
    """Stands in for mmaction2's DRN localizer, which the installed wheel does not contain."""

    def __init__(self, *args, **kwargs) -> None:
        raise RuntimeError(
            'DRN is unavailable: the installed mmaction2 wheel does not contain '
            f'mmaction/models/localizers/drn (upstream issue {UPSTREAM_ISSUE}). pyconv_mm lets '
            'the rest of mmaction2 import; to use DRN install mmaction2 from its git sources.')


class _DRNPlaceholderFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers imports of the missing DRN package and its ``drn`` module."""
    names = (MISSING_PACKAGE, MISSING_PACKAGE + '.drn')

    def find_spec(self, fullname: str, path=None, target=None) -> Optional[importlib.machinery.ModuleSpec]:
        if fullname not in self.names:
            return None
        return importlib.machinery.ModuleSpec(
            fullname, self, is_package=fullname == MISSING_PACKAGE)

    def create_module(self, spec) -> Optional[types.ModuleType]:
        return None  # default module creation

    def exec_module(self, module: types.ModuleType) -> None:
        module.__doc__ = f'Placeholder for the missing DRN localizer ({UPSTREAM_ISSUE}).'
        if module.__name__ == MISSING_PACKAGE:
            module.__path__ = []
            return
        from mmaction.registry import MODELS
        module.DRN = UnavailableDRN
        if 'DRN' not in MODELS.module_dict:
            MODELS.register_module(name='DRN', module=UnavailableDRN)


def apply() -> bool:
    """Install the placeholder when mmaction2 lacks DRN. Returns whether it was installed."""
    if any(isinstance(f, _DRNPlaceholderFinder) for f in sys.meta_path):
        return True
    if not drn_is_missing():
        return False
    sys.meta_path.append(_DRNPlaceholderFinder())
    return True
