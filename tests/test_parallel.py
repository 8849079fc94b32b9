"""parallel.bound_memory: large buffers go back to the OS after use, so memory does not creep with the AOI."""

import subprocess
import sys

import pytest

PROBE = """
import sys
import numpy as np
if sys.argv[1] == "bounded":
    from pimc_ray.parallel import bound_memory
    bound_memory(64)

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

big = np.ones(8 << 20, np.uint8); del big       # freed: glibc's default raises its mmap threshold to 8 MB
before = rss_mb()
for size in (6, 5, 4, 7, 3):                     # then buffers of other sizes, as encoder batches have
    buf = np.ones(size << 20, np.uint8)
    small = [np.ones(64) for _ in range(200)]    # small objects that outlive the buffer pin the heap top
    del buf
print(rss_mb() - before)
"""


def _retained_mb(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator and /proc are Linux's")
def test_large_buffers_are_returned_to_the_os():
    default, bounded = _retained_mb("default"), _retained_mb("bounded")
    assert default > 2.5  # the probe reproduces the creep without the fix: the test can fail
    assert bounded < 1.0
