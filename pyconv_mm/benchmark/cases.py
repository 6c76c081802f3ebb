"""The default benchmark cases (issue: "make PyConv as fast as its FLOPs") and how a subject
is rebuilt from a JSON-able spec (the memory measurement runs it in a fresh process).

Spec kinds:
* ``config``: the model of a config file (``pkg::path`` for a codebase's own configs),
  called as ``model(x)`` (mmengine's tensor mode);
* ``module``: ``cfg`` built in the registry of ``scope`` (e.g. a decode head), called as
  ``module([x])`` when ``list_input``;
* the input is ``shape`` without the batch dimension.
"""
import copy
import os.path as osp
from typing import Dict, List

import torch
from torch import nn

from .measure import Subject

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def resolve_config(path: str) -> str:
    """``configs/...`` relative to the repository, or ``pkg::rel`` inside a codebase."""
    if '::' in path:
        import importlib.util
        package, rel = path.split('::')
        package = dict(mmseg='mmseg', mmdet='mmdet', mmpretrain='mmpretrain',
                       mmaction='mmaction').get(package, package)
        spec = importlib.util.find_spec(package)
        return osp.join(list(spec.submodule_search_locations)[0], '.mim', 'configs', rel)
    return path if osp.isabs(path) else osp.join(ROOT, path)


class _ListInput(nn.Module):
    """Calls a head that takes a list of feature maps with one map."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor):
        return self.module([x])


def subject_from_spec(spec: dict) -> Subject:
    import pyconv_mm  # noqa: F401
    shape = tuple(spec['shape'])

    def build() -> nn.Module:
        if spec['kind'] == 'config':
            from mmengine.config import Config

            from pyconv_mm.analysis import build_model
            model = build_model(Config.fromfile(resolve_config(spec['config'])))
            if hasattr(model, 'module') and not hasattr(model, 'backbone'):
                model = model.module
            if spec.get('part'):
                model = getattr(model, spec['part'])
            return model
        import importlib

        from mmengine.registry import DefaultScope
        registry = importlib.import_module(f'{spec["scope"]}.registry').MODELS
        with DefaultScope.overwrite_default_scope(spec['scope']):
            module = registry.build(copy.deepcopy(spec['cfg']))
        return _ListInput(module) if spec.get('list_input') else module

    return Subject(name=spec['name'], build=build,
                   inputs=lambda batch: torch.randn(batch, *shape))


def _classifier(name: str, config: str) -> dict:
    return dict(kind='config', name=name, config=config, shape=[3, 224, 224])


_HEAD_COMMON = dict(in_channels=2048, in_index=0, num_classes=150, dropout_ratio=0.1,
                    norm_cfg=dict(type='BN', requires_grad=True), align_corners=True)

#: case name -> (specs, default batch); the first spec is "ours", the others references.
CASES: Dict[str, tuple] = {
    'pyconvresnet50': ([
        _classifier('PyConvResNet-50', 'configs/pyconvresnet/pyconvresnet50_8xb32_in1k.py'),
        _classifier('ResNet-50', 'mmpretrain::resnet/resnet50_8xb32_in1k.py'),
    ], 8),
    'pyconvhgresnet50': ([
        _classifier('PyConvHGResNet-50', 'configs/pyconvresnet/pyconvhgresnet50_8xb32_in1k.py'),
        _classifier('ResNet-50', 'mmpretrain::resnet/resnet50_8xb32_in1k.py'),
    ], 8),
    'pyconvph': ([  # heads on the 2048-channel OS8 feature map of a 473x473 image
        dict(kind='module', name='PyConvPH', scope='mmseg', list_input=True, shape=[2048, 60, 60],
             cfg=dict(type='PyConvPH', channels=256, **_HEAD_COMMON)),
        dict(kind='module', name='PSPHead', scope='mmseg', list_input=True, shape=[2048, 60, 60],
             cfg=dict(type='PSPHead', channels=512, pool_scales=(1, 2, 3, 6), **_HEAD_COMMON)),
        dict(kind='module', name='ASPPHead', scope='mmseg', list_input=True, shape=[2048, 60, 60],
             cfg=dict(type='ASPPHead', channels=512, dilations=(1, 12, 24, 36),
                      **_HEAD_COMMON)),
    ], 2),  # a training step needs 2 images: PSP's 1x1 pooled map has one value per channel
    'pyconvresnet3d50': ([
        dict(kind='config', name='PyConvResNet3D-50', config='configs/pyconvresnet3d50_k400.py',
             shape=[1, 3, 16, 224, 224]),
        dict(kind='config', name='ResNet3D-50', config='configs/resnet3d50_k400.py',
             shape=[1, 3, 16, 224, 224]),
    ], 1),
    'pyconv_layer': ([  # PyConv4 64->64 (27,072 MACs per pixel) vs a 3x3 conv of equal FLOPs
        dict(kind='module', name='PyConv4 64->64', scope='mmpretrain', shape=[64, 56, 56],
             cfg=dict(type='PyConv2d', in_channels=64, out_channels=64,
                      kernel_sizes=[3, 5, 7, 9], groups=[1, 4, 8, 16])),
        dict(kind='module', name='Conv3x3 64->47', scope='mmpretrain', shape=[64, 56, 56],
             cfg=dict(type='Conv2d', in_channels=64, out_channels=47, kernel_size=3,
                      padding=1, bias=False)),
    ], 8),
}


def config_case(configs: List[str], shape: List[int]) -> tuple:
    """A case of the models of any configs (the first is "ours")."""
    return ([dict(kind='config', name=osp.splitext(osp.basename(c))[0], config=c, shape=shape)
             for c in configs], None)
