from fractions import Fraction

import pytest

from pyconv_mm.ops import build_pyramid, closest_divisor, default_pyramid, split_channels


def test_default_pyramids_match_the_paper():
    assert default_pyramid(4) == dict(kernel_sizes=[3, 5, 7, 9], groups=[1, 4, 8, 16],
                                      shares=[Fraction(1, 4)] * 4)
    assert default_pyramid(3)['shares'] == [Fraction(1, 4), Fraction(1, 4), Fraction(1, 2)]
    assert default_pyramid(2) == dict(kernel_sizes=[3, 5], groups=[1, 4],
                                      shares=[Fraction(1, 2)] * 2)
    assert default_pyramid(1) == dict(kernel_sizes=[3], groups=[1], shares=[Fraction(1)])
    with pytest.raises(ValueError, match='levels; valid: \\[1, 2, 3, 4, 5\\]'):
        default_pyramid(6)


@pytest.mark.parametrize('channels, requested, expected', [
    (64, 16, 16), (96, 7, 6), (100, 16, 20), (48, 64, 48), (7, 4, 1), (64, 48, 32)])
def test_closest_divisor(channels, requested, expected):
    assert closest_divisor(channels, requested) == expected


def test_closest_divisor_respects_level_width():
    assert closest_divisor(64, 16, also_divides=8) == 8
    with pytest.raises(ValueError, match='requested=0'):
        closest_divisor(64, 0)


def test_split_channels():
    assert split_channels(512, [0.25, 0.25, 0.5]) == [128, 128, 256]
    with pytest.raises(ValueError, match='sum to 3/4'):
        split_channels(64, [0.5, 0.25])
    with pytest.raises(ValueError, match='share\\[0\\]=1/3 of out_channels=64'):
        split_channels(64, [Fraction(1, 3), Fraction(2, 3)])


def test_padding_keeps_size_with_dilation():
    levels = build_pyramid(8, 8, [3, (3, 5, 5)], [1, 2], dilations=2, ndim=3)
    assert levels[0].padding == (2, 2, 2)
    assert levels[1].padding == (2, 4, 4)


@pytest.mark.parametrize('kwargs, message', [
    (dict(kernel_sizes=[3, 5], groups=[1]), 'groups has 1 entries'),
    (dict(kernel_sizes=[3, 4]), 'kernel_sizes\\[1\\]=4 must be odd'),
    (dict(kernel_sizes=[3, -1]), 'kernel_sizes\\[1\\]=-1 must be odd and positive'),
    (dict(kernel_sizes=[]), 'kernel_sizes is empty'),
    (dict(kernel_sizes=[3, 5], groups=[1, 3]), 'groups\\[1\\]=3 must divide in_channels=64.*valid'),
    (dict(kernel_sizes=[3, 5], groups=[1, 64]), "level's out_channels=32; valid"),
    (dict(kernel_sizes=[3, 5], shares=[0.5, 0.25]), 'sum to 3/4'),
    (dict(kernel_sizes=[3, 5], dilations=[1, 0]), 'dilations'),
    (dict(kernel_sizes=[(3, 3, 3)]), 'must be an int or a tuple of 2 ints'),
])
def test_invalid_arguments_name_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_pyramid(64, 64, **kwargs)


def test_per_level_out_channels():
    levels = build_pyramid(32, [8, 24], [3, 5], [1, 4])
    assert [lvl.out_channels for lvl in levels] == [8, 24]
    with pytest.raises(ValueError, match='either per-level out_channels or shares'):
        build_pyramid(32, [8, 24], [3, 5], shares=[0.5, 0.5])
