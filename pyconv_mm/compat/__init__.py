"""Fixes for upstream packages on a current machine; each removes itself once upstream is fixed.

=======================  ============================================================  ==========
fix                      problem                                                       applies to
=======================  ============================================================  ==========
``mmaction_drn``         mmaction2 wheel lacks ``localizers/drn`` (issue 2714)         mmaction2 1.2.0
``mmaction_multimodal``  transformers 5 breaks VindLU's imports (``mmaction.models``)  mmaction2 1.2.0
``torch_load``           torch >= 2.6 ``weights_only`` refuses mmengine checkpoints    mmengine <= 0.10.7
``cpu_distributed``      ``dist_train.sh`` on a machine without GPU (gloo, no device)  mmengine <= 0.10.7
``mmdet_ssd_head``       ``SSDHead`` has no ``loss_cls``: SSD cannot predict (11780)   mmdet <= 3.3.0
=======================  ============================================================  ==========

:func:`apply_all` runs on ``import pyconv_mm``; :data:`APPLIED` tells which fixes took effect.
``PYCONV_DISABLE_COMPAT=torch_load,cpu_distributed`` (or ``all``) turns fixes off, e.g. to
check whether an upstream release still needs them.
"""
import os
from typing import Dict

from . import cpu_distributed, mmaction_drn, mmaction_multimodal, mmdet_ssd_head, torch_load

FIXES = {
    'mmaction_drn': mmaction_drn,
    'mmaction_multimodal': mmaction_multimodal,
    'torch_load': torch_load,
    'cpu_distributed': cpu_distributed,
    'mmdet_ssd_head': mmdet_ssd_head,
}
APPLIED: Dict[str, bool] = {}


def apply_all() -> Dict[str, bool]:
    """Apply every fix whose upstream problem is present; returns {fix: applied}."""
    disabled = {n.strip() for n in os.environ.get('PYCONV_DISABLE_COMPAT', '').split(',')}
    unknown = disabled - set(FIXES) - {'', 'all'}
    if unknown:
        raise ValueError(f'PYCONV_DISABLE_COMPAT names unknown fixes {sorted(unknown)}; '
                         f'valid: {sorted(FIXES)} or all')
    for name, fix in FIXES.items():
        APPLIED[name] = False if ('all' in disabled or name in disabled) else fix.apply()
    return dict(APPLIED)
