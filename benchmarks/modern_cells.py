"""Training speed of rnnkit's parallel-in-time cells against torch.nn.LSTM/GRU and mingru-pytorch.

For batch B = 32, every T in ``--seq-lens`` and H in ``--hidden`` (input size = H), one process
measures in interleaved rounds the median tokens/s (B·T per step) of a training step: forward,
then backward of a fixed random linear loss L = Σ R ⊙ y (the input requires grad, as below an
embedding), gradients reset to None before each step. Implementations, one layer each:

* ``LSTM``, ``GRU``: ``torch.nn.LSTM`` / ``torch.nn.GRU`` (oneDNN's fused kernels on CPU);
* ``minGRU (pkg)``: the public ``mingru-pytorch`` package's ``minGRU(dim=H)`` (log-space scan,
  one bias-free projection) — skipped where it does not import;
* rnnkit's ``MinGRU``, ``MinLSTM``, ``QRNN`` (window 2), ``SRU``, ``MLSTM`` (4 heads, chunkwise)
  with their default path (``auto``: the native loop for minGRU/minLSTM/QRNN/SRU on CPU), and
  ``MinGRU (log)``, rnnkit's own log-space scan, for comparison with the package.

The table gives tokens/s and, per row, the ratio of each to the fused LSTM; the last column is
rnnkit's minGRU over the package's (the acceptance: ≥ 1 on every shape). On a shared machine
wall-clock samples only get slower; the medians of interleaved rounds keep the ratios fair.

Run ``python benchmarks/modern_cells.py`` (several minutes on 2 cores), ``--quick`` for a smoke
test.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's rnnkit

from rnnkit.modern import MLSTM, QRNN, SRU, MinGRU, MinLSTM
from rnnkit.runtime import retain_freed_memory

try:
    from minGRU_pytorch import minGRU as PackageMinGRU
except ImportError:  # pragma: no cover - the package is optional
    PackageMinGRU = None


def _implementations(H: int) -> dict[str, Callable[[], tuple[nn.Module, Callable]]]:
    def layer(cls, **kw):
        def make():
            module = cls(H, H, batch_first=True, **kw)
            return module, lambda x: module(x)[0]

        return make

    impls = {
        "LSTM": layer(nn.LSTM),
        "GRU": layer(nn.GRU),
        "MinGRU": layer(MinGRU),
        "MinGRU (log)": layer(MinGRU, path="log"),
        "MinLSTM": layer(MinLSTM),
        "QRNN": layer(QRNN, window=2),
        "SRU": layer(SRU),
        "MLSTM": layer(MLSTM, num_heads=4, chunk_size=64),
    }
    if PackageMinGRU is not None:

        def package():
            module = PackageMinGRU(H)
            return module, module

        impls["minGRU (pkg)"] = package
    return impls


def _train_step(module: nn.Module, run: Callable, x: torch.Tensor, weights: torch.Tensor) -> float:
    for p in module.parameters():
        p.grad = None
    x.grad = None
    start = time.perf_counter()
    y = run(x)
    (y * weights).sum().backward()
    return time.perf_counter() - start


def measure(
    B: int, T: int, H: int, repeats: int, names: list[str], warmup: int = 1
) -> dict[str, float]:
    """Median training tokens/s of every implementation at one shape (interleaved rounds)."""
    torch.manual_seed(0)
    impls = _implementations(H)
    built = {name: impls[name]() for name in names if name in impls}
    x = torch.randn(B, T, H, requires_grad=True)
    weights = torch.randn(B, T, H)
    times: dict[str, list[float]] = {name: [] for name in built}
    for _ in range(warmup):  # native build, allocator, caches
        for module, run in built.values():
            _train_step(module, run, x, weights)
    for _ in range(repeats):
        for name, (module, run) in built.items():
            times[name].append(_train_step(module, run, x, weights))
    return {name: B * T / statistics.median(ts) for name, ts in times.items()}


def _row(T: int, H: int, result: dict[str, float], names: list[str]) -> str:
    lstm = result.get("LSTM")
    cells = []
    for n in names:
        v = result.get(n)
        if v is None:
            cells.append("–")
        elif lstm and n != "LSTM":
            cells.append(f"{v:,.0f} ({v / lstm:.2f})")
        else:
            cells.append(f"{v:,.0f}")
    pkg, ours = result.get("minGRU (pkg)"), result.get("MinGRU")
    ratio = f"{ours / pkg:.2f}" if pkg and ours else "–"
    return f"| {T} | {H} | " + " | ".join(cells) + f" | {ratio} |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq-lens", type=int, nargs="+", default=[128, 512, 2048])
    parser.add_argument("--hidden", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per implementation")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    parser.add_argument("--only", nargs="+", help="run only these implementations")
    parser.add_argument("--quick", action="store_true", help="tiny shapes, one repeat")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.seq_lens, args.hidden, args.repeats, args.batch = [16], [32], 1, 4
    retain_freed_memory()
    names = list(_implementations(8))  # every implementation that imports
    if args.only:
        names = [n for n in names if n in args.only]
    print(
        f"\nTraining tokens/s (forward + backward), B={args.batch}, fp32, input size = H, "
        f"threads {torch.get_num_threads()}, median of {args.repeats}; (×LSTM) in brackets\n"
    )
    print("| T | H | " + " | ".join(names) + " | MinGRU / pkg |")
    print("|" + "---|" * (len(names) + 3), flush=True)
    for H in args.hidden:
        for T in args.seq_lens:
            result = measure(args.batch, T, H, args.repeats, names, args.warmup)
            print(_row(T, H, result, names), flush=True)  # row by row: long runs show progress
    return 0


if __name__ == "__main__":
    sys.exit(main())
