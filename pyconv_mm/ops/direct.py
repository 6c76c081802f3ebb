"""Our direct CPU kernel for grouped PyConv levels (``csrc/direct_conv.cpp``), for inference.

The stock CPU kernels run convolutions whose groups have few channels (PyConv's 5x5/G4, 7x7/G8,
9x9/G16 levels) far below the rate of a dense convolution. The kernel vectorises over 16 output
columns, so the group size does not matter, and writes each level straight into its channels of
the PyConv's output (no concatenation). It is built with the package (``tools/setup.sh``) and
runs on CPUs with AVX-512, in fp32, without autograd; elsewhere :func:`usable` is False and the
stock forms run.

Example:
    >>> packed = pack(x, pad=4, stride=1, span=9, out_size=(56, 56))
    >>> conv_into(packed, level.weight, None, stride=1, dilation=1, offset=2, out=out,
    ...           c_offset=16)   # a 5x5 level (padding 2) into channels 16..31 of out
"""
import os
import threading
from typing import Optional, Tuple

import torch
from torch import nn

try:
    from . import _direct_conv as _ext
except ImportError:  # not built (e.g. installed without a compiler): the stock forms run
    _ext = None

#: True when the compiled kernel is importable, this CPU has AVX-512 and the environment does
#: not turn it off (``PYCONV_DIRECT_KERNEL=0``: the stock forms only).
AVAILABLE = (_ext is not None and _ext.supported()
             and os.environ.get('PYCONV_DIRECT_KERNEL', '1') != '0')


def usable(x: torch.Tensor, level: nn.Conv2d) -> bool:
    """Whether the kernel can compute ``level`` (a grouped ``nn.Conv2d``) on ``x`` now."""
    if not AVAILABLE or x.dim() != 4 or x.device.type != 'cpu' or x.dtype != torch.float32:
        return False
    if torch.is_grad_enabled() and (x.requires_grad or level.weight.requires_grad):
        return False  # forward only: training keeps the stock forms
    if level.weight.dtype != torch.float32 or level.padding_mode != 'zeros':
        return False
    kh, kw = level.kernel_size
    sh, sw = level.stride
    return (kh == kw and kh % 2 == 1 and sh == sw and sh in (1, 2) and len(set(level.dilation)) == 1
            and level.padding == ((kh - 1) // 2 * level.dilation[0], ) * 2)


def output_size(x: torch.Tensor, level: nn.Conv2d) -> Tuple[int, int]:
    """(H_out, W_out) of ``level`` on ``x``."""
    return tuple((size + 2 * pad - dil * (k - 1) - 1) // stride + 1
                 for size, pad, dil, k, stride in zip(x.shape[2:], level.padding, level.dilation,
                                                      level.kernel_size, level.stride))


def span(level: nn.Conv2d) -> int:
    """Input rows (columns) one output row (column) of ``level`` reads."""
    return (level.kernel_size[0] - 1) * level.dilation[0] + 1


_BUFFERS = threading.local()


def pack(x: torch.Tensor, pad: int, stride: int, span: int,
         out_size: Tuple[int, int]) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, stride, H_padded, W_padded / stride): the kernel's input, zero
    padded by ``pad`` and by what tiles of outputs ``out_size`` read past the image.

    The result lives in a buffer of this thread that the next call overwrites (it is consumed
    within one PyConv forward); reusing it spares the page faults of fresh memory, which cost
    more than the packing itself at the first stage of PyConvResNet (37 MB at batch 8).
    """
    numel = _ext.packed_numel(*x.shape, pad, stride, span, *out_size)
    buffer = getattr(_BUFFERS, 'packed', None)
    if buffer is None or buffer.numel() < numel:
        buffer = _BUFFERS.packed = torch.empty(numel, dtype=torch.float32)
    return _ext.pack_input(x, pad, stride, span, out_size[0], out_size[1], buffer)


def conv_into(packed: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
              stride: int, dilation: int, offset: int, out: torch.Tensor,
              c_offset: int) -> None:
    """Write a grouped convolution of the packed input into ``out[:, c_offset:c_offset + C]``.

    ``offset`` is the packed padding minus this level's own padding.
    """
    _ext.conv_into(packed, weight.detach(), None if bias is None else bias.detach(), stride,
                   dilation, offset, out, c_offset)


def empty_output(x: torch.Tensor, channels: int, size: Tuple[int, int]) -> torch.Tensor:
    """An output for ``channels`` channels in ``x``'s memory format."""
    fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) \
        and not x.is_contiguous() else torch.contiguous_format
    return torch.empty((x.shape[0], channels, *size), dtype=x.dtype, device=x.device,
                       memory_format=fmt)


def conv_level(level: nn.Conv2d, x: torch.Tensor,
               weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """One level alone: ``level(x)`` (with ``weight`` instead of its own if given)."""
    size = output_size(x, level)
    out = empty_output(x, level.out_channels, size)
    packed = pack(x, level.padding[0], level.stride[0], span(level), size)
    conv_into(packed, level.weight if weight is None else weight, level.bias, level.stride[0],
              level.dilation[0], 0, out, 0)
    return out
