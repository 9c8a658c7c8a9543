"""Two CPU processes under torchrun (gloo on loopback) train exactly what one process trains."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available(), reason="torch.distributed is not available"
)

TEXT = ("O Romeo, Romeo! wherefore art thou Romeo?\nDeny thy father and refuse thy name;\n") * 30
ARGS = [
    "--max-steps",
    "6",
    "--eval-every",
    "3",
    "--batch-size",
    "4",
    "--bptt",
    "16",
    "--hidden-size",
    "16",
    "--embed-size",
    "8",
    "--dropout",
    "0",
    "--threads",
    "1",
    "--no-progress",
]


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", RNNKIT_DIST_TIMEOUT="60")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def _torchrun(nproc: int, *argv: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "rnnkit",
        "-q",
        *argv,
    ]


@pytest.fixture()
def corpus(tmp_path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT)
    return path


def test_two_processes_equal_one_with_the_same_global_batch(tmp_path, corpus):
    single, double = tmp_path / "single", tmp_path / "double"
    subprocess.run(
        [sys.executable, "-m", "rnnkit", "-q", "train", "lm", "--data", str(corpus)]
        + ["--out", str(single), *ARGS],
        check=True,
        env=_env(),
        timeout=300,
        capture_output=True,
    )
    r = subprocess.run(
        _torchrun(2, "train", "lm", "--data", str(corpus), "--out", str(double), *ARGS),
        env=_env(),
        timeout=300,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = load_file(single / "model.safetensors"), load_file(double / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-5, msg=name)
    saved = torch.load(double / "trainer.pt", weights_only=True)
    assert saved["world_size"] == 2 and len(saved["rng"]) == 2 and len(saved["carried"]) == 2


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def test_a_killed_rank_ends_the_job_and_resume_continues_on_all_ranks(tmp_path, corpus):
    out = tmp_path / "run"
    argv = ["train", "lm", "--data", str(corpus), "--out", str(out), *ARGS, "--max-steps", "400"]
    proc = subprocess.Popen(
        _torchrun(2, *argv), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while not (out / "trainer.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (out / "trainer.pt").exists()
    workers = _children(proc.pid)
    assert len(workers) == 2
    started = time.monotonic()
    os.kill(workers[-1], signal.SIGKILL)  # rank 1 dies
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert time.monotonic() - started < 90  # no hang: the job ends well inside its timeout
    assert "exitcode" in err or "failed" in err.lower()
    step = torch.load(out / "trainer.pt", weights_only=True)["step"]
    assert step < 400
    target = str(step + 6)
    r = subprocess.run(
        _torchrun(2, "train", "lm", "--resume", str(out), "--max-steps", target),
        env=_env(),
        timeout=300,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert torch.load(out / "trainer.pt", weights_only=True)["step"] == step + 6
