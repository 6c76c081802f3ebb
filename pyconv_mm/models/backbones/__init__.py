"""Backbones: PyConvResNet / PyConvHGResNet (2D) and PyConvResNet3D (video)."""
from .pyconv_blocks import (PyConvBasicBlock, PyConvBottleneck, PyConvStage, make_shortcut,
                            make_stage)
from .pyconv_resnet import MAXPOOL_PLACEMENTS, PyConvHGResNet, PyConvResNet
from .pyconv_resnet3d import PAPER_PYRAMIDS_3D, PyConvResNet3D

__all__ = [
    'PyConvResNet', 'PyConvHGResNet', 'PyConvResNet3D', 'PAPER_PYRAMIDS_3D', 'PyConvBottleneck', 'PyConvBasicBlock', 'PyConvStage', 'make_stage',
    'make_shortcut', 'MAXPOOL_PLACEMENTS'
]
