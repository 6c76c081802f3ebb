"""PyConv operators and the pyramid helpers they share."""
from .algorithms import get_algorithm, set_algorithm
from .conv_layer import pyconv_conv_layer
from .fuse import fuse_conv_bn
from .pyconv import PyConv2d, PyConv3d
from .pyramid import (DEFAULT_PYRAMIDS, PyramidLevel, build_pyramid, closest_divisor,
                      default_pyramid, divisors, split_channels)

__all__ = [
    'PyConv2d', 'PyConv3d', 'pyconv_conv_layer', 'fuse_conv_bn', 'set_algorithm', 'get_algorithm', 'PyramidLevel', 'build_pyramid', 'closest_divisor',
    'default_pyramid', 'divisors', 'split_channels', 'DEFAULT_PYRAMIDS'
]
