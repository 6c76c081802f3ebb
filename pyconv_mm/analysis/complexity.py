"""Parameters and FLOPs of a model built from a config of any of the four codebases.

FLOPs are counted by mmengine's ``FlopAnalyzer`` (one multiply-add = one FLOP, the convention
of the paper and of OpenMMLab's ``get_flops`` tools) on a single input of the task's size.
For segmentation the auxiliary heads are included, as in the paper's Tables 5-6.

Example:
    >>> info = analyze_config('configs/pyconvresnet/pyconvresnet50_8xb32_in1k.py')
    >>> info['params'], round(info['gflops'], 2)
    (24847720, 3.88)
"""
import math
import os.path as osp
from typing import Callable, Dict, List, Optional, Sequence, Tuple

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


class _DetectorWithMetas(nn.Module):
    """An mmdet detector's tensor forward with the image metas two-stage detectors need."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, inputs: torch.Tensor):
        from mmdet.structures import DetDataSample
        height, width = inputs.shape[-2:]
        samples = [DetDataSample(metainfo=dict(img_shape=(height, width), ori_shape=(
            height, width), scale_factor=(1.0, 1.0), pad_shape=(height, width)))
                   for _ in range(inputs.shape[0])]
        return self.detector._forward(inputs, samples)


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


def _unwrap(model: nn.Module) -> nn.Module:
    """The model inside a TTA wrapper, else the model."""
    return model.module if hasattr(model, 'module') and not hasattr(model, 'backbone') else model


def _count_flops(model: nn.Module, scope: str, shape: Tuple[int, ...],
                 op_handles: Optional[Dict[str, Callable]] = None) -> int:
    """mmengine's ``FlopAnalyzer`` total of ``model`` (wrapped for its codebase) on one random
    input of ``shape``; ``op_handles`` replace or add counters of traced ops."""
    wrappers = dict(mmseg=_SegmentorWithAux, mmdet=_DetectorWithMetas)
    target = wrappers[scope](model) if scope in wrappers else model
    with torch.no_grad():
        analyzer = FlopAnalyzer(target, (torch.randn(1, *shape), ))
        if op_handles:
            analyzer.set_op_handle(**op_handles)
        analyzer.unsupported_ops_warnings(False)
        analyzer.uncalled_modules_warnings(False)
        return analyzer.total()


def analyze_model(model: nn.Module, scope: str,
                  shape: Optional[Sequence[int]] = None) -> Dict[str, float]:
    """``{'params', 'flops', 'gflops', 'shape'}`` of a built model on one input of ``shape``."""
    shape = tuple(shape or DEFAULT_SHAPES[scope])
    model = _unwrap(model)
    flops = _count_flops(model, scope, shape)
    return dict(params=parameter_count(model)[''], flops=flops, gflops=flops / 1e9, shape=shape)


#: Operations per output element of the elementwise ops that multiply-add counts leave out, at
#: the most generous rates of the public counters of 2020 (thop counted 4 per BN element):
#: with these, a count is an upper bound of what any of those conventions gives.
ELEMENTWISE_RATES: Dict[str, int] = {
    'aten::batch_norm': 4, 'aten::relu': 1, 'aten::relu_': 1, 'aten::add': 1, 'aten::add_': 1}


def _max_pool_comparisons(inputs, outputs) -> int:
    """One comparison per window element and output element of a max pool."""
    from mmengine.analysis.jit_handles import get_shape
    window = inputs[1].toIValue()
    if window is None:  # traced as a list of constants
        window = [value.toIValue() for value in inputs[1].node().inputs()]
    return math.prod(get_shape(outputs[0])) * math.prod(window)


def gflops_with_elementwise(model: nn.Module, scope: str,
                            shape: Optional[Sequence[int]] = None) -> float:
    """GFLOPs of ``model`` with every elementwise operation counted too: the multiply-adds of
    :func:`analyze_model` plus BN (4 per element), ReLU and residual adds (1 per element) and
    max pools (1 per window element), on one input of ``shape``. An upper bound for the
    counting conventions of the paper's time, e.g. to check whether a FLOP number from a paper
    can come from a given structure at all."""
    from mmengine.analysis.jit_handles import elementwise_flop_counter
    handles = {op: elementwise_flop_counter(0, rate) for op, rate in ELEMENTWISE_RATES.items()}
    handles['aten::max_pool2d'] = _max_pool_comparisons
    shape = tuple(shape or DEFAULT_SHAPES[scope])
    return _count_flops(_unwrap(model), scope, shape, handles) / 1e9


def spatial_convs(model: nn.Module) -> Dict[str, List[str]]:
    """Names of the model's PyConvs (with their pyramids) and of its remaining plain k x k
    convolutions (k > 1), e.g. to see what a ``conv_cfg=dict(type='PyConv')`` replaced."""
    from pyconv_mm.ops.pyconv import _PyConvNd
    pyconvs, plain = [], []
    for name, module in model.named_modules():
        if isinstance(module, _PyConvNd):
            pyconvs.append(f'{name}: {module.extra_repr()}')
        elif isinstance(module, nn.modules.conv._ConvNd) and max(module.kernel_size) > 1:
            if not any(name.startswith(p.split(':')[0] + '.') for p in pyconvs):
                plain.append(f'{name}: {"x".join(map(str, module.kernel_size))} conv')
    return dict(pyconv=pyconvs, plain=plain)


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
                paper=paper_numbers(stem), layers=spatial_convs(model))
