"""Embedded demo datasets, generated deterministically from a seed in each codebase's format.

===========  ========================  ==============================================
name         format                    read by
===========  ========================  ==============================================
imagenet     ImageNet folders          mmpretrain ``CustomDataset``
ade20k       ADE20K layout             mmseg ``ADE20KDataset``
coco         COCO json + images        mmdet ``CocoDataset``, ``CocoMetric``
kinetics     raw frames + list file    mmaction2 ``RawframeDataset``
===========  ========================  ==============================================

In a config (configs cannot use ``import``; this is evaluated when the config is read, so the
upstream tools generate the data too)::

    data_root = __import__('pyconv_mm.datasets.demo', fromlist=['prepare']).prepare('ade20k')
"""
from . import classification, detection, segmentation, video
from .base import DEMO_DATASETS, DemoDataset, default_cache_dir, prepare

__all__ = ['prepare', 'DEMO_DATASETS', 'DemoDataset', 'default_cache_dir', 'classification',
           'segmentation', 'detection', 'video']
