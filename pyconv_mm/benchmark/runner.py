"""One benchmark case: time all subjects (in every memory format asked), pick each one's best
format, and express ours against each reference as ratios."""
import statistics
from dataclasses import replace
from typing import Dict, List, Optional, Tuple

from pyconv_mm.ops import algorithms

from .breakdown import breakdown_markdown, breakdown_rows, module_times
from .cases import subject_from_spec
from .measure import Setting, peak_memory_in_fresh_process, time_interleaved


def paired_ratio_quartiles(ours: dict, reference: dict) -> Optional[Tuple[float, float]]:
    """Quartiles (Q1, Q3) of the throughput ratio of each pair of steps ``reference time /
    our time`` that ran one after the other (the same repeat of one interleaved run, i.e. the
    same memory format), or None when the two were not timed in pairs. Their spread says how
    far one run's ratio can be trusted on a noisy machine."""
    if ours['memory_format'] != reference['memory_format'] or 'times_s' not in ours \
            or 'times_s' not in reference or len(ours['times_s']) != len(reference['times_s']) \
            or len(ours['times_s']) < 2:
        return None
    ratios = [r / o for o, r in zip(ours['times_s'], reference['times_s'])]
    quartiles = statistics.quantiles(ratios, n=4)
    return quartiles[0], quartiles[2]


def run_case(name: str, specs: List[dict], setting: Setting, formats: List[str],
             memory: bool = False, breakdown: int = 0) -> dict:
    """Returns dict(case, setting, rows, ratios); rows hold every (subject, format) timing.

    ``breakdown=d`` (eager inference only) adds the forward time of every module ``d`` levels
    down, for each model in its best format (see :mod:`pyconv_mm.benchmark.breakdown`).
    """
    subjects = {}
    for spec in specs:
        for fmt in formats:
            subjects[(spec['name'], fmt)] = subject_from_spec(dict(spec,
                                                                   name=f'{spec["name"]}|{fmt}'))
    timings: Dict[str, dict] = {}
    # one interleaved run per memory format (a model and its input share one format)
    for fmt in formats:
        batch = [s for (n, f), s in subjects.items() if f == fmt]
        timings.update(time_interleaved(batch, replace(setting, memory_format=fmt)))
    rows, best = [], {}
    for spec in specs:
        for fmt in formats:
            t = timings[f'{spec["name"]}|{fmt}']
            rows.append(dict(subject=spec['name'], memory_format=fmt, **t))
        best[spec['name']] = min((r for r in rows if r['subject'] == spec['name']),
                                 key=lambda r: r['median_s'])
    if memory:
        for spec in specs:
            row = best[spec['name']]
            row['peak_memory_bytes'] = peak_memory_in_fresh_process(
                spec, replace(setting, memory_format=row['memory_format']),
                choices=algorithms.choices())  # the PyConv forms that were timed
    ours = best[specs[0]['name']]
    ratios = []
    for spec in specs[1:]:
        ref = best[spec['name']]
        ratio = dict(ours=specs[0]['name'], reference=spec['name'],
                     ours_format=ours['memory_format'], reference_format=ref['memory_format'],
                     throughput_ratio=ours['throughput'] / ref['throughput'],
                     latency_ratio=ours['median_s'] / ref['median_s'])
        pairs = paired_ratio_quartiles(ours, ref)
        if pairs is not None:
            ratio['paired_throughput_ratio_q1'], ratio['paired_throughput_ratio_q3'] = pairs
        if memory:
            ratio['memory_ratio'] = ours['peak_memory_bytes'] / ref['peak_memory_bytes']
        ratios.append(ratio)
    result = dict(case=name, setting=setting.__dict__, formats=formats, rows=rows, ratios=ratios)
    if breakdown and setting.mode == 'infer' and not setting.compile:
        pairs = [(subject_from_spec(spec),
                  replace(setting, memory_format=best[spec['name']]['memory_format']))
                 for spec in specs]
        times = module_times(pairs, breakdown)
        result['breakdown'] = [
            dict(ours=r['ours'], reference=r['reference'], ours_format=r['ours_format'],
                 reference_format=r['reference_format'], depth=breakdown,
                 rows=breakdown_rows(times, r['ours'], r['reference'])) for r in ratios]
    return result


def mode_label(setting: dict) -> str:
    """``infer``/``train``, with the model form when not the plain eager one."""
    forms = (['BN folded'] if setting.get('fuse_bn') and setting['mode'] == 'infer' else []) \
        + (['torch.compile' + (', frozen weights' if setting.get('freezing') else '')]
           if setting.get('compile') else []) \
        + ([f'PyConv {setting["pyconv_algorithm"]}']
           if setting.get('pyconv_algorithm', 'auto') != 'auto' else []) \
        + (['no direct kernel'] if not setting.get('direct_kernel', True) else []) \
        + (['no fused inference'] if setting['mode'] == 'infer'
           and not setting.get('fused_inference', True) else []) \
        + (['no packed weights'] if setting['mode'] == 'infer'
           and not setting.get('packed_weights', True) else []) \
        + (['no fused norms'] if setting['mode'] == 'train'
           and not setting.get('fused_norms', True) else []) \
        + (['no pointwise grads'] if setting['mode'] == 'train'
           and not setting.get('pointwise_grads', True) else []) \
        + (["glibc's default malloc"] if setting.get('device') == 'cpu'
           and setting.get('malloc', 'default') == 'default' else [])
    return setting['mode'] + (f' ({", ".join(forms)})' if forms else '')


def markdown(results: List[dict]) -> str:
    """The README performance table."""
    lines = ['| case | mode | precision | batch | ours (format) | reference (format) | '
             'throughput ratio | pairs Q1-Q3 | latency ratio | peak memory ratio |',
             '|---|---|---|---|---|---|---|---|---|---|']
    for res in results:
        s = res['setting']
        for r in res['ratios']:
            memory = f'{r["memory_ratio"]:.2f}x' if 'memory_ratio' in r else '-'
            pairs = (f'{r["paired_throughput_ratio_q1"]:.2f}-{r["paired_throughput_ratio_q3"]:.2f}'
                     if 'paired_throughput_ratio_q1' in r else '-')
            lines.append(
                f'| {res["case"]} | {mode_label(s)} | {s["precision"]} | {s["batch"]} | '
                f'{r["ours"]} ({r["ours_format"]}) | {r["reference"]} ({r["reference_format"]}) '
                f'| **{r["throughput_ratio"]:.2f}x** | {pairs} | {r["latency_ratio"]:.2f}x '
                f'| {memory} |')
    return '\n'.join(lines)


def merge_runs(runs: List[dict]) -> dict:
    """One payload ``dict(machine, results)`` from the JSON of several runs of the tool, which
    must come from the same machine (CPU or GPU model, torch version, threads)."""
    if not runs:
        raise ValueError('no benchmark runs to merge')
    keys = ('cpu', 'gpu', 'torch', 'threads')
    first = {k: runs[0]['machine'].get(k) for k in keys}
    for run in runs[1:]:
        other = {k: run['machine'].get(k) for k in keys}
        if other != first:
            raise ValueError(f'benchmark runs from different machines: {first} vs {other}')
    return dict(machine=runs[0]['machine'], results=[r for run in runs for r in run['results']])


def cudnn_version(number: int) -> str:
    """``torch.backends.cudnn.version()`` as text: 91900 -> '9.19.0', 8907 -> '8.9.7'."""
    major_unit = 10000 if number >= 90000 else 1000
    return f'{number // major_unit}.{number % major_unit // 100}.{number % 100}'


def _measured_on(info: dict) -> str:
    where = info['cpu']
    if 'gpu' in info:
        cudnn = f', cuDNN {cudnn_version(info["cudnn"])}' if info.get('cudnn') else ''
        where += f', {info["gpu"]} (CUDA {info.get("cuda")}{cudnn})'
    return f'Measured on {where}, torch {info["torch"]}, {info["threads"]} threads.'


def readme_block(payload: dict) -> str:
    """The README performance block: the ratio table and the machine it was measured on."""
    return markdown(payload['results']) + '\n\n' + _measured_on(payload['machine'])


def breakdown_block(payload: dict) -> str:
    """The README block of the per-module breakdowns in ``payload`` and their machine."""
    tables = [breakdown_markdown(r) for r in payload['results'] if r.get('breakdown')]
    if not tables:
        raise ValueError('no breakdown in these benchmark runs: measure with --breakdown DEPTH')
    return '\n\n'.join(tables) + '\n\n' + _measured_on(payload['machine'])


#: README block name -> how a benchmark payload renders into it (``benchmark-cuda``: the
#: ratio table of GPU runs, kept apart from the CPU runs in ``benchmarks/cuda``;
#: ``benchmark-zen5``: CPU runs on a second machine, in ``benchmarks/zen5``).
README_BLOCKS = {'benchmark': readme_block, 'benchmark-cuda': readme_block,
                 'benchmark-zen5': readme_block, 'breakdown': breakdown_block}


def text(result: dict) -> str:
    s = result['setting']
    lines = [f'== {result["case"]}: {mode_label(s)}, {s["precision"]}, {s["device"]}, '
             f'batch {s["batch"]}, {s["repeats"]} repeats']
    for r in result['rows']:
        memory = (f"  peak {r['peak_memory_bytes'] / 2**20:9.1f} MiB"
                  if 'peak_memory_bytes' in r else '')
        lines.append(f'  {r["subject"]:<22} {r["memory_format"]:<14} '
                     f'{1000 * r["median_s"]:9.2f} ms +- {1000 * r["iqr_s"] / 2:7.2f} '
                     f'{r["throughput"]:9.2f} /s{memory}')
    for r in result['ratios']:
        extra = f', memory {r["memory_ratio"]:.2f}x' if 'memory_ratio' in r else ''
        pairs = (f' (pairs of steps: {r["paired_throughput_ratio_q1"]:.3f}x to '
                 f'{r["paired_throughput_ratio_q3"]:.3f}x, Q1-Q3)'
                 if 'paired_throughput_ratio_q1' in r else '')
        lines.append(f'  -> {r["ours"]} vs {r["reference"]}: throughput '
                     f'{r["throughput_ratio"]:.3f}x{pairs}, latency {r["latency_ratio"]:.3f}x'
                     f'{extra}')
    if result.get('breakdown'):
        lines += ['', breakdown_markdown(result)]
    return '\n'.join(lines)
