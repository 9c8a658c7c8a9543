"""The benchmark scripts run end to end on tiny shapes and print their tables."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_cells_benchmark_quick_prints_a_table():
    cmd = [sys.executable, str(ROOT / "benchmarks" / "cells.py"), "--quick"]
    cmd += ["--sizes", "16", "--seq-len", "8", "--repeats", "1"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "Training step" in out and "Inference" in out and "GEMM ceiling" in out
    header = next(line for line in out.splitlines() if line.startswith("config"))
    for column in ("rnnkit tok/s", "peer tok/s", "×peer", "naive tok/s"):
        assert column in header
    for name in ("RNN relu", "LSTM layer_norm", "LSTM peephole", "GRU reset_after=False"):
        assert any(line.startswith(name) for line in out.splitlines()), name
