"""Parameters and GFLOPs of models built from configs, beside the paper's numbers.

    python tools/analysis/complexity.py CONFIG [CONFIG ...] [--shape 3 224 224]
                                        [--markdown] [--json out.json] [--readme-block NAME]

FLOPs are multiply-adds counted by mmengine's FlopAnalyzer on one input of the task's size
(ImageNet 224, ADE20K 473 with the auxiliary head, COCO 300, Kinetics 16x224x224) unless
``--shape`` (without batch) or the config's ``complexity_input_shape`` says otherwise.
``--readme-block NAME`` rewrites the README block between
``<!-- BEGIN generated: NAME -->`` and ``<!-- END generated: NAME -->`` with the markdown table;
``--metafile PATH`` writes OpenMMLab model-index metadata (measured FLOPs and parameters).
"""
import argparse
import json
import warnings
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)
from pyconv_mm.analysis import analyze_config  # noqa: E402
from pyconv_mm.analysis.report import (format_markdown, format_text, metafile,  # noqa: E402
                                       update_readme_block)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('configs', nargs='+', help='config files')
    parser.add_argument('--shape', type=int, nargs='+',
                        help='input shape without batch, e.g. 3 224 224 or 3 16 224 224')
    parser.add_argument('--markdown', action='store_true', help='print a markdown table')
    parser.add_argument('--layers', action='store_true',
                        help='also list the PyConv layers and the remaining plain k x k convs')
    parser.add_argument('--json', help='also write the results to this JSON file')
    parser.add_argument('--readme-block', help='rewrite this generated block of README.md')
    parser.add_argument('--metafile', help='write an OpenMMLab metafile.yml for these configs')
    parser.add_argument('--collection', default='PyConvResNet', help='metafile collection name')
    parser.add_argument('--architecture', nargs='+', default=['PyConv', 'Residual Connection'],
                        help='metafile collection architecture tags')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    warnings.filterwarnings('ignore', category=UserWarning)  # upstream deprecation chatter
    results = []
    for path in args.configs:
        print(f'analysing {path} ...', file=sys.stderr, flush=True)
        info = analyze_config(path, shape=args.shape)
        info['config'] = osp.relpath(osp.abspath(path), ROOT)
        results.append(info)
    print(format_markdown(results) if args.markdown else format_text(results))
    if args.layers:
        for info in results:
            layers = info['layers']
            print(f'\n{info["name"]}: {len(layers["pyconv"])} PyConv layers, '
                  f'{len(layers["plain"])} plain k x k convs')
            for line in layers['pyconv'] + layers['plain']:
                print(f'  {line}')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=2, default=list)
    if args.readme_block:
        readme = osp.join(ROOT, 'README.md')
        update_readme_block(readme, args.readme_block, format_markdown(results))
        print(f'updated block {args.readme_block!r} of {readme}', file=sys.stderr)
    if args.metafile:
        with open(args.metafile, 'w') as f:
            f.write(metafile(results, args.collection, args.architecture))
        print(f'wrote {args.metafile}', file=sys.stderr)


if __name__ == '__main__':
    main()
