"""rnnkit.runtime: the malloc thresholds take effect (checked in fresh processes)."""

import subprocess
import sys

import pytest

# A training step in miniature, ten times: allocate and touch four 24 MiB buffers, free them all;
# print the minor page faults of the last nine rounds.
PROBE = """
import resource, sys
from rnnkit.runtime import retain_freed_memory
applied = retain_freed_memory() if sys.argv[1] == "tuned" else False
def round_trip():
    bufs = [bytearray(24 << 20) for _ in range(4)]
    for b in bufs:
        b[:: 4096] = b"x" * len(b[:: 4096])
    del bufs
round_trip()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(9):
    round_trip()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode, env=None):
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True, env=env
    ).stdout.split()
    return out[0] == "True", int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc only")
def test_retained_memory_is_reused_without_page_faults():
    applied, tuned = _faults("tuned")
    if not applied:
        pytest.skip("not glibc: nothing to tune")
    _, default = _faults("default")
    # 4 × 24 MiB = 24,576 pages a round: glibc's defaults give most of them back to the system and
    # fault them in again every round; retained memory is reused
    assert default > 9 * 10_000
    assert tuned < 9 * 1_000


def test_opt_out_by_environment(monkeypatch):
    import os

    env = dict(os.environ, RNNKIT_MALLOC_TUNING="0")
    applied, _ = _faults("tuned", env)
    assert not applied
