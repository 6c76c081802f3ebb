"""Converters from the authors' checkpoints to pyconv_mm's layout."""
from .official import (add_missing_bn_counters, check_against, infer_imagenet_arch,
                       load_official, rename_pyconv_levels, save_converted, sha256sum)

__all__ = ['load_official', 'rename_pyconv_levels', 'add_missing_bn_counters', 'check_against',
           'save_converted', 'sha256sum', 'infer_imagenet_arch']
