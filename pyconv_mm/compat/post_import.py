"""Run a function right after a module is imported (or now, if it already is).

Compat fixes use it to patch a class of an upstream package without importing that package
(and everything it pulls in) on ``import pyconv_mm``.
"""
import importlib.abc
import importlib.util
import sys
from typing import Callable, Dict, List

_CALLBACKS: Dict[str, List[Callable]] = {}


class _PostImportFinder(importlib.abc.MetaPathFinder):

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in _CALLBACKS:
            return None
        for finder in sys.meta_path:  # let the normal machinery find the module
            if finder is self or not hasattr(finder, 'find_spec'):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        original_exec = loader.exec_module

        def exec_module(module):
            original_exec(module)
            for callback in _CALLBACKS.pop(fullname, []):
                callback(module)

        spec.loader = type('PostImportLoader', (), {
            'create_module': lambda _, spec: loader.create_module(spec),
            'exec_module': lambda _, module: exec_module(module),
        })()
        return spec


_FINDER = _PostImportFinder()


def when_imported(module_name: str, callback: Callable) -> None:
    """Call ``callback(module)`` once ``module_name`` is imported."""
    if module_name in sys.modules and sys.modules[module_name] is not None:
        callback(sys.modules[module_name])
        return
    _CALLBACKS.setdefault(module_name, []).append(callback)
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
