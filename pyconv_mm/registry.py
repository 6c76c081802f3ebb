"""Register pyconv_mm modules into the model registries of the installed OpenMMLab codebases.

``import pyconv_mm`` (or ``custom_imports = dict(imports=['pyconv_mm'])`` in a config) calls
:func:`register_all`. Each module goes into the ``MODELS`` registry of every codebase that uses
it and is installed; a codebase that is not installed is never imported, so a user with only
mmseg can use the segmentation parts. Operators go into mmengine's root ``MODELS`` registry,
where mmcv's ``build_conv_layer`` looks them up from any scope.

After registration a config names modules by their plain names in any ``default_scope``:
``backbone=dict(type='PyConvResNet', depth=50)``.
"""
import importlib
import importlib.util
from typing import Dict, List, Tuple

#: OpenMMLab codebases we plug into: import name -> module holding its registries.
CODEBASES = {
    'mmpretrain': 'mmpretrain.registry',
    'mmseg': 'mmseg.registry',
    'mmdet': 'mmdet.registry',
    'mmaction': 'mmaction.registry',
}
ALL = tuple(CODEBASES)

#: (python module, class name, codebases whose MODELS registry receives it).
#: A module that subclasses a codebase's classes lists only that codebase.
MODEL_ENTRIES: List[Tuple[str, str, Tuple[str, ...]]] = [
    ('pyconv_mm.models.backbones', 'PyConvResNet', ALL),
    ('pyconv_mm.models.backbones', 'PyConvHGResNet', ALL),
    ('pyconv_mm.models.backbones', 'PyConvResNet3D', ALL),
    ('pyconv_mm.models.heads.pyconv_ph', 'PyConvPH', ('mmseg', )),
    ('pyconv_mm.models.heads.aspp_v3', 'DeepLabV3ASPPHead', ('mmseg', )),
    ('pyconv_mm.models.heads.pyconv_ssd', 'PyConvSSDNeck', ('mmdet', )),
]

#: Operators for mmengine's root registry, visible from any scope: (module, attribute, name).
#: ``PyConv`` is the ``conv_cfg`` type for mmcv's ``build_conv_layer`` / ``ConvModule``.
OP_ENTRIES: List[Tuple[str, str, str]] = [
    ('pyconv_mm.ops', 'PyConv2d', 'PyConv2d'),
    ('pyconv_mm.ops', 'PyConv3d', 'PyConv3d'),
    ('pyconv_mm.ops', 'pyconv_conv_layer', 'PyConv'),
]


def is_installed(codebase: str) -> bool:
    """Whether ``codebase`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(codebase) is not None
    except (ImportError, ValueError):
        return False


def _register(registry, name: str, module: type) -> None:
    existing = registry.module_dict.get(name)
    if existing is module:
        return
    if existing is not None:
        raise KeyError(f'pyconv_mm: cannot register {module.__module__}.{name} into the '
                       f'{registry.scope}::{registry.name} registry: the name is taken by '
                       f'{existing.__module__}.{existing.__name__}')
    registry.register_module(name=name, module=module)


def register_all() -> Dict[str, List[str]]:
    """Register every module into the installed codebases; returns {registry scope: names}."""
    from mmengine.registry import MODELS as ROOT_MODELS
    registered: Dict[str, List[str]] = {'mmengine': []}
    for module_name, attribute, name in OP_ENTRIES:
        _register(ROOT_MODELS, name, getattr(importlib.import_module(module_name), attribute))
        registered['mmengine'].append(name)
    installed = [c for c in CODEBASES if is_installed(c)]
    for codebase in installed:
        registry = importlib.import_module(CODEBASES[codebase]).MODELS
        registered[codebase] = []
        for module_name, cls_name, targets in MODEL_ENTRIES:
            if codebase not in targets:
                continue
            cls = getattr(importlib.import_module(module_name), cls_name)
            _register(registry, cls_name, cls)
            registered[codebase].append(cls_name)
    return registered
