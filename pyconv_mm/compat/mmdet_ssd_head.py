"""mmdet 3.3.0's ``SSDHead`` cannot predict (upstream issues 11305, 11780; fix PR 11524).

``BaseDenseHead._predict_by_feat_single`` reads ``self.loss_cls``, which ``SSDHead`` never
creates (it skips ``AnchorHead.__init__``), so every SSD validation, test or inference raises
``AttributeError: 'SSDHead' object has no attribute 'loss_cls'``. This fix gives each new
``SSDHead`` ``loss_cls = None`` (SSD computes its losses itself), which the upstream check reads
as "no custom classification channels". Applied to mmdet <= 3.3.0, when its ssd_head module is
imported; a subclass that assigns a real ``loss_cls`` replaces the None as usual.
"""
from .post_import import when_imported

LAST_AFFECTED_MMDET = '3.3.0'


def _patch(module) -> None:
    cls = module.SSDHead
    if getattr(cls.__init__, '_pyconv_loss_cls_fix', False):
        return
    original_init = cls.__init__

    def __init__(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        if not hasattr(self, 'loss_cls'):
            self.loss_cls = None

    __init__._pyconv_loss_cls_fix = True
    cls.__init__ = __init__


def is_needed() -> bool:
    from importlib.metadata import PackageNotFoundError, version

    from mmengine.utils import digit_version
    try:
        return digit_version(version('mmdet')) <= digit_version(LAST_AFFECTED_MMDET)
    except PackageNotFoundError:
        return False


def apply() -> bool:
    if not is_needed():
        return False
    when_imported('mmdet.models.dense_heads.ssd_head', _patch)
    return True
