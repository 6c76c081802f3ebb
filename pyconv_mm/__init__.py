"""pyconv_mm: Pyramidal Convolution (Duta et al., 2020) for the OpenMMLab 2.x codebases.

Importing the package applies the upstream compatibility fixes (:mod:`pyconv_mm.compat`) and
registers our modules into the registries of the installed codebases (:mod:`pyconv_mm.registry`).
In a config: ``custom_imports = dict(imports=['pyconv_mm'], allow_failed_imports=False)``.
"""
from . import compat
from .version import __version__

compat.apply_all()

from .registry import register_all  # noqa: E402

REGISTERED = register_all()

__all__ = ['__version__', 'REGISTERED', 'register_all']
