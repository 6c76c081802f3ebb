"""Benchmark PyConv models against their baselines, interleaved in one run.

    python tools/analysis/benchmark.py [--cases all | pyconvresnet50 pyconvph ...]
        [--configs OURS.py REF.py ... --shape 3 224 224] [--device cpu|cuda]
        [--precision fp32 bf16 fp16] [--mode infer train] [--memory-format best|nchw|channels_last]
        [--batch N] [--warmup 5] [--repeats 10] [--threads N] [--fuse-bn] [--compile [--freezing]]
        [--pyconv-algorithm auto|native|dense|depthwise|direct] [--no-direct-kernel]
        [--no-fused-inference] [--no-packed-weights] [--no-fused-norms]
        [--no-pointwise-grads] [--malloc keep|default] [--memory] [--breakdown DEPTH]
        [--json results.json [--force]] [--readme-block benchmark|breakdown]
    python tools/analysis/benchmark.py --from-json benchmarks/*.json --readme-block benchmark

Default cases: PyConvResNet-50 and PyConvHGResNet-50 vs ResNet-50 (224x224), the PyConvPH head
vs mmseg's PSP and ASPP heads (2048x60x60, the OS8 map of a 473x473 image), PyConvResNet3D-50
vs ResNet3D-50 (16x224x224) and a PyConv layer vs a 3x3 conv of equal FLOPs. Each reports the
median step time (inference, or forward + backward + SGD step), its spread (IQR), throughput
and, with ``--memory``, the peak memory of a step; ratios are ours / reference, each model in
its best memory format with ``--memory-format best``. ``--json`` is rewritten after every
case and setting, so a run stopped part-way keeps its results. ``--breakdown 2`` also times, for
inference, each module two levels down (``backbone.layer1``, ...): where the time goes.
``--malloc keep`` (default) first has glibc's malloc keep freed memory for reuse
(:func:`pyconv_mm.utils.allocator.keep_freed_memory`), as PyTorch's CPU launcher does by
preloading jemalloc or tcmalloc: with glibc's default settings the page faults of fresh memory
take up to a quarter of a CPU step, by the luck of the heap's layout rather than by the model.
"""
import argparse
import json
import os
import os.path as osp
import sys
import warnings
from typing import Callable, Optional

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)


def parse_args() -> argparse.Namespace:
    from pyconv_mm.benchmark import CASES
    from pyconv_mm.benchmark.runner import README_BLOCKS
    from pyconv_mm.ops.algorithms import ALGORITHMS
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--cases', nargs='+', default=['all'],
                        help=f'cases to run: all or some of {sorted(CASES)}')
    parser.add_argument('--configs', nargs='+', help='benchmark these configs instead (first '
                        'is "ours"); needs --shape')
    parser.add_argument('--shape', type=int, nargs='+', help='input shape without batch')
    parser.add_argument('--device', default='cpu', help='cpu or cuda')
    parser.add_argument('--precision', nargs='+', default=['fp32'],
                        choices=['fp32', 'bf16', 'fp16'], help='fp32 or AMP autocast dtype')
    parser.add_argument('--mode', nargs='+', default=['infer', 'train'],
                        choices=['infer', 'train'])
    parser.add_argument('--memory-format', default='best',
                        choices=['best', 'nchw', 'channels_last'])
    parser.add_argument('--batch', type=int, help='batch size (default: per case)')
    parser.add_argument('--warmup', type=int, default=5,
                        help='rounds of every model in turn before timing')
    parser.add_argument('--repeats', type=int, default=10)
    parser.add_argument('--threads', type=int, help='torch CPU threads')
    parser.add_argument('--fuse-bn', action='store_true',
                        help='inference: fold batch norms into the convolutions of every model '
                        '(the deployment form)')
    parser.add_argument('--compile', action='store_true',
                        help='torch.compile every model (inductor)')
    parser.add_argument('--freezing', action='store_true',
                        help='with --compile, inference: inductor treats the weights as '
                        'constants (folds batch norms, prepacks oneDNN weights) in both models')
    parser.add_argument('--pyconv-algorithm', default='auto',
                        choices=('auto', ) + ALGORITHMS,
                        help='how grouped PyConv levels run (native: stock grouped convs, as '
                        "the authors' code; direct: our CPU kernel where it applies; auto: the "
                        'fastest form, timed once)')
    parser.add_argument('--no-direct-kernel', action='store_true',
                        help='keep PyConvs on the stock forms (auto without our CPU kernel)')
    parser.add_argument('--no-fused-inference', action='store_true',
                        help="run the blocks' norms, ReLUs and adds as modules in inference "
                        '(pyconv_mm.ops.fused_inference off)')
    parser.add_argument('--no-packed-weights', action='store_true',
                        help="fold and reorder fused inference's weights on every call instead "
                        "of keeping them in oneDNN's layout (pyconv_mm.ops.packed_weights off)")
    parser.add_argument('--no-fused-norms', action='store_true',
                        help="run training batch norms, their ReLUs and adds as ATen's ops "
                        '(pyconv_mm.ops.batch_norm_act off)')
    parser.add_argument('--no-pointwise-grads', action='store_true',
                        help="compute training 1x1 convolutions' weight gradients by the "
                        'stock backward (pyconv_mm.ops.pointwise off)')
    parser.add_argument('--malloc', default='keep', choices=['keep', 'default'],
                        help="keep: glibc's malloc keeps freed memory for reuse (no page "
                        'faults on fresh memory every step); default: as the process started')
    parser.add_argument('--memory', action='store_true',
                        help='also measure the peak memory of training steps')
    parser.add_argument('--breakdown', type=int, default=0, metavar='DEPTH',
                        help='inference: also time every module DEPTH levels down (2: '
                        'backbone.conv1, backbone.layer1, ...) in each model')
    parser.add_argument('--json', help='write all results to this JSON file')
    parser.add_argument('--from-json', nargs='+', metavar='JSON',
                        help='measure nothing: merge the results of earlier runs (their --json '
                        'files, same machine) for --readme-block')
    parser.add_argument('--force', action='store_true', help='replace an existing --json')
    parser.add_argument('--readme-block', choices=sorted(README_BLOCKS),
                        help='rewrite this generated block of README.md: the ratio table '
                        '(benchmark) or the per-module times (breakdown)')
    return parser.parse_args()


def write_json(path: str, payload: dict) -> None:
    """Write ``payload`` to ``path`` atomically: an interrupted run leaves the previous
    complete file, never a half-written one."""
    tmp = f'{path}.tmp'
    with open(tmp, 'w') as f:
        json.dump(payload, f, indent=2)
    os.replace(tmp, path)


def main() -> None:
    args = parse_args()
    warnings.filterwarnings('ignore', category=UserWarning)
    from pyconv_mm.analysis.report import update_readme_block
    from pyconv_mm.benchmark.runner import README_BLOCKS, markdown, merge_runs
    if args.json and osp.exists(args.json) and not args.force:
        sys.exit(f'error: {args.json} exists; pass --force to replace it')
    if args.from_json:
        runs = []
        for path in args.from_json:
            with open(path) as f:
                runs.append(json.load(f))
            if runs[-1].get('complete') is False:
                print(f'warning: {path} is from a run stopped part-way '
                      f'(results so far: {len(runs[-1]["results"])})', file=sys.stderr)
        payload = merge_runs(runs)
    else:
        payload = measure(args, save=(lambda p: write_json(args.json, p)) if args.json else None)
    print('\n' + markdown(payload['results']))
    if args.json:
        write_json(args.json, dict(payload, complete=True))
    if args.readme_block:
        update_readme_block(osp.join(ROOT, 'README.md'), args.readme_block,
                            README_BLOCKS[args.readme_block](payload))


def measure(args: argparse.Namespace, save: Optional[Callable[[dict], None]] = None) -> dict:
    """Run the cases the arguments ask for; returns dict(machine, results). ``save`` receives
    the results so far (``complete=False``) after each case and setting, so a run stopped
    part-way (a time limit, Ctrl-C) keeps what it measured."""
    import torch

    from pyconv_mm.benchmark import CASES, Setting, config_case, machine
    from pyconv_mm.benchmark.runner import run_case, text
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.breakdown < 0:
        sys.exit(f'error: --breakdown {args.breakdown}: give a depth >= 1 (or 0 for none)')
    if args.breakdown and ('infer' not in args.mode or args.compile):
        sys.exit(f'error: --breakdown times eager inference; got --mode {" ".join(args.mode)}'
                 f'{" --compile" if args.compile else ""}: add infer to --mode, drop --compile')
    if args.freezing and not args.compile:
        sys.exit('error: --freezing is an option of --compile')
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        sys.exit('error: --device cuda but CUDA is not available')
    if args.configs:
        if not args.shape:
            sys.exit('error: --configs needs --shape (input shape without batch)')
        cases = {'configs': config_case(args.configs, args.shape)}
    else:
        names = sorted(CASES) if args.cases == ['all'] else args.cases
        unknown = set(names) - set(CASES)
        if unknown:
            sys.exit(f'error: unknown cases {sorted(unknown)}; valid: {sorted(CASES)} or all')
        cases = {name: CASES[name] for name in names}
    formats = ['nchw', 'channels_last'] if args.memory_format == 'best' else [args.memory_format]
    malloc = args.malloc
    if malloc == 'keep':
        from pyconv_mm.utils.allocator import keep_freed_memory
        if not keep_freed_memory():
            print('note: --malloc keep needs glibc; the allocator is left as it is',
                  file=sys.stderr)
            malloc = 'default'
    info = machine()
    print(f'machine: {info}', flush=True)
    results = []
    for name, (specs, default_batch) in cases.items():
        for precision in args.precision:
            for mode in args.mode:
                setting = Setting(device=args.device, precision=precision, mode=mode,
                                  batch=args.batch or default_batch or 8, warmup=args.warmup,
                                  repeats=args.repeats, fuse_bn=args.fuse_bn,
                                  compile=args.compile, freezing=args.freezing,
                                  pyconv_algorithm=args.pyconv_algorithm,
                                  direct_kernel=not args.no_direct_kernel,
                                  fused_inference=not args.no_fused_inference,
                                  packed_weights=not args.no_packed_weights,
                                  fused_norms=not args.no_fused_norms,
                                  pointwise_grads=not args.no_pointwise_grads, malloc=malloc)
                result = run_case(name, specs, setting, formats,
                                  memory=args.memory and mode == 'train',
                                  breakdown=args.breakdown)
                print(text(result), flush=True)
                results.append(result)
                if save is not None:
                    save(dict(machine=info, results=results, complete=False))
    return dict(machine=info, results=results)


if __name__ == '__main__':
    main()
