"""tools/analysis/benchmark.py runs end to end and writes its JSON and README table (the
numbers themselves belong to benchmarks, not tests)."""
import json

import pytest

from conftest import PYTHON, needs_direct_kernel, run, tool


def test_benchmark_tool_runs_and_reports(tmp_path):
    out = tmp_path / 'bench.json'
    proc = run([PYTHON, tool('analysis/benchmark.py'), '--cases', 'pyconv_layer', '--batch', '1',
                '--warmup', '1', '--repeats', '2', '--mode', 'infer', 'train', '--memory',
                '--json', str(out)])
    assert 'PyConv4 64->64 vs Conv3x3 64->47' in proc.stdout
    results = json.loads(out.read_text())
    assert results['machine']['torch']
    modes = {r['setting']['mode'] for r in results['results']}
    assert modes == {'infer', 'train'}
    # by default the tool has glibc keep freed memory (no page faults per step) and says so
    assert {r['setting']['malloc'] for r in results['results']} == {'keep'}
    for result in results['results']:
        assert {r['memory_format'] for r in result['rows']} == {'nchw', 'channels_last'}
        (ratio, ) = result['ratios']
        assert ratio['throughput_ratio'] > 0 and ratio['latency_ratio'] > 0
        if result['setting']['mode'] == 'train':
            assert ratio['memory_ratio'] > 0


@pytest.mark.skipif(not __import__('torch').cuda.is_available(), reason='needs a CUDA GPU')
def test_benchmark_tool_runs_on_cuda_with_amp(tmp_path):
    """The GPU path: CUDA timing and max_memory_allocated, bf16 autocast, both formats."""
    out = tmp_path / 'bench.json'
    run([PYTHON, tool('analysis/benchmark.py'), '--cases', 'pyconv_layer', '--device', 'cuda',
         '--precision', 'bf16', '--batch', '2', '--warmup', '1', '--repeats', '2', '--mode',
         'infer', 'train', '--memory', '--json', str(out)])
    results = json.loads(out.read_text())
    assert results['machine']['gpu']
    for result in results['results']:
        assert result['setting']['device'] == 'cuda'
        assert result['setting']['precision'] == 'bf16'
        (ratio, ) = result['ratios']
        assert ratio['throughput_ratio'] > 0
        if result['setting']['mode'] == 'train':
            assert ratio['memory_ratio'] > 0


def test_benchmark_tool_can_leave_the_allocator_as_it_is(tmp_path):
    out = tmp_path / 'bench.json'
    proc = run([PYTHON, tool('analysis/benchmark.py'), '--cases', 'pyconv_layer', '--batch', '1',
                '--warmup', '1', '--repeats', '2', '--mode', 'infer', '--malloc', 'default',
                '--json', str(out)])
    (result, ) = json.loads(out.read_text())['results']
    assert result['setting']['malloc'] == 'default'
    assert "infer (glibc's default malloc)" in proc.stdout


@pytest.mark.parametrize('flag, key, label, module', [
    ('--no-fused-norms', 'fused_norms', 'no fused norms', 'batch_norm_act'),
    ('--no-pointwise-grads', 'pointwise_grads', 'no pointwise grads', 'pointwise'),
])
def test_benchmark_tool_can_turn_off_training_kernels(tmp_path, flag, key, label, module):
    """``--no-fused-norms`` (training norms as ATen's ops) and ``--no-pointwise-grads`` (1x1
    weight gradients by the stock backward): recorded with the result and in its label, and
    applied."""
    out = tmp_path / 'bench.json'
    proc = run([PYTHON, tool('analysis/benchmark.py'), '--cases', 'pyconv_layer', '--batch', '1',
                '--warmup', '1', '--repeats', '2', '--mode', 'train', flag,
                '--json', str(out)])
    (result, ) = json.loads(out.read_text())['results']
    assert result['setting'][key] is False
    assert f'train ({label})' in proc.stdout
    import importlib
    from pyconv_mm.benchmark.cases import CASES, subject_from_spec
    from pyconv_mm.benchmark.measure import Setting, prepare
    switch = importlib.import_module(f'pyconv_mm.ops.{module}')
    subject = subject_from_spec(CASES['pyconv_layer'][0][0])
    try:
        prepare(subject, Setting(mode='train', batch=1, **{key: False}))
        assert not switch.enabled()
    finally:
        switch.set_enabled(True)


def test_benchmark_tool_keeps_an_existing_json(tmp_path):
    out = tmp_path / 'bench.json'
    out.write_text('{"kept": true}')
    proc = run([PYTHON, tool('analysis/benchmark.py'), '--cases', 'pyconv_layer', '--json',
                str(out)], check=False)
    assert proc.returncode != 0 and 'exists; pass --force' in proc.stdout
    assert json.loads(out.read_text()) == {'kept': True}


@pytest.mark.parametrize('block,folder', [('benchmark', 'benchmarks'),
                                          ('benchmark-cuda', 'benchmarks/cuda'),
                                          ('benchmark-zen5', 'benchmarks/zen5'),
                                          ('breakdown', 'benchmarks/breakdown')])
def test_readme_benchmark_blocks_are_generated_from_the_committed_runs(block, folder):
    """The README's performance tables are the tool's rendering of the JSON runs kept in the
    repository (benchmarks/*.json: CPU ratios; benchmarks/zen5/*.json: CPU ratios on a
    second machine; benchmarks/cuda/*.json: GPU ratios; benchmarks/breakdown/*.json:
    per-module times)."""
    import glob
    import os.path as osp

    from conftest import ROOT

    from pyconv_mm.analysis.report import read_block
    from pyconv_mm.benchmark.runner import README_BLOCKS, merge_runs
    paths = sorted(glob.glob(osp.join(ROOT, folder, '*.json')))
    assert paths, f'no benchmark runs committed in {folder}/'
    runs = [json.loads(open(p).read()) for p in paths]
    with open(osp.join(ROOT, 'README.md')) as f:
        assert read_block(f.read(), block) == README_BLOCKS[block](merge_runs(runs))


def test_benchmark_tool_rejects_bad_cases():
    proc = run([PYTHON, tool('analysis/benchmark.py'), '--cases', 'vgg'], check=False)
    assert proc.returncode != 0 and "unknown cases ['vgg']" in proc.stdout


@pytest.mark.parametrize('config', ['configs/demo/pyconvresnet_demo_cls.py',
                                    'mmpretrain::resnet/resnet18_8xb32_in1k.py'])
def test_fuse_bn_keeps_the_function_of_whole_models(config):
    """--fuse-bn benchmarks the deployment form of each model: the same function, no BN."""
    import torch

    from pyconv_mm.benchmark import Setting
    from pyconv_mm.benchmark.cases import subject_from_spec
    from pyconv_mm.benchmark.measure import prepare
    from pyconv_mm.ops import fuse_conv_bn
    subject = subject_from_spec(dict(kind='config', name='m', config=config, shape=[3, 64, 64]))
    model = subject.build().eval()
    generator = torch.Generator().manual_seed(0)
    for norm in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        for tensor, low in ((norm.weight, 0.5), (norm.bias, -0.5), (norm.running_mean, -0.5),
                            (norm.running_var, 0.5)):
            tensor.data.copy_(low + torch.rand(tensor.shape, generator=generator))
    x = subject.inputs(2)
    with torch.no_grad():
        expected = model(x)
        fused = fuse_conv_bn(model)
        torch.testing.assert_close(fused(x), expected, rtol=1e-4, atol=1e-4)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    deployed, _ = prepare(subject, Setting(batch=2, fuse_bn=True))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in deployed.modules())


def test_benchmark_breakdown_times_each_stage_of_both_models(tmp_path):
    out = tmp_path / 'bench.json'
    proc = run([PYTHON, tool('analysis/benchmark.py'), '--configs',
                'configs/demo/pyconvresnet_demo_cls.py',
                'mmpretrain::resnet/resnet18_8xb32_in1k.py',
                '--shape', '3', '32', '32', '--mode', 'infer', '--batch', '1', '--warmup', '1',
                '--repeats', '2', '--memory-format', 'nchw', '--breakdown', '2', '--json',
                str(out)])
    assert '| backbone.layer1 |' in proc.stdout
    (result, ) = json.loads(out.read_text())['results']
    (table, ) = result['breakdown']
    rows = {row['module']: row for row in table['rows']}
    for stage in ('backbone.layer1', 'backbone.layer4', 'head.fc'):
        assert rows[stage]['ours_ms'] > 0 and rows[stage]['reference_ms'] > 0
    assert rows['backbone.maxpool']['ours_ms'] is None  # PyConvResNet has no stem max-pool
    assert rows['backbone.maxpool']['reference_ms'] > 0


def test_benchmark_breakdown_rejects_bad_requests():
    proc = run([PYTHON, tool('analysis/benchmark.py'), '--cases', 'pyconv_layer',
                '--breakdown', '2', '--mode', 'train'], check=False)
    assert proc.returncode != 0 and 'times eager inference; got --mode train' in proc.stdout
    from torch import nn

    from pyconv_mm.benchmark.breakdown import modules_at_depth
    with pytest.raises(ValueError, match='breakdown depth must be >= 1, got 0'):
        modules_at_depth(nn.Linear(1, 1), 0)



@pytest.mark.parametrize('number,text', [(91900, '9.19.0'), (90100, '9.1.0'), (8907, '8.9.7')])
def test_cudnn_version_reads_as_text(number, text):
    from pyconv_mm.benchmark.runner import cudnn_version
    assert cudnn_version(number) == text


def test_benchmark_tool_keeps_the_results_of_a_run_stopped_part_way(tmp_path):
    """The JSON is rewritten after each case: stopping the run keeps what it measured."""
    import signal
    import subprocess
    import time

    from conftest import ROOT
    out = tmp_path / 'bench.json'
    # 100 repeats: milliseconds for the layer, tens of seconds for PyConvResNet-50, so the
    # run is still timing it when the signal comes. The tool gets Ctrl-C's default handling
    # even where this suite was started in the background (`cmd &` ignores SIGINT, and a
    # child inherits that: the tool then ran to the end).
    proc = subprocess.Popen([PYTHON, tool('analysis/benchmark.py'), '--cases', 'pyconv_layer',
                             'pyconvresnet50', '--batch', '1', '--warmup', '1', '--repeats', '100',
                             '--mode', 'infer', '--json', str(out)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.time() + 300
        while not out.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert out.exists(), 'no results were written while the run went on'
        assert proc.poll() is None, 'the run ended before it could be stopped'
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    results = json.loads(out.read_text())  # stopped while timing PyConvResNet-50
    assert results['complete'] is False
    assert [r['case'] for r in results['results']] == ['pyconv_layer']
    merged = run([PYTHON, tool('analysis/benchmark.py'), '--from-json', str(out)])
    assert 'stopped part-way (results so far: 1)' in merged.stdout
    assert 'PyConv4 64->64' in merged.stdout


def _layer_forms_chosen_here():
    """The PyConv4 layer case's specs, a training setting, and the forms ``auto`` chose for
    the layer in this process (with whatever earlier tests of the process chose)."""
    from pyconv_mm.benchmark import CASES
    from pyconv_mm.benchmark.cases import subject_from_spec
    from pyconv_mm.benchmark.measure import Setting, prepare
    from pyconv_mm.ops import algorithms
    specs, _ = CASES['pyconv_layer']
    setting = Setting(mode='train', batch=2, memory_format='channels_last')
    prepare(subject_from_spec(specs[0]), setting)[1]()  # auto chooses the PyConv's forms here
    return specs, setting, algorithms.choices()


def test_peak_memory_is_measured_alike_whatever_ran_before():
    """Each model's peak memory is measured in a fresh process that runs the PyConv forms
    chosen here: the same bytes every time, whichever models were profiled before in the
    tool's own process (without the choices, the fresh process times the forms again and
    may pick another one of about the same speed and different memory)."""
    from pyconv_mm.benchmark.cases import subject_from_spec
    from pyconv_mm.benchmark.measure import peak_memory_bytes, peak_memory_in_fresh_process
    specs, setting, chosen = _layer_forms_chosen_here()
    assert chosen
    first = [peak_memory_in_fresh_process(spec, setting, chosen) for spec in specs]
    for spec in specs:  # profile both models here first
        peak_memory_bytes(subject_from_spec(spec), setting)
    assert [peak_memory_in_fresh_process(spec, setting, chosen) for spec in specs] == first
    assert all(peak > 0 for peak in first)


@needs_direct_kernel
def test_peak_memory_runs_the_forms_it_is_given():
    """The fresh process of the memory measurement runs the PyConv forms it is handed: the
    PyConv4 layer's training step on the stock forms and with our kernel hold different
    memory."""
    from pyconv_mm.benchmark.measure import peak_memory_in_fresh_process
    (spec, _), setting, chosen = _layer_forms_chosen_here()
    kernel_or_stock = next(key for key in chosen if key[1] == 'direct'
                           and key[2] == (2, *spec['shape']) and key[6])  # this one, training
    peaks = {form: peak_memory_in_fresh_process(spec, setting, {**chosen, kernel_or_stock: form})
             for form in ('stock', 'direct')}
    assert peaks['stock'] != peaks['direct'], peaks


_CPUINFO_BLOCK = """processor\t: {i}
vendor_id\t: {vendor}
cpu family\t: {family}
model\t\t: {model}
model name\t: {name}
flags\t\t: fpu avx512f
"""


@pytest.mark.parametrize('vendor, family, model, name, text', [
    ('AuthenticAMD', 25, 17, 'AMD EPYC', 'AMD EPYC (family 25, model 17, Zen 4) x 2'),
    ('AuthenticAMD', 26, 2, 'AMD EPYC', 'AMD EPYC (family 26, model 2, Zen 5) x 2'),
    ('AuthenticAMD', 25, 1, 'AMD EPYC', 'AMD EPYC (family 25, model 1, Zen 3) x 2'),
    ('GenuineIntel', 6, 143, 'Intel(R) Xeon(R) Processor',
     'Intel(R) Xeon(R) Processor (family 6, model 143) x 2'),
    ('GenuineIntel', 6, 85, 'Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz',
     'Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz x 2'),
])
def test_machine_tells_virtual_cpus_of_different_generations_apart(vendor, family, model, name,
                                                                   text):
    """A virtual machine's bare "AMD EPYC" gets its family and model (runs on a Zen 4 and a
    Zen 5 must not merge into one table); a full model name stays as it is."""
    from pyconv_mm.benchmark.measure import cpu_description
    cpuinfo = '\n'.join(_CPUINFO_BLOCK.format(i=i, vendor=vendor, family=family, model=model,
                                              name=name) for i in range(2))
    assert cpu_description(cpuinfo) == text


def test_paired_ratios_come_from_steps_run_one_after_the_other():
    """The spread of a run's ratio: the quartiles of reference / ours over the pairs of steps
    of one interleaved run; none for models timed in different memory formats (not paired)."""
    from pyconv_mm.benchmark.runner import markdown, paired_ratio_quartiles
    ours = dict(memory_format='channels_last', times_s=[1.0, 1.0, 2.0, 1.0, 1.0])
    ref = dict(memory_format='channels_last', times_s=[1.1, 0.9, 2.4, 1.0, 1.3])
    q1, q3 = paired_ratio_quartiles(ours, ref)  # ratios 1.1, 0.9, 1.2, 1.0, 1.3
    assert (round(q1, 3), round(q3, 3)) == (0.95, 1.25)
    assert paired_ratio_quartiles(ours, dict(ref, memory_format='nchw')) is None
    assert paired_ratio_quartiles(ours, dict(ref, times_s=[1.0])) is None
    setting = dict(mode='infer', precision='fp32', batch=8, device='cpu', malloc='keep')
    ratio = dict(ours='A', reference='B', ours_format='nchw', reference_format='nchw',
                 throughput_ratio=1.1, latency_ratio=0.91)
    rows = markdown([dict(case='c', setting=setting, ratios=[
        dict(ratio, paired_throughput_ratio_q1=q1, paired_throughput_ratio_q3=q3), ratio])])
    assert '| **1.10x** | 0.95-1.25 | 0.91x |' in rows and '| **1.10x** | - | 0.91x |' in rows
