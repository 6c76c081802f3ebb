"""Backbones: PyConvResNet / PyConvHGResNet (2D) and PyConvResNet3D (video)."""
from .pyconv_blocks import PyConvBasicBlock, PyConvBottleneck, make_shortcut, make_stage
from .pyconv_resnet import MAXPOOL_PLACEMENTS, PyConvHGResNet, PyConvResNet

__all__ = [
    'PyConvResNet', 'PyConvHGResNet', 'PyConvBottleneck', 'PyConvBasicBlock', 'make_stage',
    'make_shortcut', 'MAXPOOL_PLACEMENTS'
]
