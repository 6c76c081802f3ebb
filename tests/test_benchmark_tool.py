"""tools/analysis/benchmark.py runs end to end and writes its JSON and README table (the
numbers themselves belong to benchmarks, not tests)."""
import json

from conftest import PYTHON, run, tool


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
    for result in results['results']:
        assert {r['memory_format'] for r in result['rows']} == {'nchw', 'channels_last'}
        (ratio, ) = result['ratios']
        assert ratio['throughput_ratio'] > 0 and ratio['latency_ratio'] > 0
        if result['setting']['mode'] == 'train':
            assert ratio['memory_ratio'] > 0


def test_benchmark_tool_rejects_bad_cases():
    proc = run([PYTHON, tool('analysis/benchmark.py'), '--cases', 'vgg'], check=False)
    assert proc.returncode != 0 and "unknown cases ['vgg']" in proc.stdout
