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



def _seg(params, gflops, miou=None, miou_ms=None, exact=None, source='Table 6'):
    return dict(params=params, gflops=gflops, miou=miou, miou_ms=miou_ms, exact_params=exact,
                source=source, dataset='ADE20K')


PAPER.update({
    # ADE20K at 473x473, auxiliary head included (Tables 5-6); exact counts from the authors' code
    'pyconvsegnet_r50_ade20k': _seg(34.40, 116.84, 41.54, 42.88, 34_397_548),
    'pyconvsegnet_pyconvr50_ade20k': _seg(33.69, 114.18, 42.08, 43.31, 33_688_236),
    'pyconvsegnet_pyconvr50_ade20k-ms': _seg(33.69, 114.18, None, 43.31, 33_688_236),
    'pyconvsegnet_r101_ade20k': _seg(53.39, 185.47, 42.88, 44.39, 53_389_676),
    'pyconvsegnet_pyconvr101_ade20k': _seg(51.15, 177.29, 42.93, 44.58, 51_148_460),
    'pyconvsegnet_r152_ade20k': _seg(69.03, 242.00, 44.04, 45.28, 69_033_324),
    'pyconvsegnet_pyconvr152_ade20k': _seg(65.48, 229.11, 44.36, 45.64, 65_481_388),
    'pyconvsegnet_r50-os16_ade20k': _seg(34.40, 36.08, 40.43, source='Table 5'),
    # Table 5 head-to-head, ResNet-50
    'fcn3x3_r50-os8_ade20k': _seg(35.42, 131.37, 37.87, source='Table 5'),
    'aspp_r50-os8_ade20k': _seg(41.48, 151.17, 40.91, source='Table 5'),
    'psp_r50-os8_ade20k': _seg(49.06, 165.42, 41.24, source='Table 5'),
    'fcn3x3_r50-os16_ade20k': _seg(35.42, 39.52, 36.84, source='Table 5'),
    'aspp_r50-os16_ade20k': _seg(41.48, 44.47, 40.34, source='Table 5'),
    'psp_r50-os16_ade20k': _seg(49.06, 48.08, 39.75, source='Table 5'),
})

PAPER.update({
    # COCO val2017 at 300x300 (Table 8)
    name: dict(params=params, gflops=gflops, box_ap=ap, source='Table 8', dataset='COCO')
    for name, params, gflops, ap in [
        ('ssd_r50_coco', 22.89, 20.92, 26.20),
        ('pyconvssd_pyconvr50_coco', 21.55, 19.71, 29.16),
        ('ssd_r101_coco', 41.89, 48.45, 29.58),
        ('pyconvssd_pyconvr101_coco', 39.01, 45.02, 31.27),
    ]
})

PAPER.update({
    # Kinetics-400, 16x224x224 clips, 400 classes (Table 10; top-1 = 100 - error)
    'resnet3d50_k400': dict(params=47.00, gflops=93.26, top1=62.99, top5=84.59,
                            exact_params=46_999_760, source='Table 10', dataset='Kinetics-400'),
    'pyconvresnet3d50_k400': dict(params=44.91, gflops=91.81, top1=65.44, top5=86.66,
                                  source='Table 10', dataset='Kinetics-400'),
})


def paper_numbers(config_stem: str) -> dict:
    """The paper's numbers for a config (empty dict when the paper has none)."""
    return PAPER.get(config_stem, {})
