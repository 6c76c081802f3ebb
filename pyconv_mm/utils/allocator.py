"""Keep freed memory in the process, so that CPU steps stop paying page faults.

With glibc's default settings, ``malloc`` returns large freed blocks to the operating system:
blocks above a threshold (128 KiB, raised on the fly up to 32 MiB) are separate mappings, and
the top of the heap is given back once more than twice that is free there. A model on the CPU
frees and allocates tensors of tens of MiB every step (a batch of 8 256 x 56 x 56 float maps
is 25 MiB), so every step can touch fresh pages, one page fault per 4 KiB: measured on a
2-core EPYC, a ResNet-50 inference step of batch 8 faulted 53 000 times and took 230.6 ms,
178.0 ms with freed memory kept.
How many depends on where the heap's free blocks happen to lie, so it changes from model to
model and run to run (a PyConvResNet-50 training step: 37 000 to 115 000; ResNet-50's: 48 to
47 000).

:func:`keep_freed_memory` sets glibc's thresholds (``mallopt``) so that freed memory stays with
the process and is reused: the process keeps the peak memory it reached, as PyTorch's CUDA
caching allocator and the jemalloc/tcmalloc allocators that PyTorch's CPU launcher
(``torch.backends.xeon.run_cpu``) preloads do. The same from the shell, for any program::

    GLIBC_TUNABLES=glibc.malloc.mmap_threshold=1073741824:glibc.malloc.trim_threshold=2147483647
"""
import ctypes
import ctypes.util
import platform
from typing import Optional

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 1 << 30  # blocks up to 1 GiB come from the heap
FALLBACK_MMAP_THRESHOLD_BYTES = 32 << 20  # the most older glibc versions accept
TRIM_THRESHOLD_BYTES = (1 << 31) - 1  # mallopt takes an int: up to 2 GiB free heap is kept


def _glibc() -> Optional[ctypes.CDLL]:
    if platform.libc_ver()[0] != 'glibc':
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
    except OSError:
        return None


def keep_freed_memory() -> bool:
    """Have glibc's ``malloc`` keep freed memory for reuse instead of returning it.

    Affects the whole process from the call on (every later allocation, of any library).

    Returns:
        True if glibc took the settings; False on another C library (macOS, Windows, musl),
        where nothing changes.
    """
    libc = _glibc()
    if libc is None:
        return False
    mallopt = libc.mallopt
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    if not mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) and \
            not mallopt(M_MMAP_THRESHOLD, FALLBACK_MMAP_THRESHOLD_BYTES):
        return False
    return bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
