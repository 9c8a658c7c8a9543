"""CSV files of the instruments: gradient flows (one row per distance) and memory runs.

Numbers are written with six significant digits; a missing or nan value is an empty field.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from rnnkit.insight.gradient_flow import GradientFlow
from rnnkit.insight.memory import DEFAULT_LR, MemoryResult


def _fmt(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return f"{v:.6g}"


def write_gradient_csv(flows: Sequence[GradientFlow], path: str | Path) -> Path:
    """One row per (configuration, distance): the norms of :class:`GradientFlow`."""
    path = Path(path)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            ["config", "distance", "grad_state", "grad_h", "grad_c", "grad_x", "jacobian_norm"]
        )
        for g in flows:
            for d in range(g.length):
                w.writerow(
                    [
                        g.label,
                        d,
                        _fmt(g.grad_state[d]),
                        _fmt(g.grad_h[d]),
                        _fmt(g.grad_c[d]) if g.grad_c is not None else "",
                        _fmt(g.grad_x[d]),
                        _fmt(g.jacobian[d]),
                    ]
                )
    return path


def write_memory_csv(results: Sequence[MemoryResult], path: str | Path) -> Path:
    """One row per run: its configuration, success, steps to success, final metric, time."""
    path = Path(path)
    keys = [
        "task",
        "cell",
        "length",
        "seed",
        "clip",
        "lr",
        "hidden_size",
        "batch_size",
        "steps",
        "init_scale",
    ]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            [k if k != "steps" else "step_budget" for k in keys]
            + ["success", "steps_to_success", "metric", "steps_trained", "diverged"]
            + ["seconds", "cpu_seconds"]
        )
        for r in results:
            c = asdict(r.config)
            c["lr"] = c["lr"] if c["lr"] is not None else DEFAULT_LR[r.config.cell]
            w.writerow(
                [c[k] if c[k] is not None else "" for k in keys]
                + [
                    int(r.success),
                    r.steps_to_success if r.steps_to_success is not None else "",
                    _fmt(r.metric),
                    r.steps,
                    int(r.diverged),
                    f"{r.seconds:.2f}",
                    f"{r.cpu_seconds:.2f}",
                ]
            )
    return path


def write_memory_curves_csv(results: Sequence[MemoryResult], path: str | Path) -> Path:
    """Every step of every run: loss and gradient norm before clipping."""
    path = Path(path)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["cell", "length", "seed", "clip", "step", "loss", "grad_norm"])
        for r in results:
            c = r.config
            for step, loss, norm in r.curve:
                w.writerow([c.cell, c.length, c.seed, c.clip, step, _fmt(loss), _fmt(norm)])
    return path
