"""Convert the authors' PyConvSegNet checkpoint (https://github.com/iduta/pyconvsegnet; ADE20K,
ResNet or PyConvResNet backbones) to an mmseg checkpoint of ours.

    python tools/convert/official_seg_to_mmseg.py SRC DST [--config CONFIG] [--force]
                                                  [--sha256 HEX]

Their keys (``layer0``..``layer4``, ``pyconvhead.local_context``, ``.global_context``,
``.merge_context``, ``aux``, ``cls``) map onto our EncoderDecoder (backbone, PyConvPH,
FCNHead). The architecture is read from the file and checked against CONFIG (by default
``configs/pyconvsegnet_{r,pyconvr}{depth}_ade20k.py``); the result loads strictly:
``python tools/test.py CONFIG DST``.
"""
import argparse
import os.path as osp
import sys
import warnings

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', help="the authors' PyConvSegNet checkpoint (.pth)")
    parser.add_argument('dst', help='where to write the converted checkpoint')
    parser.add_argument('--config', help='our config the checkpoint is for')
    parser.add_argument('--force', action='store_true', help='replace DST if it exists')
    parser.add_argument('--sha256', help='refuse SRC unless its SHA-256 matches')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    warnings.filterwarnings('ignore', category=UserWarning)
    from mmengine.config import Config

    from pyconv_mm.analysis import build_model
    from pyconv_mm.convert import (add_missing_bn_counters, check_against, load_official,
                                   save_converted, sha256sum)
    from pyconv_mm.convert.official import infer_segmentation_arch, rename_segmentation_key
    if osp.exists(args.dst) and not args.force:
        sys.exit(f'error: {args.dst} exists; pass --force to replace it')
    source = load_official(args.src, args.sha256)
    arch = infer_segmentation_arch(source)
    print(f'{args.src}: {arch["type"]}-{arch["depth"]} PyConvSegNet, {arch["num_classes"]} '
          f'classes, sha256 {sha256sum(args.src)}')
    if arch['type'] == 'PyConvHGResNet' and args.config is None:
        sys.exit('error: give --config for a PyConvHGResNet backbone')
    prefix = 'r' if arch['type'] == 'ResNet' else 'pyconvr'
    config = args.config or osp.join(ROOT, 'configs',
                                     f'pyconvsegnet_{prefix}{arch["depth"]}_ade20k.py')
    cfg = Config.fromfile(config)
    for head in ('decode_head', 'auxiliary_head'):
        cfg.model[head].num_classes = arch['num_classes']
    model = build_model(cfg)
    if hasattr(model, 'module') and not hasattr(model, 'backbone'):
        model = model.module  # a test-time-augmentation wrapper
    pyconv = arch['type'] != 'ResNet'
    converted = {rename_segmentation_key(k, pyconv): v for k, v in source.items()}
    converted = add_missing_bn_counters(converted, model.state_dict())
    check_against(converted, model.state_dict(), args.src)
    meta = dict(source=osp.basename(args.src), source_sha256=sha256sum(args.src), arch=arch,
                config=osp.relpath(config, ROOT),
                converted_by='pyconv_mm tools/convert/official_seg_to_mmseg.py')
    save_converted(converted, args.dst, meta, force=args.force)
    print(f'wrote {args.dst} ({len(converted)} tensors, loads strictly into {config})')


if __name__ == '__main__':
    main()
