"""mmaction2 1.2.0 cannot import its models when transformers >= 5 is installed.

mmaction2 turns its multimodal models (VindLU) on whenever ``transformers>=4.28.0`` is
installed (``mmaction.utils.dependency.WITH_MULTIMODAL``), and their code imports
``apply_chunking_to_forward`` and other helpers from ``transformers.modeling_utils``, which
transformers 5 no longer has. ``import mmaction.models``, and every registry lookup that
imports it, then raises ``ImportError`` although no multimodal model is in use.

This fix turns that switch off when transformers 5 or later is installed: mmaction2 then
registers its own placeholders for the VindLU models (they raise an error asking for the
multimodal extra when built) and everything else imports. It does nothing with transformers 4
or without transformers, so it goes away with an mmaction2 release that supports 5.
"""
import importlib.metadata
import importlib.util
from typing import Optional

FIRST_INCOMPATIBLE_MAJOR = 5


def transformers_version() -> Optional[str]:
    """The installed transformers version, None when it is not installed."""
    try:
        return importlib.metadata.version('transformers')
    except importlib.metadata.PackageNotFoundError:
        return None


def breaks_mmaction(version: Optional[str]) -> bool:
    """Whether this transformers version breaks mmaction2 1.2.0's multimodal imports."""
    if version is None:
        return False
    major = version.split('.')[0]
    return major.isdigit() and int(major) >= FIRST_INCOMPATIBLE_MAJOR


def apply() -> bool:
    """Turn mmaction2's multimodal models off next to transformers >= 5. Returns whether it
    did."""
    if importlib.util.find_spec('mmaction') is None or \
            not breaks_mmaction(transformers_version()):
        return False
    from mmaction.utils import dependency
    dependency.WITH_MULTIMODAL = False
    return True
