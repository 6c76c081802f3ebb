"""Let mmengine 0.10.7 load the checkpoints it writes under torch >= 2.6.

torch 2.6 made ``torch.load(weights_only=True)`` the default. mmengine 0.10.7 calls
``torch.load`` without ``weights_only`` and its Runner stores non-tensor objects in checkpoints
(the message hub's ``HistoryBuffer``, numpy arrays and scalars in the log history), so
``--resume`` and ``load_from`` of a checkpoint the Runner itself wrote fail with
``UnpicklingError: Weights only load failed``.

Safe loading stays on: this fix adds only mmengine's own logging classes and the numpy
containers they hold to torch's allow-list (``torch.serialization.add_safe_globals``). A file
that asks for anything else is still refused by torch. ``HistoryBuffer`` pickles its statistics
methods as ``getattr(HistoryBuffer, 'mean')``; instead of allowing the builtin ``getattr``, the
pickled name is bound to :func:`history_buffer_getattr`, which resolves only those methods.
Applied when torch >= 2.6 and mmengine <= 0.10.7.
"""
import pickle
from typing import Callable, List, Tuple, Union

import numpy as np
import torch
from mmengine.utils import digit_version

LAST_AFFECTED_MMENGINE = '0.10.7'


def _numpy_globals() -> List[object]:
    """The numpy callables and classes that pickled arrays, dtypes and scalars refer to."""
    core = getattr(np, '_core', None) or np.core
    objects = [core.multiarray._reconstruct, core.multiarray.scalar, np.ndarray, np.dtype]
    # numpy >= 1.25 pickles dtypes by their class (numpy.dtypes.Float64DType, ...)
    objects += sorted({type(np.dtype(code)) for code in '?bhilqBHILQefdgFDGSUVOMm'},
                      key=lambda cls: cls.__name__)
    return objects


def history_buffer_getattr(obj: object, name: str) -> Callable:
    """``getattr`` restricted to the statistics methods of mmengine's ``HistoryBuffer``."""
    from mmengine.logging import HistoryBuffer
    method = getattr(HistoryBuffer, name, None) if obj is HistoryBuffer else None
    if not callable(method) or name.startswith('_'):
        raise pickle.UnpicklingError(
            f'weights-only load refused getattr({obj!r}, {name!r}): pyconv_mm only allows '
            'the statistics methods of mmengine.logging.HistoryBuffer')
    return method


def safe_globals() -> List[Union[object, Tuple[Callable, str]]]:
    """Everything this fix adds to torch's weights-only allow-list."""
    from mmengine.logging import HistoryBuffer
    return ([HistoryBuffer] + _numpy_globals()
            + [(history_buffer_getattr, f'{module}.getattr') for module in ('__builtin__',
                                                                            'builtins')])


def is_needed() -> bool:
    import mmengine
    return (digit_version(torch.__version__) >= digit_version('2.6.0')
            and digit_version(mmengine.__version__) <= digit_version(LAST_AFFECTED_MMENGINE)
            and hasattr(torch.serialization, 'add_safe_globals'))


def apply() -> bool:
    """Allow-list mmengine's checkpoint contents. Returns whether the fix was applied."""
    if not is_needed():
        return False
    torch.serialization.add_safe_globals(safe_globals())
    return True
