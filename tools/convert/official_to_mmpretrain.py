"""Convert the authors' ImageNet checkpoint (PyConvResNet / PyConvHGResNet 50/101/152) to an
mmpretrain ``ImageClassifier`` checkpoint of ours, or to a backbone-only file.

    python tools/convert/official_to_mmpretrain.py SRC DST [--backbone-only] [--force]
                                                   [--sha256 HEX]

Download the authors' files yourself (Google Drive, https://github.com/iduta/pyconv); this tool
never downloads. The architecture is read from the checkpoint. The result loads strictly:
  * full:          ``load_from = DST`` or ``python tools/test.py CONFIG DST``
  * backbone-only: ``backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=DST))`` in any
                   task (segmentation, detection, video inflation).
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', help="the authors' checkpoint (.pth)")
    parser.add_argument('dst', help='where to write the converted checkpoint')
    parser.add_argument('--backbone-only', action='store_true',
                        help='write only the backbone (keys without "backbone.")')
    parser.add_argument('--force', action='store_true', help='replace DST if it exists')
    parser.add_argument('--sha256', help='refuse SRC unless its SHA-256 matches')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    import pyconv_mm  # noqa: F401
    from mmpretrain.registry import MODELS

    from pyconv_mm.convert import (add_missing_bn_counters, check_against, infer_imagenet_arch,
                                   load_official, rename_pyconv_levels, save_converted,
                                   sha256sum)
    if osp.exists(args.dst) and not args.force:
        sys.exit(f'error: {args.dst} exists; pass --force to replace it')
    source = load_official(args.src, args.sha256)
    arch = infer_imagenet_arch(source)
    print(f'{args.src}: {arch["type"]}-{arch["depth"]}, {arch["num_classes"]} classes, '
          f'sha256 {sha256sum(args.src)}')
    model = MODELS.build(dict(
        type='ImageClassifier',
        backbone=dict(type=arch['type'], depth=arch['depth']),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=arch['num_classes'] or 1000,
                  in_channels=2048)))
    converted = {}
    for key, value in source.items():
        key = rename_pyconv_levels(key)
        converted[f'head.{key}' if key.startswith('fc.') else f'backbone.{key}'] = value
    expected = model.state_dict()
    converted = add_missing_bn_counters(converted, expected)
    if args.backbone_only:
        converted = {k[len('backbone.'):]: v for k, v in converted.items()
                     if k.startswith('backbone.')}
        expected = model.backbone.state_dict()
    check_against(converted, expected, args.src)
    meta = dict(source=osp.basename(args.src), source_sha256=sha256sum(args.src),
                arch=arch, converted_by='pyconv_mm tools/convert/official_to_mmpretrain.py',
                backbone_only=args.backbone_only)
    save_converted(converted, args.dst, meta, force=args.force)
    print(f'wrote {args.dst} ({len(converted)} tensors, loads strictly into '
          f'{"the backbone" if args.backbone_only else "ImageClassifier"})')


if __name__ == '__main__':
    main()
