"""Speed of rnnkit's recurrent layers against their ``torch.nn`` peers, as tables of ratios.

For every configuration (plain and custom cells) and hidden size H (input size = H), one process
measures, in interleaved rounds, the median (``--stat``) tokens/s (B·T per call) of

* a training step: forward, then backward of a fixed random linear loss L = Σ R ⊙ y (the input
  requires grad, as it would below an embedding), gradients reset to None before each step;
* inference: a forward pass under ``torch.no_grad()``;

for these implementations:

* ``rnnkit``: the layer as users get it; the ``path`` column says which: ``fused`` (torch's own
  kernel, the plain LSTM), the fast path — ``tiled`` where whole sequences run on rnnkit's C++
  tile GEMM (rnnkit/native: GRU, LSTM and Elman RNN), ``native`` where rnnkit's C++ loop calls
  oneDNN each step (the LSTM below 8 batch rows per thread, CPUs without AVX-512), ``fast`` for
  the TorchScript loops (``--no-native`` forces them) — or ``loop``, the reference loop;
* ``peer``: the ``torch.nn`` layer of the same family (``torch.nn.LSTM`` for the custom LSTMs,
  ``torch.nn.GRU`` for both GRU forms; oneDNN/native loop on CPU, cuDNN on CUDA);
* ``loop``: rnnkit's reference time loop (``allow_fast = allow_fused = False``), where the layer
  would otherwise take the fast path;
* ``naive``: a Python loop over the same rnnkit cell, ``cell(x[:, t], state)``, for the custom
  cells (what a user writes by hand).

GFLOP/s count only the matrix products, the same for every implementation: per token a forward
pass costs 2·G·(I + H) flops (G = gates × H), a training step three times that (forward, input and
state gradients, weight gradients). The practical ceiling is the GEMM rate of oneDNN measured in
the same run (``torch._C._nn.mkldnn_linear`` on ``to_mkldnn()`` tensors; ``torch.mm`` where oneDNN is
unavailable, and on CUDA), at the recurrence's step shape (B × H)·(H × 4H) and at the hoisted
sequence shape (T·B × H)·(H × 4H), best of the rounds; the ``%ceil`` columns divide by the larger
of the two.

The process keeps freed memory for reuse (:func:`rnnkit.runtime.retain_freed_memory`, as rnnkit's
trainer does), which spares every implementation the page faults of re-mapping its activations
each step; ``--no-malloc-tuning`` measures with glibc's defaults.

On a machine shared with other work, wall-clock samples only ever get slower, and with two
threads a descheduled thread stalls every parallel region: the targets line therefore also shows
the ratio of best-of times, and ``--threads 1 --timer cpu`` (process CPU time) gives a
contention-robust comparison of the work each implementation does.

Run ``python benchmarks/cells.py`` (a few minutes on 2 idle cores), ``--quick`` for a smoke test.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

import rnnkit
from rnnkit.cells import GRUCell, LSTMCell, RNNCell

try:  # the fast path arrived after the first version of this script
    from rnnkit import fast as _fast
except ImportError:  # pragma: no cover
    _fast = None


@dataclass
class Config:
    """One row family of the table: how to build rnnkit's layer, its peer and the naive cell."""

    name: str
    gates: int
    make_ours: Callable[[int], nn.Module]
    make_peer: Callable[[int], nn.Module]
    make_cell: Callable[[int], nn.Module] | None = None  # naive-loop column for custom cells


def _configs() -> list[Config]:
    def ours(cls, **kw):
        return lambda h: cls(h, h, batch_first=True, **kw)

    def peer(cls, **kw):
        return lambda h: cls(h, h, batch_first=True, **kw)

    return [
        Config("RNN tanh", 1, ours(rnnkit.RNN), peer(nn.RNN)),
        Config(
            "RNN relu",
            1,
            ours(rnnkit.RNN, nonlinearity="relu"),
            peer(nn.RNN, nonlinearity="relu"),
        ),
        Config("LSTM", 4, ours(rnnkit.LSTM), peer(nn.LSTM)),
        Config("GRU", 3, ours(rnnkit.GRU), peer(nn.GRU)),
        Config(
            "GRU reset_after=False",
            3,
            ours(rnnkit.GRU, reset_after=False),
            peer(nn.GRU),
            lambda h: GRUCell(h, h, reset_after=False),
        ),
        Config(
            "LSTM layer_norm",
            4,
            ours(rnnkit.LSTM, layer_norm=True),
            peer(nn.LSTM),
            lambda h: LSTMCell(h, h, layer_norm=True),
        ),
        Config(
            "LSTM peephole",
            4,
            ours(rnnkit.LSTM, peephole=True),
            peer(nn.LSTM),
            lambda h: LSTMCell(h, h, peephole=True),
        ),
    ]


# ---------------------------------------------------------------------------------------------
# What one implementation does per call
# ---------------------------------------------------------------------------------------------
def _layer_forward(layer: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda x: layer(x)[0]  # (B, T, H)


def _naive_forward(cell: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    def run(x: torch.Tensor) -> torch.Tensor:
        state = None
        outputs = []
        for t in range(x.shape[1]):
            h, state = cell(x[:, t], state)
            outputs.append(h)
        return torch.stack(outputs, 1)  # (B, T, H)

    return run


def _train_step(forward, module: nn.Module, x: torch.Tensor, weights: torch.Tensor):
    def step() -> None:
        for p in module.parameters():
            p.grad = None
        x.grad = None
        loss = (forward(x) * weights).sum()  # fixed random linear loss
        loss.backward()

    return step


def _inference(forward, x: torch.Tensor):
    def run() -> None:
        with torch.no_grad():
            forward(x)

    return run


def _path(layer: nn.Module, device: torch.device, batch: int) -> str:
    """Which of rnnkit's paths the layer takes for ``batch`` rows (see the module docstring):
    fused, tiled, native, fast or loop, as rnnkit.fast decides them."""
    if layer._fusable:
        return "fused"
    if _fast is None or not getattr(layer, "allow_fast", False):
        return "loop"
    if not _fast.layer_supported(layer):
        return "loop"
    probe = torch.empty(0, device=device)
    if not _fast._native_ok(probe):
        return "fast"
    cell = layer._cells[0]
    gru = isinstance(cell, GRUCell) and not cell.layer_norm
    rows = batch >= getattr(_fast, "_ROWS_PER_THREAD", 8) * torch.get_num_threads()
    rnn = isinstance(cell, RNNCell) and not cell.layer_norm and rows
    lstm = isinstance(cell, LSTMCell)
    if (
        getattr(_fast, "FUSED", False)
        and _fast._use_fused(probe)
        and (gru or rnn or (lstm and rows))
    ):
        return "tiled"
    return "native" if gru or lstm else "fast"


# ---------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


# Wall-clock by default; ``--timer cpu`` (process CPU time) is robust to other processes on a
# shared machine but only meaningful with one thread.
_CLOCK = time.perf_counter


def _time(fn: Callable[[], None], n: int, device: torch.device) -> float:
    _sync(device)
    start = _CLOCK()
    for _ in range(n):
        fn()
    _sync(device)
    return (_CLOCK() - start) / n


def _calls_per_sample(fn: Callable[[], None], min_time: float, device: torch.device) -> int:
    """Warm up, then pick how many calls make one timed sample last about ``min_time``."""
    fn()
    once = _time(fn, 1, device)
    return max(1, min(50, round(min_time / max(once, 1e-6))))


def measure(
    fns: dict[str, Callable[[], None]], repeats: int, min_time: float, device: torch.device
) -> dict[str, list[float]]:
    """Seconds per call of each function, one sample per interleaved round."""
    counts = {name: _calls_per_sample(fn, min_time, device) for name, fn in fns.items()}
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            samples[name].append(_time(fn, counts[name], device))
    return samples


def gemm_ceiling(
    batch: int, seq_len: int, hidden: int, device: torch.device, repeats: int, min_time: float
):
    """GEMM rates (GFLOP/s) at the step and sequence shapes of a 4-gate layer, and the method."""
    gates = 4 * hidden
    weight = torch.randn(gates, hidden, device=device)
    use_onednn = device.type == "cpu" and torch.backends.mkldnn.is_available()
    method = "torch.mm"
    if use_onednn:
        try:
            w = weight.to_mkldnn()
            torch._C._nn.mkldnn_linear(torch.randn(batch, hidden).to_mkldnn(), w, None)
            method = "oneDNN (torch._C._nn.mkldnn_linear on to_mkldnn() tensors)"
        except RuntimeError:
            use_onednn = False
    rates = []
    for rows in (batch, batch * seq_len):
        x = torch.randn(rows, hidden, device=device)
        if use_onednn:
            xm = x.to_mkldnn()
            fn = lambda xm=xm: torch._C._nn.mkldnn_linear(xm, w, None)  # noqa: E731
        else:
            wt = weight.t().contiguous()
            fn = lambda x=x, wt=wt: torch.mm(x, wt)  # noqa: E731
        seconds = min(measure({"gemm": fn}, repeats, min_time, device)["gemm"])  # best of
        rates.append(2 * rows * hidden * gates / seconds / 1e9)
    return rates[0], rates[1], method


# ---------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------
def _fmt(value: float | None, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "rate":
        return f"{value:,.0f}"
    if kind == "ratio":
        return f"{value:.2f}×"
    if kind == "pct":
        return f"{100 * value:.0f}%"
    return f"{value:.1f}"


def print_table(title: str, header: list[str], rows: list[list[str]], markdown: bool) -> None:
    print()
    print(f"### {title}" if markdown else title)
    if markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "|".join("---" if i < 3 else "---:" for i in range(len(header))) + "|")
        for row in rows:
            print("| " + " | ".join(row) + " |")
        return
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join(
        h.ljust(w) if i < 3 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths))
    )
    print(line)
    print("-" * len(line))
    for row in rows:
        print(
            "  ".join(
                c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))
            )
        )


# Acceptance of the "Fast custom cells" issue on CPU: (config, sizes or None for all, minimum
# training-step ratio rnnkit / torch.nn).
TARGETS = [
    ("LSTM layer_norm", (256, 512), 0.6),
    ("LSTM peephole", (256, 512), 0.6),
    ("GRU", None, 1.5),
    ("GRU reset_after=False", None, 1.5),
    ("RNN relu", None, 1.2),
    ("LSTM", None, 0.95),
]


def print_targets(results, stat: str) -> None:
    """One line per acceptance target: the training-step ratios measured, and met or not.

    Besides the ``stat`` ratio (of the per-implementation statistics) the ratio of best-of times
    is shown in brackets: on a shared machine other processes only ever add time.
    """
    print()
    print(f"Targets (training step, rnnkit / torch.nn; {stat} [best-of]):")
    for name, sizes, minimum in TARGETS:
        ratios = [
            (H, _stat(t["peer"][0], stat) / _stat(t["rnnkit"][0], stat))
            for cfg, H, _, t in results
            if cfg.name == name and (sizes is None or H in sizes)
        ]
        best = [
            min(t["peer"][0]) / min(t["rnnkit"][0])
            for cfg, H, _, t in results
            if cfg.name == name and (sizes is None or H in sizes)
        ]
        if not ratios:
            continue
        met = all(r >= minimum for _, r in ratios)
        shown = ", ".join(f"H={H} {r:.2f}× [{b:.2f}×]" for (H, r), b in zip(ratios, best))
        print(f"  {name:22s} ≥ {minimum:.2f}×: {shown}  {'met' if met else 'NOT met'}")


def _stat(samples: list[float], how: str) -> float:
    return statistics.median(samples) if how == "median" else min(samples)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[128, 256, 512], help="hidden sizes"
    )
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds (median)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--configs", nargs="+", help="only the configurations whose name contains one of these"
    )
    parser.add_argument(
        "--stat", choices=["median", "min"], default="median", help="statistic of the rounds"
    )
    parser.add_argument(
        "--timer",
        choices=["wall", "cpu"],
        default="wall",
        help="cpu: process CPU time (robust on a shared machine; use with --threads 1)",
    )
    parser.add_argument("--quick", action="store_true", help="one size, few repeats (smoke test)")
    parser.add_argument("--markdown", action="store_true", help="print markdown tables")
    parser.add_argument(
        "--no-native",
        action="store_true",
        help="run the fast path's TorchScript loops instead of the native C++ kernels",
    )
    parser.add_argument(
        "--no-malloc-tuning",
        action="store_true",
        help="leave glibc's malloc thresholds alone (default: rnnkit.runtime.retain_freed_memory, "
        "as the trainer does, for every implementation alike)",
    )
    args = parser.parse_args(argv)

    global _CLOCK
    if args.timer == "cpu":
        if args.device == "cuda" or args.threads != 1:
            parser.error("--timer cpu needs --device cpu --threads 1")
        _CLOCK = time.process_time
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda given but CUDA is not available")
    torch.set_num_threads(args.threads)
    if args.no_native and _fast is not None:
        _fast.NATIVE = False
    if not args.no_malloc_tuning:  # as rnnkit's trainer does; applies to every implementation
        from rnnkit.runtime import retain_freed_memory

        retain_freed_memory()
    sizes = args.sizes[:1] if args.quick else args.sizes
    repeats = min(args.repeats, 2) if args.quick else args.repeats
    min_time = 0.0 if args.quick else 0.2
    B, T = args.batch, args.seq_len
    configs = [
        c
        for c in _configs()
        if not args.configs or any(k.lower() in c.name.lower() for k in args.configs)
    ]

    peer_label = "cuDNN" if device.type == "cuda" else "torch.nn"
    print(
        f"rnnkit {rnnkit.__version__}, torch {torch.__version__}, device {device}, "
        f"threads {torch.get_num_threads()}, fp32, B={B}, T={T}, input size = H; "
        f"{args.stat} of {repeats} interleaved rounds, {args.timer} time; peer = {peer_label}"
    )

    results = []  # (config, H, path, {impl: (train_s, infer_s)})
    ceilings = {}
    for H in sizes:
        step_rate, seq_rate, method = gemm_ceiling(B, T, H, device, max(repeats, 3), min_time / 4)
        ceilings[H] = (step_rate, seq_rate, method)
        for cfg in configs:
            torch.manual_seed(0)
            x = torch.randn(B, T, H, device=device, requires_grad=True)
            weights = torch.randn(B, T, H, device=device)
            ours = cfg.make_ours(H).to(device)
            impls: dict[str, tuple[nn.Module, Callable]] = {
                "rnnkit": (ours, _layer_forward(ours)),
                "peer": (cfg.make_peer(H).to(device), None),
            }
            impls["peer"] = (impls["peer"][0], _layer_forward(impls["peer"][0]))
            path = _path(ours, device, B)
            if path in ("fast", "native", "tiled"):
                loop = cfg.make_ours(H).to(device)
                loop.allow_fast = False
                loop.allow_fused = False
                impls["loop"] = (loop, _layer_forward(loop))
            if cfg.make_cell is not None:
                cell = cfg.make_cell(H).to(device)
                impls["naive"] = (cell, _naive_forward(cell))
            train = {k: _train_step(f, m, x, weights) for k, (m, f) in impls.items()}
            infer = {k: _inference(f, x) for k, (m, f) in impls.items()}
            t_train = measure(train, repeats, min_time, device)
            t_infer = measure(infer, repeats, min_time, device)
            results.append((cfg, H, path, {k: (t_train[k], t_infer[k]) for k in impls}))
            print(f"  measured {cfg.name} H={H} ({path})", file=sys.stderr, flush=True)

    tokens = B * T
    for phase, idx in (
        ("Training step (forward + backward)", 0),
        ("Inference (no_grad forward)", 1),
    ):
        header = ["config", "H", "path", "rnnkit tok/s", "peer tok/s", "×peer"]
        header += ["loop tok/s", "×loop", "naive tok/s", "×naive"]
        rows = []
        for cfg, H, path, t in results:
            rate = {k: tokens / _stat(v[idx], args.stat) for k, v in t.items()}
            row = [cfg.name, str(H), path, _fmt(rate["rnnkit"], "rate"), _fmt(rate["peer"], "rate")]
            row.append(_fmt(rate["rnnkit"] / rate["peer"], "ratio"))
            for k in ("loop", "naive"):
                row.append(_fmt(rate.get(k), "rate"))
                row.append(_fmt(rate["rnnkit"] / rate[k], "ratio") if k in rate else "-")
            rows.append(row)
        print_table(f"{phase}: tokens/s, ratio = rnnkit / other", header, rows, args.markdown)

    header = ["config", "H", "path"]
    for phase in ("train", "infer"):
        header += [f"{phase} rnnkit GF/s", "%ceil", f"{phase} peer GF/s", "%ceil"]
    rows = []
    for cfg, H, path, t in results:
        ceiling = max(ceilings[H][:2])
        row = [cfg.name, str(H), path]
        for idx, factor in ((0, 3), (1, 1)):
            flops = factor * tokens * 2 * cfg.gates * H * (H + H)
            for k in ("rnnkit", "peer"):
                gf = flops / _stat(t[k][idx], args.stat) / 1e9
                row += [_fmt(gf, "gf"), _fmt(gf / ceiling, "pct")]
        rows.append(row)
    print_table(
        "GEMM throughput (GFLOP/s of the matrix products) and share of the ceiling",
        header,
        rows,
        args.markdown,
    )

    if device.type == "cpu":
        print_targets(results, args.stat)
    print()
    for H, (step_rate, seq_rate, method) in ceilings.items():
        print(
            f"GEMM ceiling H={H}: {method}: step ({B}×{H}·{H}×{4 * H}) {step_rate:.0f} GFLOP/s, "
            f"sequence ({B * T}×{H}·{H}×{4 * H}) {seq_rate:.0f} GFLOP/s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
