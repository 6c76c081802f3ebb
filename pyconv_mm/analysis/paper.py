"""The paper's reported numbers (Duta et al., 2020), keyed by the stem of our config file.

``params`` in millions, ``gflops`` in GFLOPs (multiply-adds) at the paper's input size,
``top1`` / ``miou`` / ``box_ap`` as reported. Exact parameter counts of the authors' released
models (from their code, see ../shared/SPEC.md) are in ``exact_params``.
The complexity tool prints our measurements beside these values.
"""
from typing import Dict

_IN1K = 'configs/pyconvresnet'


def _cls(params, gflops, top1=None, exact=None, source='Table 3', top5=None):
    return dict(params=params, gflops=gflops, top1=top1, top5=top5, exact_params=exact,
                source=source, dataset='ImageNet-1k')


PAPER: Dict[str, dict] = {
    # ImageNet, Table 3 (top-1 = 100 - top-1 error) and exact counts of the authors' models
    'pyconvresnet50_8xb32_in1k': _cls(24.85, 3.88, 77.88, 24_847_720, top5=93.8),
    'pyconvresnet101_8xb32_in1k': _cls(42.31, 7.31, 79.01, 42_307_944, top5=94.47),
    'pyconvresnet152_8xb32_in1k': _cls(56.64, 10.72, 79.52, 56_640_872, top5=94.73),
    'pyconvhgresnet50_8xb32_in1k': _cls(25.23, 4.61, 78.48, 25_234_728, top5=94.06),
    'pyconvhgresnet101_8xb32_in1k': _cls(44.63, 8.42, 79.22, 44_627_240, top5=94.43),
    'pyconvhgresnet152_8xb32_in1k': _cls(60.66, 12.29, 79.36, 60_657_960, top5=94.73),
    # Table 4: the improved recipe, tested at 224 and 320
    'pyconvresnet50_8xb128-amp-cutmix-cos-300e_in1k': _cls(24.85, 3.88, 79.44, 24_847_720,
                                                           'Table 4', 94.69),
    'pyconvresnet101_8xb128-amp-cutmix-cos-300e_in1k': _cls(42.31, 7.31, 80.58, 42_307_944,
                                                            'Table 4', 95.13),
    'pyconvresnet50_8xb128-amp-cutmix-cos-300e_in1k-test320': _cls(24.85, 7.91, 80.59,
                                                                   24_847_720, 'Table 4', 95.25),
    'pyconvresnet101_8xb128-amp-cutmix-cos-300e_in1k-test320': _cls(42.31, 14.92, 81.49,
                                                                    42_307_944, 'Table 4', 95.72),
    # Table 2 ablations (ResNet-50 depth)
    'pyconvresnet50-levels1111-stempool_8xb32_in1k': _cls(25.56, 4.14, 76.12, source='Table 2'),
    'pyconvresnet50-levels2221-stempool_8xb32_in1k': _cls(24.91, 3.91, 76.88, source='Table 2'),
    'pyconvresnet50-levels3321-stempool_8xb32_in1k': _cls(24.85, 3.85, 77.02, source='Table 2'),
    'pyconvresnet50-levels4321-stempool_8xb32_in1k': _cls(24.85, 3.84, 77.03, source='Table 2'),
    'pyconvresnet50-top4321-stempool_8xb32_in1k': _cls(24.24, 3.63, 76.82, source='Table 2'),
    'pyconvresnet50-levels5432-stempool_8xb32_in1k': _cls(23.45, 3.71, 76.97, source='Table 2'),
    'pyconvresnet50-levels4321-firstpool_8xb32_in1k': _cls(24.85, 3.88, 77.54, source='Table 2'),
    'pyconvresnet50-levels4321-allpool_8xb32_in1k': _cls(24.85, 3.88, 77.88, source='Table 2'),
}


def paper_numbers(config_stem: str) -> dict:
    """The paper's numbers for a config (empty dict when the paper has none)."""
    return PAPER.get(config_stem, {})
