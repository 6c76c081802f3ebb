"""Conversion of the authors' checkpoints (https://github.com/iduta/pyconv) to pyconv_mm.

The authors' ImageNet models use torchvision-like keys (``conv1``, ``bn1``,
``layer{1-4}.{j}.conv1|bn1|conv2|bn2|conv3|bn3``, ``downsample.{0,1,2}``, ``fc``); a
multi-level ``conv2`` holds ``conv2.conv2_1`` .. ``conv2.conv2_4`` in increasing kernel order
and a one-level ``conv2`` is a plain conv. Ours keep every name but the levels, which are
``conv2.levels.{i}``.

Safety: files are read with ``torch.load(weights_only=True)`` (no code runs), a ``module.``
prefix (DataParallel) is stripped, missing or unexpected keys and shape mismatches are refused
with the full list, and an existing output is never replaced without ``force``.
"""
import hashlib
import os
import os.path as osp
import re
from collections import OrderedDict
from typing import Dict, Iterable, Optional

import torch

#: ``layerX.j.conv2.conv2_k.*`` (level k, 1-based) -> ``layerX.j.conv2.levels.{k-1}.*``
_LEVEL = re.compile(r'(layer\d+\.\d+\.conv\d)\.conv2_(\d+)\.')
#: a one-level PyConv stored as a plain conv: ``layerX.j.conv2.weight``
_PLAIN = re.compile(r'(layer\d+\.\d+\.conv2)\.(weight|bias)$')


def sha256sum(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def load_official(path: str, sha256: Optional[str] = None) -> Dict[str, torch.Tensor]:
    """Read an authors' checkpoint safely; returns its state dict without ``module.``.

    Args:
        path: local file (the authors host theirs on Google Drive: download it yourself).
        sha256: if given, the file's SHA-256 must match.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint {path!r} does not exist (download it first; '
                                'pyconv_mm never downloads weights)')
    if sha256 is not None and sha256sum(path).lower() != sha256.lower():
        raise ValueError(f'{path}: SHA-256 is {sha256sum(path)}, expected {sha256}')
    checkpoint = torch.load(path, map_location='cpu', weights_only=True)
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get('state_dict'), dict):
        checkpoint = checkpoint['state_dict']
    if not isinstance(checkpoint, dict) or not all(
            isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise ValueError(f'{path}: expected a state dict of tensors (or a dict with one under '
                         '"state_dict")')
    return OrderedDict((k[len('module.'):] if k.startswith('module.') else k, v)
                       for k, v in checkpoint.items())


def rename_pyconv_levels(key: str) -> str:
    """Authors' PyConv level names -> ours (see the module docstring)."""
    key = _LEVEL.sub(lambda m: f'{m.group(1)}.levels.{int(m.group(2)) - 1}.', key)
    return _PLAIN.sub(lambda m: f'{m.group(1)}.levels.0.{m.group(2)}', key)


def add_missing_bn_counters(state: Dict[str, torch.Tensor],
                            expected: Iterable[str]) -> Dict[str, torch.Tensor]:
    """Old checkpoints have no ``num_batches_tracked``; add zeros where our model has them."""
    state = OrderedDict(state)
    for key in expected:
        if key.endswith('num_batches_tracked') and key not in state:
            if key.replace('num_batches_tracked', 'running_mean') in state:
                state[key] = torch.tensor(0, dtype=torch.long)
    return state


def check_against(state: Dict[str, torch.Tensor], model_state: Dict[str, torch.Tensor],
                  source: str) -> None:
    """Refuse a conversion that would not load strictly, listing every problem."""
    missing = sorted(set(model_state) - set(state))
    unexpected = sorted(set(state) - set(model_state))
    shapes = sorted(f'{k}: {tuple(state[k].shape)} vs ours {tuple(model_state[k].shape)}'
                    for k in set(state) & set(model_state)
                    if state[k].shape != model_state[k].shape)
    problems = []
    if missing:
        problems.append(f'missing keys ({len(missing)}): {", ".join(missing)}')
    if unexpected:
        problems.append(f'unexpected keys ({len(unexpected)}): {", ".join(unexpected)}')
    if shapes:
        problems.append(f'shape mismatches ({len(shapes)}): {"; ".join(shapes)}')
    if problems:
        raise ValueError(f'{source} does not match the target model:\n  ' + '\n  '.join(problems))


def save_converted(state: Dict[str, torch.Tensor], path: str, meta: dict,
                   force: bool = False) -> None:
    """Write ``dict(state_dict, meta)``; never replaces a file unless ``force``."""
    if osp.exists(path) and not force:
        raise FileExistsError(f'{path} exists; pass --force to replace it')
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    tmp = f'{path}.tmp-{os.getpid()}'
    torch.save(dict(state_dict=state, meta=meta), tmp)
    os.replace(tmp, path)


def infer_imagenet_arch(state: Dict[str, torch.Tensor]) -> dict:
    """Backbone type and depth of an authors' ImageNet checkpoint, from its keys and shapes."""
    from pyconv_mm.models.backbones import PyConvResNet
    blocks = tuple(len({k.split('.')[1] for k in state if k.startswith(f'layer{i}.')})
                   for i in range(1, 5))
    depths = {tuple(v[1]): d for d, v in PyConvResNet.arch_settings.items() if d >= 50}
    if blocks not in depths:
        raise ValueError(f'blocks per stage {blocks} match no PyConvResNet depth; '
                         f'valid: {sorted(depths.items(), key=lambda x: x[1])}')
    width = state['layer1.0.conv1.weight'].shape[0]
    if width not in (64, 128):
        raise ValueError(f'layer1.0.conv1 has {width} outputs: 64 (PyConvResNet) or '
                         '128 (PyConvHGResNet) expected')
    return dict(type='PyConvHGResNet' if width == 128 else 'PyConvResNet', depth=depths[blocks],
                num_classes=state['fc.weight'].shape[0] if 'fc.weight' in state else None)


#: The authors' PyConvSegNet head and auxiliary layout -> ours (mmseg EncoderDecoder with
#: PyConvPH and FCNHead). Sequential indices skip their ReLU / pooling / dropout entries.
SEG_PREFIXES = [
    ('layer0.0.', 'backbone.conv1.'),
    ('layer0.1.', 'backbone.bn1.'),
    ('pyconvhead.local_context.layers.0.', 'decode_head.local_context.0.conv.'),
    ('pyconvhead.local_context.layers.1.', 'decode_head.local_context.0.bn.'),
    ('pyconvhead.local_context.layers.3.', 'decode_head.local_context.1.conv.'),
    ('pyconvhead.local_context.layers.4.', 'decode_head.local_context.1.bn.'),
    ('pyconvhead.local_context.layers.6.', 'decode_head.local_context.2.conv.'),
    ('pyconvhead.local_context.layers.7.', 'decode_head.local_context.2.bn.'),
    ('pyconvhead.global_context.features.1.', 'decode_head.global_context.0.conv.'),
    ('pyconvhead.global_context.features.2.', 'decode_head.global_context.0.bn.'),
    ('pyconvhead.global_context.features.4.', 'decode_head.global_context.1.conv.'),
    ('pyconvhead.global_context.features.5.', 'decode_head.global_context.1.bn.'),
    ('pyconvhead.global_context.features.7.', 'decode_head.global_context.2.conv.'),
    ('pyconvhead.global_context.features.8.', 'decode_head.global_context.2.bn.'),
    ('pyconvhead.merge_context.features.0.', 'decode_head.merge_context.conv.'),
    ('pyconvhead.merge_context.features.1.', 'decode_head.merge_context.bn.'),
    ('cls.1.', 'decode_head.conv_seg.'),
    ('aux.0.', 'auxiliary_head.convs.0.conv.'),
    ('aux.1.', 'auxiliary_head.convs.0.bn.'),
    ('aux.4.', 'auxiliary_head.conv_seg.'),
]
_HEAD_LEVEL = re.compile(r'\.conv\.conv2_(\d+)\.')


def rename_segmentation_key(key: str, pyconv_backbone: bool) -> str:
    """One key of the authors' PyConvSegNet checkpoint -> ours (unknown keys pass through,
    so that :func:`check_against` reports them)."""
    for old, new in SEG_PREFIXES:
        if key.startswith(old):
            key = new + key[len(old):]
            return _HEAD_LEVEL.sub(lambda m: f'.conv.levels.{int(m.group(1)) - 1}.', key)
    if re.match(r'layer[1-4]\.', key):
        return 'backbone.' + (rename_pyconv_levels(key) if pyconv_backbone else key)
    return key


def infer_segmentation_arch(state: Dict[str, torch.Tensor]) -> dict:
    """Backbone (ResNet / PyConvResNet / PyConvHGResNet), depth and classes of an authors'
    PyConvSegNet checkpoint."""
    pyconv = any('.conv2.conv2_1.' in k for k in state if k.startswith('layer'))
    arch = infer_imagenet_arch(state) if pyconv else dict(
        type='ResNet', depth={(3, 4, 6, 3): 50, (3, 4, 23, 3): 101, (3, 8, 36, 3): 152}.get(
            tuple(len({k.split('.')[1] for k in state if k.startswith(f'layer{i}.')})
                  for i in range(1, 5))))
    if arch['depth'] is None:
        raise ValueError('blocks per stage match no ResNet depth (50, 101, 152)')
    if 'cls.1.weight' not in state:
        raise ValueError('no "cls.1.weight": not a PyConvSegNet checkpoint')
    arch['num_classes'] = state['cls.1.weight'].shape[0]
    return arch
