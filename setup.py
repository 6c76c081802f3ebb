"""Install pyconv_mm: Pyramidal Convolution (Duta et al., 2020) for OpenMMLab 2.x.

The direct CPU kernel for PyConv levels (``pyconv_mm/ops/csrc``) is built as a torch C++
extension when torch is importable at build time (``pip install --no-build-isolation``, as
``tools/setup.sh`` does); without it the package installs and runs on the stock kernels.
"""
import os.path as osp

from setuptools import find_packages, setup


def read_version() -> str:
    namespace: dict = {}
    with open(osp.join(osp.dirname(__file__), 'pyconv_mm', 'version.py')) as f:
        exec(f.read(), namespace)
    return namespace['__version__']


def extensions() -> dict:
    """Our CPU kernels (PyConv levels, max-pool gradient, training batch norm, 1x1 weight
    gradient) as a torch CppExtension (x86-64 with a C++ compiler and torch)."""
    try:
        from torch.utils.cpp_extension import BuildExtension, CppExtension
    except ImportError:
        return {}
    import platform
    if platform.machine() not in ('x86_64', 'AMD64'):
        return {}
    ext = CppExtension('pyconv_mm.ops._direct_conv',
                       ['pyconv_mm/ops/csrc/direct_conv.cpp', 'pyconv_mm/ops/csrc/max_pool.cpp',
                        'pyconv_mm/ops/csrc/fingerprint.cpp', 'pyconv_mm/ops/csrc/batch_norm.cpp',
                        'pyconv_mm/ops/csrc/channels_last_weight_grad.cpp',
                        'pyconv_mm/ops/csrc/pointwise_weight_grad.cpp'],
                       # -Wno-maybe-uninitialized: GCC 12 warns about the undefined pass-through
                       # operand inside its own AVX-512 intrinsics (avx512fintrin.h)
                       extra_compile_args=['-O3', '-fopenmp', '-Wno-maybe-uninitialized'],
                       extra_link_args=['-fopenmp'])
    return dict(ext_modules=[ext], cmdclass={'build_ext': BuildExtension})


CODEBASES = {
    'cls': ['mmpretrain==1.2.0'],
    'seg': ['mmsegmentation==1.2.2', 'ftfy', 'regex'],
    'det': ['mmdet==3.3.0', 'pycocotools'],
    'action': ['mmaction2==1.2.0'],
}

setup(
    name='pyconv_mm',
    version=read_version(),
    description='Pyramidal Convolution (PyConv) backbones and heads for OpenMMLab 2.x',
    long_description=open('README.md').read() if osp.exists('README.md') else '',
    long_description_content_type='text/markdown',
    license='MIT',
    python_requires='>=3.9',
    packages=find_packages(include=['pyconv_mm', 'pyconv_mm.*']),
    install_requires=['torch>=1.13', 'mmengine==0.10.7', 'mmcv==2.1.0', 'numpy', 'pillow'],
    extras_require={
        **CODEBASES,
        'all': sorted({req for reqs in CODEBASES.values() for req in reqs}),
        'tests': ['pytest', 'pytest-timeout', 'hypothesis'],
    },
    **extensions(),
)
