"""``conv_cfg=dict(type='PyConv', ...)``: turn the k x k convolutions of any module that builds
its convolutions with mmcv's ``build_conv_layer`` / ``ConvModule`` into PyConvs.

1x1 convolutions and convolutions over fewer than ``min_in_channels`` inputs (an image stem)
stay plain. The pyramid is chosen by config:

* ``pyconv_kernels`` (+ ``pyconv_groups``, ``pyconv_shares``): an explicit pyramid;
* ``levels``: the paper's default pyramid with that many levels;
* neither: the paper's rule, fewer levels for wider layers (the widths of PyConvResNet's
  stages): ``levels_by_channels={64: 4, 128: 3, 256: 2}``, wider layers one level.

The default pyramids' groups are adapted to the channels with the paper's closest-divisor rule;
explicit ``pyconv_groups`` must divide the channels. A setting that cannot replace the upstream
convolution (a padding that does not keep the spatial size, a grouped upstream convolution,
groups that do not divide) raises a ``ValueError`` naming the upstream module.

Example (mmseg's FCNHead with PyConv 3x3 convs)::

    decode_head=dict(type='FCNHead', ..., conv_cfg=dict(type='PyConv', levels=4))
"""
import inspect
from typing import Dict, Optional, Sequence, Union

from torch import nn

from .pyconv import PyConv2d, PyConv3d
from .pyramid import IntOrTuple, closest_divisor, default_pyramid, ntuple

PAPER_LEVELS_BY_CHANNELS = {64: 4, 128: 3, 256: 2}


def _calling_module() -> str:
    """Name of the module whose ``__init__`` is building this convolution (for errors)."""
    from mmcv.cnn import ConvModule
    for frame in inspect.stack()[2:]:
        owner = frame.frame.f_locals.get('self')
        if isinstance(owner, nn.Module) and not isinstance(owner, ConvModule):
            return type(owner).__name__
    return 'the module'


def _levels_for(in_channels: int, levels_by_channels: Dict[int, int]) -> int:
    for width in sorted(levels_by_channels):
        if in_channels <= width:
            return levels_by_channels[width]
    return 1


def pyconv_conv_layer(in_channels: int,
                      out_channels: int,
                      kernel_size: IntOrTuple,
                      stride: IntOrTuple = 1,
                      padding: Union[IntOrTuple, str] = 0,
                      dilation: IntOrTuple = 1,
                      groups: int = 1,
                      bias: bool = True,
                      pyconv_kernels: Optional[Sequence[IntOrTuple]] = None,
                      pyconv_groups: Optional[Sequence[int]] = None,
                      pyconv_shares: Optional[Sequence[float]] = None,
                      levels: Optional[int] = None,
                      levels_by_channels: Optional[Dict[int, int]] = None,
                      min_in_channels: int = 16,
                      ndim: int = 2,
                      **kwargs) -> nn.Module:
    """Build a PyConv in place of ``nn.ConvNd(in_channels, out_channels, kernel_size, ...)``.

    The first eight arguments are those of ``torch.nn.Conv2d``, as ``build_conv_layer`` passes
    them; the others come from the ``conv_cfg`` dict (see the module docstring).

    Returns:
        A :class:`PyConv2d` / :class:`PyConv3d`, or a plain convolution for 1x1 kernels and
        inputs narrower than ``min_in_channels``.
    """
    conv_cls, pyconv_cls = (nn.Conv2d, PyConv2d) if ndim == 2 else (nn.Conv3d, PyConv3d)
    kernel = ntuple(kernel_size, ndim)
    if all(k == 1 for k in kernel) or in_channels < min_in_channels:
        return conv_cls(in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                        bias, **kwargs)
    owner = _calling_module()
    if kwargs:
        raise ValueError(f'{owner}: conv_cfg type PyConv does not support {sorted(kwargs)}')
    if groups != 1:
        raise ValueError(f'{owner}: cannot replace a grouped {"x".join(map(str, kernel))} conv '
                         f'(groups={groups}) by a PyConv; use PyConv on ungrouped convs only')
    dilation_t = ntuple(dilation, ndim)
    same = tuple(d * (k // 2) for k, d in zip(kernel, dilation_t))
    if padding != 'same' and ntuple(padding, ndim) != same:
        raise ValueError(f'{owner}: a {"x".join(map(str, kernel))} conv with padding={padding} '
                         f'changes the spatial size; a PyConv keeps it (padding {same} for '
                         f'dilation {dilation}), so it cannot replace this conv')
    if pyconv_kernels is not None:
        pyramid = dict(kernel_sizes=list(pyconv_kernels), groups=pyconv_groups or 1,
                       shares=pyconv_shares)
    else:
        if levels is None:
            levels = _levels_for(in_channels, levels_by_channels or PAPER_LEVELS_BY_CHANNELS)
        pyramid = default_pyramid(levels)
        pyramid['groups'] = [  # the paper's groups, adapted to these channels
            closest_divisor(in_channels, g, also_divides=int(out_channels * share))
            if (out_channels * share).denominator == 1 else 1
            for g, share in zip(pyramid['groups'], pyramid['shares'])]
    try:
        return pyconv_cls(in_channels, out_channels, stride=stride, dilations=dilation, bias=bias,
                          **pyramid)
    except ValueError as error:
        raise ValueError(f'{owner}: conv_cfg PyConv for a {in_channels}->{out_channels} '
                         f'{"x".join(map(str, kernel))} conv: {error}') from error
