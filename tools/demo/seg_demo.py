"""Segment one image with a trained model and save the overlay.

    python tools/demo/seg_demo.py IMAGE CONFIG CHECKPOINT --out out.png [--opacity 0.5]
                                  [--device cpu|cuda:0]
"""
import argparse
import os
import os.path as osp
import sys
import warnings

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('image', help='image file')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out', required=True, help='where to write the overlay (.png/.jpg)')
    parser.add_argument('--opacity', type=float, default=0.5, help='mask opacity in (0, 1]')
    parser.add_argument('--device', default='cpu', help='cpu or cuda:N')
    parser.add_argument('--force', action='store_true', help='replace --out if it exists')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    warnings.filterwarnings('ignore', category=UserWarning)
    for path, what in ((args.image, 'image'), (args.config, 'config'),
                       (args.checkpoint, 'checkpoint')):
        if not osp.isfile(path):
            sys.exit(f'error: {what} {path!r} does not exist')
    if not 0 < args.opacity <= 1:
        sys.exit(f'error: --opacity {args.opacity} must be in (0, 1]')
    if osp.exists(args.out) and not args.force:
        sys.exit(f'error: {args.out} exists; pass --force to replace it')
    import mmcv
    from mmseg.apis import inference_model, init_model
    from mmseg.visualization import SegLocalVisualizer

    from pyconv_mm.utils.cli import load_config
    cfg = load_config(args.config)
    model = init_model(cfg, args.checkpoint, device=args.device)
    result = inference_model(model, args.image)
    visualizer = SegLocalVisualizer(alpha=args.opacity)
    visualizer.dataset_meta = dict(classes=model.dataset_meta['classes'],
                                   palette=model.dataset_meta['palette'])
    image = mmcv.imread(args.image, channel_order='rgb')
    visualizer.add_datasample('result', image, result, draw_gt=False, show=False)
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    mmcv.imwrite(mmcv.rgb2bgr(visualizer.get_image()), args.out)
    labels = sorted(set(result.pred_sem_seg.data.unique().tolist()))
    print(f'wrote {args.out}: classes {[model.dataset_meta["classes"][i] for i in labels]}')


if __name__ == '__main__':
    main()
