"""Where the inference time goes: the forward time of every submodule at one depth of the
module tree (e.g. depth 2 of a classifier: ``backbone.conv1``, ``backbone.layer1``, ...),
for our model and its references, measured interleaved like the step times.

Each module is timed between a forward pre-hook and a forward hook (synchronising first on
CUDA), so the times of one depth add up to the model's forward time, less what runs outside
those modules. Models whose modules share names (PyConvResNet and ResNet) line up row by row.
"""
import statistics
import time
from typing import Dict, List, Tuple

from torch import nn

from .measure import Setting, Subject, prepare, run_interleaved, synchronize


def modules_at_depth(model: nn.Module, depth: int) -> List[Tuple[str, nn.Module]]:
    """``(name, module)`` of the submodules ``depth`` levels below ``model``."""
    if depth < 1:
        raise ValueError(f'breakdown depth must be >= 1, got {depth}')
    return [(name, module) for name, module in model.named_modules()
            if name and name.count('.') + 1 == depth]


def _attach_timers(model: nn.Module, depth: int, device: str,
                   sink: Dict[str, List[float]]) -> list:
    handles = []
    for name, module in modules_at_depth(model, depth):
        starts: List[float] = []

        def pre(_module, _args, starts=starts):
            synchronize(device)
            starts.append(time.perf_counter())

        def post(_module, _args, _out, name=name, starts=starts):
            synchronize(device)
            sink.setdefault(name, []).append(time.perf_counter() - starts.pop())

        handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    return handles


def module_times(pairs: List[Tuple[Subject, Setting]], depth: int) -> Dict[str, Dict[str, float]]:
    """``{subject name: {module name: median forward ms per step}}`` in inference mode.

    ``pairs`` gives each subject with its setting, which may differ in memory format only (each
    model in its best one); the subjects run in turn, ``repeats`` times, after ``warmup``
    steps. A module called several times in a step (a shared activation) counts the sum.
    """
    setting = pairs[0][1]
    for _, other in pairs:
        if other.mode != 'infer' or other.compile:
            raise ValueError('the breakdown times eager inference; got mode='
                             f'{other.mode!r}, compile={other.compile}')
    steps, sinks, handles = {}, {}, []
    for subject, subject_setting in pairs:
        model, steps[subject.name] = prepare(subject, subject_setting)
        sinks[subject.name] = {}
        handles += _attach_timers(model, depth, setting.device, sinks[subject.name])
    per_step: Dict[str, Dict[str, List[float]]] = {name: {} for name in steps}

    def collect(name: str) -> None:
        for module, values in sinks[name].items():
            per_step[name].setdefault(module, []).append(sum(values))
        sinks[name].clear()

    try:
        run_interleaved(steps, setting.device, setting.warmup, 0)  # warm-up only
        for sink in sinks.values():
            sink.clear()
        run_interleaved(steps, setting.device, 0, setting.repeats, after_step=collect)
    finally:
        for handle in handles:
            handle.remove()
    return {name: {module: 1000 * statistics.median(values) for module, values in mods.items()}
            for name, mods in per_step.items()}


def breakdown_rows(times: Dict[str, Dict[str, float]], ours: str,
                   reference: str) -> List[dict]:
    """Rows ``dict(module, ours_ms, reference_ms)`` in the order the modules ran (ours first,
    then modules only the reference has); a module a model lacks has ``None``."""
    mine, theirs = times[ours], times[reference]
    names = list(mine) + [name for name in theirs if name not in mine]
    return [dict(module=name, ours_ms=mine.get(name), reference_ms=theirs.get(name))
            for name in names]


def breakdown_markdown(result: dict) -> str:
    """The breakdown tables of one benchmark result (one per reference)."""
    blocks = []
    for table in result.get('breakdown', []):
        lines = [f'{result["case"]}: {table["ours"]} ({table["ours_format"]}) vs '
                 f'{table["reference"]} ({table["reference_format"]}), forward ms per batch of '
                 f'{result["setting"]["batch"]}, modules at depth {table["depth"]}', '',
                 '| module | ours (ms) | reference (ms) | ours - reference (ms) |',
                 '|---|---|---|---|']
        total_ours = total_ref = 0.0
        for row in table['rows']:
            ours, ref = row['ours_ms'], row['reference_ms']
            total_ours += ours or 0.0
            total_ref += ref or 0.0
            diff = f'{ours - ref:+.1f}' if ours is not None and ref is not None else '-'
            lines.append(f'| {row["module"]} | {_ms(ours)} | {_ms(ref)} | {diff} |')
        lines.append(f'| **sum** | **{total_ours:.1f}** | **{total_ref:.1f}** | '
                     f'**{total_ours - total_ref:+.1f}** |')
        blocks.append('\n'.join(lines))
    return '\n\n'.join(blocks)


def _ms(value) -> str:
    return '-' if value is None else f'{value:.1f}'
