"""Timing and memory measurement of models, interleaved so that two models see the same
machine state (thermal, other load) in one run.

A *subject* is a named model with an input factory and a loss for training steps. Times are
medians over ``repeats`` with the interquartile range as spread; GPU timing synchronises
before reading the clock and turns on ``torch.backends.cudnn.benchmark``.
"""
import contextlib
import gc
import pickle
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import torch
from torch import nn

AMP_DTYPES = {'fp32': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}


@dataclass
class Subject:
    """A model to benchmark. ``inputs(batch)`` makes a batch; ``loss(output)`` a scalar."""
    name: str
    build: Callable[[], nn.Module]
    inputs: Callable[[int], torch.Tensor]
    loss: Callable[[torch.Tensor], torch.Tensor] = field(
        default=lambda out: sum(o.float().mean() for o in (out if isinstance(out, (list, tuple))
                                                           else [out])))


@dataclass
class Setting:
    device: str = 'cpu'
    precision: str = 'fp32'
    memory_format: str = 'nchw'
    mode: str = 'infer'
    batch: int = 8
    warmup: int = 5
    repeats: int = 10
    fuse_bn: bool = False  # inference: batch norms folded into the convolutions (deployment)
    compile: bool = False  # torch.compile (inductor) the model
    freezing: bool = False  # with compile, inference: weights as constants (inductor freezing)
    pyconv_algorithm: str = 'auto'  # how PyConv levels run (pyconv_mm.ops.set_algorithm)
    direct_kernel: bool = True  # whether auto may use our CPU kernel (pyconv_mm.ops.direct)
    # whether blocks may fuse their norms, ReLUs and adds in inference
    # (pyconv_mm.ops.fused_inference)
    fused_inference: bool = True
    # whether fused inference keeps folded weights in oneDNN's layout
    # (pyconv_mm.ops.packed_weights)
    packed_weights: bool = True
    # whether training batch norms run with their ReLU and add in our kernels
    # (pyconv_mm.ops.batch_norm_act)
    fused_norms: bool = True
    # whether training 1x1 convolutions' weight gradients run in our kernel
    # (pyconv_mm.ops.pointwise)
    pointwise_grads: bool = True
    # how the process's allocator was set before any case (a label; the tool sets it):
    # 'keep' (pyconv_mm.utils.allocator.keep_freed_memory) or 'default'
    malloc: str = 'default'


_FORMATS = {4: torch.channels_last, 5: torch.channels_last_3d}


def _to_format(tensor: torch.Tensor, memory_format: str) -> torch.Tensor:
    """A 4D (5D) tensor in channels_last (channels_last_3d) when asked; others unchanged."""
    if memory_format != 'channels_last' or tensor.dim() not in _FORMATS:
        return tensor
    return tensor.contiguous(memory_format=_FORMATS[tensor.dim()])


def _model_to_format(model: nn.Module, memory_format: str) -> nn.Module:
    """Every 4D/5D parameter and buffer in its channels-last format (``Module.to`` would apply
    one format to both ranks, which fails for a video model with 4D buffers)."""
    for tensor in list(model.parameters()) + list(model.buffers()):
        tensor.data = _to_format(tensor.data, memory_format)
    return model


def prepare(subject: Subject, setting: Setting):
    """Build the model and one input batch placed as the setting asks; returns a step fn."""
    from pyconv_mm.ops import (batch_norm_act, direct, fused_inference, packed_weights,
                               pointwise, set_algorithm)
    set_algorithm(setting.pyconv_algorithm)
    direct.set_enabled(setting.direct_kernel)
    fused_inference.set_enabled(setting.fused_inference)
    packed_weights.set_enabled(setting.packed_weights)
    batch_norm_act.set_enabled(setting.fused_norms)
    pointwise.set_enabled(setting.pointwise_grads)
    torch.manual_seed(0)
    model = subject.build().to(setting.device)
    x = subject.inputs(setting.batch).to(setting.device)
    model = _model_to_format(model, setting.memory_format)
    x = _to_format(x, setting.memory_format)
    amp_dtype = AMP_DTYPES[setting.precision]
    autocast = (lambda: torch.autocast(setting.device, dtype=amp_dtype)) if amp_dtype else \
        contextlib.nullcontext
    if setting.mode == 'infer':
        model.eval()
        if setting.fuse_bn:
            from pyconv_mm.ops import fuse_conv_bn
            model = fuse_conv_bn(model)
    else:
        model.train()
    if setting.compile:
        with torch.no_grad() if setting.mode == 'infer' else contextlib.nullcontext():
            model(x)  # one eager call: PyConv levels choose their forms, compiled graphs use them
        import torch._inductor.config as inductor_config
        inductor_config.freezing = setting.freezing  # applies to inference graphs
        model = torch.compile(model)
    if setting.mode == 'infer':

        def step():
            with torch.no_grad(), autocast():
                return model(x)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
        scaler = torch.amp.GradScaler(setting.device, enabled=setting.precision == 'fp16')

        def step():
            optimizer.zero_grad(set_to_none=True)
            with autocast():
                loss = subject.loss(model(x))
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            return loss

        step.optimizer = optimizer
    return model, step


def synchronize(device: str) -> None:
    """Wait for the device's queued work (CUDA); nothing on CPU."""
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def run_interleaved(steps: Dict[str, Callable[[], object]], device: str, warmup: int,
                    repeats: int, after_step: Optional[Callable[[str], None]] = None
                    ) -> Dict[str, List[float]]:
    """Seconds of each step, run in turn ``repeats`` times after ``warmup`` rounds of them
    in turn (PyConv's algorithm tuning happens in the first); ``after_step(name)`` runs after
    every timed step, outside the timing.

    The warm-up runs in turn as the timing does: the models share one heap, which settles to
    their interleaved pattern only after a few rounds. Measured on 2 cores (PyConvResNet-50
    and ResNet-50 training, batch 8, freed memory kept): the rounds after the first faulted
    23 000, 12 500, 9 200, 3 200 and then 0 pages a step in ours, 7 300, 1 500 and then 0 in
    ResNet-50's (about 2 us a fault)."""
    for _ in range(warmup):
        for step in steps.values():
            step()
    synchronize(device)
    times: Dict[str, List[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            synchronize(device)
            start = time.perf_counter()
            step()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
            if after_step is not None:
                after_step(name)
    return times


def time_interleaved(subjects: List[Subject], setting: Setting) -> Dict[str, dict]:
    """Median time per step of each subject, measured in turn ``repeats`` times."""
    if setting.device.startswith('cuda'):
        torch.backends.cudnn.benchmark = True
    steps = {s.name: prepare(s, setting)[1] for s in subjects}
    times = run_interleaved(steps, setting.device, setting.warmup, setting.repeats)
    results = {}
    for name, values in times.items():
        quartiles = statistics.quantiles(values, n=4) if len(values) > 1 else values * 3
        median = statistics.median(values)
        results[name] = dict(median_s=median, iqr_s=quartiles[2] - quartiles[0],
                             throughput=setting.batch / median, repeats=len(values),
                             times_s=values)
    return results


def _tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


def peak_memory_bytes(subject: Subject, setting: Setting) -> int:
    """Peak tensor memory of one step, with the model, its gradients and optimizer state.

    CUDA: ``torch.cuda.max_memory_allocated``. CPU: the tensors that live across steps
    (parameters, buffers, gradients, optimizer state) plus the highest point of the
    allocations made during a step, from the profiler's memory events.
    """
    cuda = setting.device.startswith('cuda')
    if cuda:  # what earlier subjects left allocated is not this subject's
        gc.collect()
        torch.cuda.synchronize()
        already_allocated = torch.cuda.memory_allocated()
    model, step = prepare(subject, setting)
    step()  # creates gradients and optimizer state
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - already_allocated
    resident = _tensor_bytes(list(model.parameters()) + list(model.buffers())
                             + [p.grad for p in model.parameters()])
    optimizer = getattr(step, 'optimizer', None)
    if optimizer is not None:
        resident += _tensor_bytes(v for state in optimizer.state.values()
                                  for v in state.values())
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    running = peak = 0  # allocations (+) and frees (-) of each op itself, in time order
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        running += event.self_cpu_memory_usage
        peak = max(peak, running)
    return resident + peak


def _amd_core(family: int, model: int) -> Optional[str]:
    """The core generation of an AMD CPU family/model (AMD's published numbering), or None."""
    if family == 26:
        return 'Zen 5'
    if family == 25:
        return 'Zen 4' if 0x10 <= model <= 0x1F or 0x60 <= model <= 0xAF else 'Zen 3'
    return None


def cpu_description(cpuinfo: str) -> str:
    """``model name x count`` from the text of /proc/cpuinfo; where a virtual machine shows
    a bare name without a model number ("AMD EPYC"), also the family and model, which tell
    the core generations apart."""
    fields = [dict(line.split(':', 1) for line in block.splitlines() if ':' in line)
              for block in cpuinfo.strip().split('\n\n')]
    fields = [{k.strip(): v.strip() for k, v in f.items()} for f in fields if 'model name' in
              {k.strip() for k in f}]
    if not fields:
        return platform.processor() or platform.machine()
    first = fields[0]
    name = first['model name']
    bare = not any(ch.isdigit() for ch in name)  # a real model name has a model number
    if bare and first.get('cpu family', '').isdigit() \
            and first.get('model', '').isdigit():
        family, model = int(first['cpu family']), int(first['model'])
        core = _amd_core(family, model) if 'AMD' in first.get('vendor_id', name) else None
        name += f' (family {family}, model {model}{", " + core if core else ""})'
    return f'{name} x {len(fields)}'


def machine() -> dict:
    """What the numbers were measured on."""
    info = dict(python=platform.python_version(), torch=torch.__version__,
                threads=torch.get_num_threads(), cpu=platform.processor() or platform.machine())
    try:
        with open('/proc/cpuinfo') as f:
            info['cpu'] = cpu_description(f.read())
    except OSError:
        pass
    if torch.cuda.is_available():
        info['gpu'] = torch.cuda.get_device_name()
        info['cuda'] = torch.version.cuda
        info['cudnn'] = torch.backends.cudnn.version()
    return info


_PEAK_MEMORY = """
import pickle, sys, warnings
warnings.filterwarnings('ignore')
import torch
from pyconv_mm.benchmark.cases import subject_from_spec
from pyconv_mm.benchmark.measure import Setting, peak_memory_bytes
from pyconv_mm.ops import algorithms
job = pickle.loads(sys.stdin.buffer.read())
torch.set_num_threads(job['threads'])
algorithms.reuse_choices(job['choices'])
print('PEAK_MEMORY_BYTES', peak_memory_bytes(subject_from_spec(job['spec']), Setting(**job['setting'])))
"""


def peak_memory_in_fresh_process(spec: dict, setting: Setting,
                                 choices: Optional[Dict[tuple, str]] = None) -> int:
    """:func:`peak_memory_bytes` of the subject of ``spec`` (see :mod:`.cases`), run in a
    fresh Python process. In a process that profiled other models before, the profiler
    counts frees of blocks it saw in earlier sessions: ResNet-50's training peak measured
    986.6 MiB alone every time, 963 to 984 MiB after other models. ``choices``
    (:func:`pyconv_mm.ops.algorithms.choices` of the timed run) makes PyConvs run the forms
    that were timed: the fresh process would otherwise time them again, and forms that run
    about as fast may hold different memory.
    """
    job = pickle.dumps(dict(spec=spec, setting=setting.__dict__, threads=torch.get_num_threads(),
                            choices=choices or {}))
    proc = subprocess.run([sys.executable, '-c', _PEAK_MEMORY], input=job,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stdout, stderr = proc.stdout.decode(errors='replace'), proc.stderr.decode(errors='replace')
    words = stdout.split()
    if proc.returncode != 0 or 'PEAK_MEMORY_BYTES' not in words:
        raise RuntimeError(f'measuring the peak memory of {spec["name"]} failed '
                           f'(exit {proc.returncode}):\n{stderr[-3000:]}')
    return int(words[words.index('PEAK_MEMORY_BYTES') + 1])
