"""pyconv_mm.utils.allocator: with glibc keeping freed memory, repeated CPU steps reuse it
instead of faulting in fresh pages (each check runs in its own process: the setting is
process-wide)."""
import platform

import pytest

from conftest import run_python

STEPS = """
import resource, sys
import torch
from pyconv_mm.utils.allocator import keep_freed_memory
print('applied', keep_freed_memory())
torch.manual_seed(0)
net = torch.nn.Sequential(*[m for _ in range(3) for m in (
    torch.nn.Conv2d(32, 32, 3, padding=1), torch.nn.BatchNorm2d(32), torch.nn.ReLU())]).eval()
x = torch.randn(4, 32, 112, 112)  # 6 MiB feature maps
with torch.no_grad():
    for _ in range(3):
        net(x)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        net(x)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
pages = 10 * 9 * x.numel() * x.element_size() // 4096  # conv, BN and ReLU outputs written
print('faults', faults, 'pages', pages)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != 'glibc', reason='mallopt is glibc only')
def test_keep_freed_memory_lets_repeated_steps_reuse_their_memory():
    out = run_python(STEPS).stdout.split()
    assert out[out.index('applied') + 1] == 'True'
    faults, pages = int(out[out.index('faults') + 1]), int(out[out.index('pages') + 1])
    # kept, the memory of the warm-up steps is reused: 0-2% of these pages faulted in where
    # this was written, against 84% with glibc's defaults (given back and faulted in again)
    assert faults < 0.1 * pages, (faults, pages)
