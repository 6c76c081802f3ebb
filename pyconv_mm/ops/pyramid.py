"""Pyramid arithmetic shared by every PyConv: validated level specs, width splits, group choice.

A PyConv with ``n`` levels applies ``n`` convolutions to the same input and concatenates their
outputs along channels (Duta et al., 2020, Section 3). This module holds the pure logic that
turns user arguments into one :class:`PyramidLevel` per level, independent of 2D or 3D.

Example:
    >>> levels = build_pyramid(64, 64, kernel_sizes=[3, 5, 7, 9], groups=[1, 4, 8, 16], ndim=2)
    >>> [(lvl.kernel_size, lvl.groups, lvl.out_channels) for lvl in levels]
    [((3, 3), 1, 16), ((5, 5), 4, 16), ((7, 7), 8, 16), ((9, 9), 16, 16)]
"""
from dataclasses import dataclass
from fractions import Fraction
from typing import List, Optional, Sequence, Tuple, Union

IntOrTuple = Union[int, Sequence[int]]

#: The paper's default pyramids, keyed by number of levels: (kernels, groups, output shares).
#: The 5-level row (the Table 2 "(5, 4, 3, 2)" ablation, 11x11 fifth level) is not spelled out in
#: the paper; like the 3-level row it gives the larger kernels the larger share, and it reproduces
#: the ablation's 23.45M parameters.
DEFAULT_PYRAMIDS = {
    1: ((3, ), (1, ), (Fraction(1), )),
    2: ((3, 5), (1, 4), (Fraction(1, 2), ) * 2),
    3: ((3, 5, 7), (1, 4, 8), (Fraction(1, 4), Fraction(1, 4), Fraction(1, 2))),
    4: ((3, 5, 7, 9), (1, 4, 8, 16), (Fraction(1, 4), ) * 4),
    5: ((3, 5, 7, 9, 11), (1, 4, 8, 16, 16), (Fraction(1, 8), Fraction(1, 8), Fraction(1, 4),
                                              Fraction(1, 4), Fraction(1, 4))),
}


@dataclass(frozen=True)
class PyramidLevel:
    """One level of a PyConv: a grouped convolution with its own kernel and width."""
    out_channels: int
    kernel_size: Tuple[int, ...]
    groups: int
    dilation: Tuple[int, ...]

    @property
    def padding(self) -> Tuple[int, ...]:
        """Padding that keeps the spatial size at stride 1: ``(k // 2) * d`` per dimension."""
        return tuple((k // 2) * d for k, d in zip(self.kernel_size, self.dilation))


def divisors(n: int) -> List[int]:
    """All positive divisors of ``n`` in increasing order."""
    return [d for d in range(1, n + 1) if n % d == 0]


def closest_divisor(channels: int, requested: int, also_divides: Optional[int] = None) -> int:
    """The divisor of ``channels`` closest to ``requested`` groups (the paper's rule, Section 3).

    Args:
        channels: input feature maps FMi.
        requested: the desired number of groups.
        also_divides: if given, the result must also divide this number (a level's output
            channels), as PyConv requires of its groups.

    Returns:
        The closest admissible group count; ties go to the smaller one (more connectivity).
    """
    if channels <= 0 or requested <= 0:
        raise ValueError(f'closest_divisor: channels={channels} and requested={requested} '
                         'must both be positive integers')
    candidates = [d for d in divisors(channels) if also_divides is None or also_divides % d == 0]
    return min(candidates, key=lambda d: (abs(d - requested), d))


def split_channels(total: int, shares: Sequence[Union[Fraction, float, int]]) -> List[int]:
    """Split ``total`` output channels by ``shares`` (fractions that sum to 1).

    Raises:
        ValueError: if the shares do not sum to 1 or a share does not give a whole number.
    """
    fractions = [Fraction(s).limit_denominator(1 << 16) for s in shares]
    if sum(fractions) != 1:
        raise ValueError(f'PyConv: output shares {[str(f) for f in fractions]} sum to '
                         f'{sum(fractions)}, they must sum to 1')
    widths = []
    for i, frac in enumerate(fractions):
        width = total * frac
        if width.denominator != 1 or width <= 0:
            raise ValueError(f'PyConv: share[{i}]={frac} of out_channels={total} is {float(width)}, '
                             'not a positive whole number of channels')
        widths.append(int(width))
    return widths


def _per_level(name: str, value, n_levels: int) -> list:
    """Broadcast a scalar (or a per-dimension tuple) to every level, or check a per-level list."""
    if isinstance(value, int) or (isinstance(value, tuple) and name in ('dilations', )):
        return [value] * n_levels
    value = list(value)
    if len(value) != n_levels:
        raise ValueError(f'PyConv: {name} has {len(value)} entries {value} but the pyramid has '
                         f'{n_levels} levels (one per kernel size)')
    return value


def ntuple(value: IntOrTuple, ndim: int) -> Tuple[int, ...]:
    """``value`` repeated ``ndim`` times when an int, else as a tuple."""
    return (value, ) * ndim if isinstance(value, int) else tuple(value)


def _as_tuple(name: str, value: IntOrTuple, ndim: int) -> Tuple[int, ...]:
    """:func:`ntuple`, checked: ``ndim`` ints."""
    value = ntuple(value, ndim)
    if len(value) != ndim or not all(isinstance(v, int) for v in value):
        raise ValueError(f'PyConv: {name}={value} must be an int or a tuple of {ndim} ints')
    return value


def build_pyramid(in_channels: int,
                  out_channels: Union[int, Sequence[int]],
                  kernel_sizes: Sequence[IntOrTuple],
                  groups: Union[int, Sequence[int]] = 1,
                  dilations: Union[IntOrTuple, Sequence[IntOrTuple]] = 1,
                  shares: Optional[Sequence[Union[Fraction, float]]] = None,
                  ndim: int = 2) -> List[PyramidLevel]:
    """Validate PyConv arguments and return one :class:`PyramidLevel` per level.

    Args:
        in_channels: input channels FMi, shared by all levels.
        out_channels: total output channels (split by ``shares``, equal by default) or a list
            with the output channels of each level.
        kernel_sizes: one kernel per level: an odd int, or a tuple of ``ndim`` odd ints
            (time first for 3D).
        groups: groups per level (or one value for all levels).
        dilations: dilation per level (or one value for all levels).
        shares: fraction of ``out_channels`` given to each level when it is a total.
        ndim: 2 for images, 3 for video.

    Raises:
        ValueError: naming the bad argument and what would be valid.
    """
    n_levels = len(kernel_sizes)
    if n_levels == 0:
        raise ValueError('PyConv: kernel_sizes is empty; give at least one kernel size')
    if not isinstance(in_channels, int) or in_channels <= 0:
        raise ValueError(f'PyConv: in_channels={in_channels} must be a positive int')
    kernels = [_as_tuple(f'kernel_sizes[{i}]', k, ndim) for i, k in enumerate(kernel_sizes)]
    for i, kernel in enumerate(kernels):
        if any(k <= 0 or k % 2 == 0 for k in kernel):
            raise ValueError(f'PyConv: kernel_sizes[{i}]={kernel_sizes[i]} must be odd and positive '
                             '(odd kernels keep the spatial size with symmetric padding), '
                             'e.g. 3, 5, 7, 9')
    groups = _per_level('groups', groups, n_levels)
    dilations = [_as_tuple(f'dilations[{i}]', d, ndim)
                 for i, d in enumerate(_per_level('dilations', dilations, n_levels))]
    if any(d <= 0 for dil in dilations for d in dil):
        raise ValueError(f'PyConv: dilations={dilations} must be positive')

    if isinstance(out_channels, int):
        if shares is None:
            shares = [Fraction(1, n_levels)] * n_levels
        shares = _per_level('shares', shares, n_levels)
        widths = split_channels(out_channels, shares)
    else:
        if shares is not None:
            raise ValueError('PyConv: give either per-level out_channels or shares, not both')
        widths = _per_level('out_channels', out_channels, n_levels)
        if any(not isinstance(w, int) or w <= 0 for w in widths):
            raise ValueError(f'PyConv: per-level out_channels={widths} must be positive ints')

    levels = []
    for i, (width, kernel, group, dilation) in enumerate(zip(widths, kernels, groups, dilations)):
        if not isinstance(group, int) or group <= 0 or in_channels % group or width % group:
            valid = [d for d in divisors(in_channels) if width % d == 0]
            raise ValueError(f'PyConv: groups[{i}]={group} must divide in_channels={in_channels} '
                             f'and the level\'s out_channels={width}; valid: {valid}')
        levels.append(PyramidLevel(width, kernel, group, dilation))
    return levels


def default_pyramid(n_levels: int) -> dict:
    """The paper's pyramid with ``n_levels`` levels as ``dict(kernel_sizes, groups, shares)``."""
    if n_levels not in DEFAULT_PYRAMIDS:
        raise ValueError(f'PyConv: no default pyramid with {n_levels} levels; '
                         f'valid: {sorted(DEFAULT_PYRAMIDS)}')
    kernels, groups, shares = DEFAULT_PYRAMIDS[n_levels]
    return dict(kernel_sizes=list(kernels), groups=list(groups), shares=list(shares))
