"""Check that the OpenMMLab stack and pyconv_mm import; run as ``python -m pyconv_mm.utils.check_env``.

Prints one line per part (version or the error) and exits with 1 if any part failed.
"""
import importlib
import sys
import traceback
from typing import Callable, List, Tuple


def _version(module: str) -> Callable[[], str]:
    def check() -> str:
        return importlib.import_module(module).__version__
    return check


def _mmcv_ops() -> str:
    import mmcv
    from mmcv.ops import nms  # needs the compiled extension
    import torch
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.], [20., 20., 30., 30.]])
    keep = nms(boxes, torch.tensor([0.9, 0.8, 0.7]), iou_threshold=0.5)[1]
    assert keep.tolist() == [0, 2], keep
    from mmcv.ops import get_compiling_cuda_version, get_compiler_version
    return (f'{mmcv.__version__}, ops compiled with {get_compiler_version()}, '
            f'CUDA {get_compiling_cuda_version()}')


def _models(codebase: str, package: str) -> Callable[[], str]:
    def check() -> str:
        import pyconv_mm  # noqa: F401  (compat fixes first)
        importlib.import_module(f'{package}.models')
        registry = importlib.import_module(f'{package}.registry').MODELS
        version = importlib.import_module(package).__version__
        return f'{version}, {len(registry.module_dict)} models registered'
    return check


def _direct_kernel() -> str:
    """Our PyConv CPU kernel (built by the set-up on x86-64; optional elsewhere)."""
    import platform

    from pyconv_mm.ops import direct
    if direct._ext is None:
        if platform.machine() not in ('x86_64', 'AMD64'):
            return f'not built on {platform.machine()}: PyConv runs on the stock kernels'
        raise ImportError('pyconv_mm.ops._direct_conv is not built: rerun tools/setup.sh')
    if not direct._ext.supported():
        return 'built; this CPU has no AVX-512: PyConv runs on the stock kernels'
    if not direct.enabled():
        return 'built, AVX-512; turned off by PYCONV_DIRECT_KERNEL=0'
    return 'built, AVX-512: used for PyConvs where it is faster'


CHECKS: List[Tuple[str, Callable[[], str]]] = [
    ('torch', lambda: __import__('torch').__version__ + ' (CUDA available: '
     + str(__import__('torch').cuda.is_available()) + ')'),
    ('torchvision', _version('torchvision')),
    ('mmengine', _version('mmengine')),
    ('mmcv + ops', _mmcv_ops),
    ('mmpretrain models', _models('mmpretrain', 'mmpretrain')),
    ('mmseg models', _models('mmseg', 'mmseg')),
    ('mmdet models', _models('mmdet', 'mmdet')),
    ('mmaction2 models', _models('mmaction2', 'mmaction')),
    ('pyconv_mm', lambda: '{} ({})'.format(
        _version('pyconv_mm')(), ', '.join(
            f'{k}: {len(v)}' for k, v in importlib.import_module('pyconv_mm').REGISTERED.items()))),
    ('PyConv CPU kernel', _direct_kernel),
]


def main(verbose: bool = '-v' in sys.argv) -> int:
    failed = []
    for name, check in CHECKS:
        try:
            print(f'  OK    {name:<18} {check()}', flush=True)
        except Exception as exc:  # report every failure, not just the first
            failed.append(name)
            print(f'  FAIL  {name:<18} {type(exc).__name__}: {exc}', flush=True)
            if verbose:
                traceback.print_exc()
    if failed:
        print(f'FAILED: {", ".join(failed)} (run with -v for tracebacks)')
        return 1
    print('all parts import')
    return 0


if __name__ == '__main__':
    sys.exit(main())
