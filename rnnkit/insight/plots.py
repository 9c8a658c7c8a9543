"""PNG plots of the instruments (matplotlib, Agg backend; each file written atomically).

:func:`plot_gradient_flow` draws gradient and Jacobian norms against distance;
:func:`plot_memory_results` success and final metric against T; :func:`plot_memory_curves`
training loss and gradient norm against step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from rnnkit.insight.gradient_flow import GradientFlow
from rnnkit.insight.memory import MemoryResult, run_label
from rnnkit.insight.memory_tasks import (
    ADDING_BASELINE_MSE,
    memory_metric_name,
    memory_success_text,
)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    return plt


def _save_figure(fig, path: Path) -> None:
    tmp = path.with_name("." + path.name + ".tmp")
    fig.savefig(tmp, format="png", dpi=110)
    _pyplot().close(fig)
    tmp.replace(path)


def plot_gradient_flow(flows: Sequence[GradientFlow], path: str | Path, title: str = "") -> Path:
    """Three log-scale panels against distance T − t: ‖∂L_T/∂s_t‖, ‖∂L_T/∂x_t‖, ‖J_t‖₂."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    panels = (
        ("grad_state", "‖∂L_T/∂s_t‖ (state)"),
        ("grad_x", "‖∂L_T/∂x_t‖ (input)"),
        ("jacobian", "‖∂s_t/∂s_(t−1)‖₂ (step Jacobian)"),
    )
    for ax, (key, ylabel) in zip(axes, panels):
        for g in flows:
            values = getattr(g, key)
            pts = [(d, v) for d, v in enumerate(values) if v > 0 and math.isfinite(v)]
            if pts:
                ax.plot(*zip(*pts), label=g.label, lw=1.5)
        ax.set_yscale("log")
        ax.set_xlabel("distance T − t (steps back from the loss)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, which="both")
    axes[2].axhline(1.0, color="grey", lw=0.8, ls="--")
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    _save_figure(fig, path)
    return path


def _colors(n: int):
    cmap = _pyplot().get_cmap("tab10")
    return [cmap(k % 10) for k in range(n)]


def plot_memory_results(results: Sequence[MemoryResult], path: str | Path) -> Path:
    """Left: fraction of seeds that succeed against T; right: final test metric against T."""
    plt = _pyplot()
    task = results[0].config.task
    several = len({r.config.clip for r in results}) > 1
    labels = list(dict.fromkeys(run_label(r.config.cell, r.config.clip, several) for r in results))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    markers = "osD^vP*X"
    all_lengths = sorted({r.config.length for r in results})
    for k, (label, color) in enumerate(zip(labels, _colors(len(labels)))):
        runs = [r for r in results if run_label(r.config.cell, r.config.clip, several) == label]
        lengths = sorted({r.config.length for r in runs})
        frac = [
            sum(r.success for r in runs if r.config.length == T)
            / sum(1 for r in runs if r.config.length == T)
            for T in lengths
        ]
        # a small vertical offset per configuration keeps coinciding lines visible
        offset = 0.012 * (k - (len(labels) - 1) / 2)
        style = {"color": color, "marker": markers[k % len(markers)], "label": label}
        ax1.plot(lengths, [f + offset for f in frac], "-", **style)
        pts = [(r.config.length, r.metric) for r in runs if math.isfinite(r.metric)]
        if pts:
            ax2.scatter(*zip(*pts), color=color, alpha=0.5, s=14)
            means = []
            for T in lengths:
                vals = [m for (L, m) in pts if L == T]
                if vals:
                    means.append((T, sum(vals) / len(vals)))
            ax2.plot(*zip(*means), "-", **style)
    from matplotlib.ticker import NullLocator

    for ax in (ax1, ax2):
        if len(all_lengths) > 1 and all_lengths[-1] / all_lengths[0] >= 5:
            ax.set_xscale("log")
        ax.set_xticks(all_lengths, [str(T) for T in all_lengths])
        ax.xaxis.set_minor_locator(NullLocator())  # only the lengths that were run
    ax1.set_ylim(-0.05, 1.05)
    ax1.set_xlabel("T (steps to remember across)")
    ax1.set_ylabel("fraction of seeds that succeed")
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    ax2.set_xlabel("T")
    ax2.set_ylabel(f"final {memory_metric_name(task)}")
    if task == "adding":
        ax2.set_yscale("log")
        ax2.axhline(0.01, color="green", ls="--", lw=0.8, label="success (0.01)")
        ax2.axhline(ADDING_BASELINE_MSE, color="grey", ls=":", lw=0.8, label="predict 1 (1/6)")
    else:
        ax2.axhline(0.99, color="green", ls="--", lw=0.8, label="success (0.99)")
        chance = 0.5 if task == "bit" else 1.0 / results[0].config.copy_alphabet
        ax2.axhline(chance, color="grey", ls=":", lw=0.8, label=f"chance ({chance:.2g})")
    ax2.grid(alpha=0.3, which="both")
    ax2.legend(fontsize=8)
    fig.suptitle(f"{task}: {memory_success_text(task)}")
    fig.tight_layout()
    path = Path(path)
    _save_figure(fig, path)
    return path


def plot_memory_curves(results: Sequence[MemoryResult], path: str | Path) -> Path:
    """Training loss and gradient norm before clipping against step, one line per run."""
    plt = _pyplot()
    several = len({r.config.clip for r in results}) > 1
    labels = list(dict.fromkeys(run_label(r.config.cell, r.config.clip, several) for r in results))
    color_of = dict(zip(labels, _colors(len(labels))))
    lengths = sorted({r.config.length for r in results})
    styles = dict(zip(lengths, ["-", "--", "-.", ":"] * (len(lengths) // 4 + 1)))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.5))
    seen = set()
    for r in results:
        label = run_label(r.config.cell, r.config.clip, several)
        if not r.curve:
            continue
        steps, losses, norms = zip(*r.curve)
        # a few runs: every step (spikes stay visible); many: light smoothing to stay readable
        k = 1 if len(results) <= 4 else max(1, len(losses) // 100)
        key = (label, r.config.length)
        legend = f"{label} T={r.config.length}" if key not in seen else None
        seen.add(key)
        style = {"color": color_of[label], "ls": styles[r.config.length], "lw": 1, "alpha": 0.75}
        ax1.plot(steps[k - 1 :], _moving_average(losses, k), label=legend, **style)
        ax2.plot(steps[k - 1 :], _geometric_average(norms, k), **style)
        if r.diverged:
            ax1.plot(steps[-1], 1.0, "x", color=color_of[label], ms=9)
    ax1.set_yscale("log")
    ax1.set_xlabel("step")
    ax1.set_ylabel("training loss")
    ax1.grid(alpha=0.3, which="both")
    ax1.legend(fontsize=7, ncol=2)
    ax2.set_yscale("log")
    ax2.set_xlabel("step")
    ax2.set_ylabel("gradient norm before clipping")
    for clip in sorted({r.config.clip for r in results if r.config.clip}):
        ax2.axhline(clip, color="grey", ls="--", lw=0.8)
    ax2.grid(alpha=0.3, which="both")
    fig.tight_layout()
    path = Path(path)
    _save_figure(fig, path)
    return path


def _geometric_average(values: Sequence[float], k: int) -> list[float]:
    """Moving geometric mean over k steps (for norms spanning many decades)."""
    logs = [math.log(v) if v > 0 and math.isfinite(v) else math.nan for v in values]
    return [math.exp(v) for v in _moving_average(logs, k)]


def _moving_average(values: Sequence[float], k: int) -> list[float]:
    """Mean over each window of k values, skipping non-finite ones (nan where none is finite)."""
    import numpy as np

    v = np.asarray(values, dtype=float)
    ok = np.isfinite(v)
    window = np.ones(k)
    total = np.convolve(np.where(ok, v, 0.0), window, mode="valid")
    count = np.convolve(ok.astype(float), window, mode="valid")
    with np.errstate(invalid="ignore", divide="ignore"):
        return list(np.where(count > 0, total / np.maximum(count, 1), np.nan))
