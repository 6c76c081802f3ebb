"""Benchmarks of PyConv models against their baselines (tools/analysis/benchmark.py)."""
from .cases import CASES, config_case, subject_from_spec
from .measure import Setting, Subject, machine, peak_memory_bytes, time_interleaved

__all__ = ['CASES', 'config_case', 'subject_from_spec', 'Setting', 'Subject', 'machine',
           'peak_memory_bytes', 'time_interleaved']
