"""Our direct CPU kernel for grouped PyConv levels (``csrc/direct_conv.cpp``), for inference.

The stock CPU kernels run convolutions whose groups have few channels (PyConv's 5x5/G4, 7x7/G8,
9x9/G16 levels) far below the rate of a dense convolution. The kernel vectorises over 16 output
columns, so the group size does not matter, works through the image in bands of rows that stay
in cache, and writes each level straight into its channels of the PyConv's output (no
concatenation). It is built with the package (``tools/setup.sh``) and runs on CPUs with
AVX-512, in fp32, without autograd; elsewhere :func:`usable` is False and the stock forms run.
``PYCONV_DIRECT_KERNEL=0`` in the environment turns it off.

Example:
    >>> out = empty_output(x, 64, (56, 56))
    >>> conv_levels(x, [conv.levels[1], conv.levels[3]], [16, 48], out)  # two grouped levels
"""
import os
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

try:
    from . import _direct_conv as _ext
except ImportError:  # not built (e.g. installed without a compiler): the stock forms run
    _ext = None

#: True when the compiled kernel is importable, this CPU has AVX-512 and the environment does
#: not turn it off.
AVAILABLE = (_ext is not None and _ext.supported()
             and os.environ.get('PYCONV_DIRECT_KERNEL', '1') != '0')


def usable(x: torch.Tensor, level: nn.Conv2d) -> bool:
    """Whether the kernel can compute ``level`` (a grouped ``nn.Conv2d``) on ``x`` now."""
    if not AVAILABLE or x.dim() != 4 or x.device.type != 'cpu' or x.dtype != torch.float32:
        return False
    if torch.is_grad_enabled():
        return False  # forward only: with autograd (training) the stock forms run
    if level.weight.dtype != torch.float32 or level.padding_mode != 'zeros':
        return False
    kh, kw = level.kernel_size
    sh, sw = level.stride
    return (kh == kw and kh % 2 == 1 and sh == sw and sh in (1, 2)
            and len(set(level.dilation)) == 1
            and level.padding == ((kh - 1) // 2 * level.dilation[0], ) * 2)


def output_size(x: torch.Tensor, level: nn.Conv2d) -> Tuple[int, int]:
    """(H_out, W_out) of ``level`` on ``x``."""
    return tuple((size + 2 * pad - dil * (k - 1) - 1) // stride + 1
                 for size, pad, dil, k, stride in zip(x.shape[2:], level.padding, level.dilation,
                                                      level.kernel_size, level.stride))


def empty_output(x: torch.Tensor, channels: int, size: Tuple[int, int]) -> torch.Tensor:
    """An output of ``channels`` channels in ``x``'s memory format."""
    fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) \
        and not x.is_contiguous() else torch.contiguous_format
    return torch.empty((x.shape[0], channels, *size), dtype=x.dtype, device=x.device,
                       memory_format=fmt)


def conv_levels(x: torch.Tensor, levels: Sequence[nn.Conv2d], c_offsets: Sequence[int],
                out: torch.Tensor, weights: Optional[List[torch.Tensor]] = None) -> None:
    """Write each level's convolution of ``x`` into ``out[:, offset:offset + C_out]``.

    The levels share their stride (1 or 2) and pad by ``(K - 1) / 2 * dilation``;
    ``weights`` replace the levels' own.
    """
    weights = [lvl.weight for lvl in levels] if weights is None else weights
    empty = torch.empty(0)
    _ext.conv_levels(x, [w.detach() for w in weights],
                     [empty if lvl.bias is None else lvl.bias.detach() for lvl in levels],
                     [lvl.dilation[0] for lvl in levels], list(c_offsets), levels[0].stride[0],
                     out)
