"""Parameters and FLOPs of a model built from a config of any of the four codebases.

FLOPs are counted by mmengine's ``FlopAnalyzer`` (one multiply-add = one FLOP, the convention
of the paper and of OpenMMLab's ``get_flops`` tools) on a single input of the task's size.
For segmentation the auxiliary heads are included, as in the paper's Tables 5-6.

Example:
    >>> info = analyze_config('configs/pyconvresnet/pyconvresnet50_8xb32_in1k.py')
    >>> info['params'], round(info['gflops'], 2)
    (24847720, 3.88)
"""
import os.path as osp
from typing import Dict, Optional, Sequence, Tuple

import torch
from mmengine.analysis import FlopAnalyzer, parameter_count
from mmengine.config import Config
from torch import nn

from .paper import paper_numbers

#: Input size (without batch) per codebase when a config gives none: the paper's sizes.
DEFAULT_SHAPES: Dict[str, Tuple[int, ...]] = {
    'mmpretrain': (3, 224, 224),
    'mmseg': (3, 473, 473),
    'mmdet': (3, 300, 300),
    'mmaction': (1, 3, 16, 224, 224),  # (clips, C, T, H, W): Recognizer3D takes N x clips
}


class _SegmentorWithAux(nn.Module):
    """Backbone + decode head + auxiliary heads of an mmseg ``EncoderDecoder``."""

    def __init__(self, segmentor: nn.Module) -> None:
        super().__init__()
        self.segmentor = segmentor

    def forward(self, inputs: torch.Tensor):
        feats = self.segmentor.extract_feat(inputs)
        outs = [self.segmentor.decode_head(feats)]
        aux = getattr(self.segmentor, 'auxiliary_head', None)
        if aux is not None:
            heads = aux if isinstance(aux, nn.ModuleList) else [aux]
            outs += [head(feats) for head in heads]
        return outs


def build_model(cfg: Config) -> nn.Module:
    """Build ``cfg.model`` through the registry of the config's codebase, in eval mode."""
    import importlib

    import pyconv_mm  # noqa: F401
    from mmengine.registry import DefaultScope, init_default_scope
    scope = cfg.get('default_scope')
    if scope not in DEFAULT_SHAPES:
        raise ValueError(f'default_scope={scope!r}; valid: {sorted(DEFAULT_SHAPES)}')
    init_default_scope(scope)
    registry = importlib.import_module(f'{scope}.registry').MODELS
    with DefaultScope.overwrite_default_scope(scope):
        model = registry.build(cfg.model)
    return model.eval()


def analyze_model(model: nn.Module, scope: str,
                  shape: Optional[Sequence[int]] = None) -> Dict[str, float]:
    """``{'params', 'flops', 'gflops', 'shape'}`` of a built model on one input of ``shape``."""
    shape = tuple(shape or DEFAULT_SHAPES[scope])
    if hasattr(model, 'module') and not hasattr(model, 'backbone'):  # a TTA wrapper
        model = model.module
    target = _SegmentorWithAux(model) if scope == 'mmseg' else model
    with torch.no_grad():
        analyzer = FlopAnalyzer(target, (torch.randn(1, *shape), ))
        analyzer.unsupported_ops_warnings(False)
        analyzer.uncalled_modules_warnings(False)
        flops = analyzer.total()
    return dict(params=parameter_count(model)[''], flops=flops, gflops=flops / 1e9, shape=shape)


def analyze_config(path: str, shape: Optional[Sequence[int]] = None,
                   cfg_options: Optional[dict] = None) -> Dict[str, object]:
    """Build the model of a config file and measure it; adds the paper's numbers if known."""
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    model = build_model(cfg)
    info = analyze_model(model, cfg.default_scope, shape or cfg.get('complexity_input_shape'))
    stem = osp.splitext(osp.basename(path))[0]
    return dict(config=path, name=stem, scope=cfg.default_scope, **info,
                paper=paper_numbers(stem))
