"""Comparing runs: a table of run folders and their loss curves overlaid in one plot.

A run folder is recognised by its ``config.json``; everything shown is read from it and from
``metrics.jsonl`` (the trainer's source of truth) plus the tensor shapes in the header of
``model.safetensors`` (for the parameter count), so listing a hundred runs loads no weights.

Each row (:class:`RunSummary`) holds the task, the cell, the size (layers × state width), the
parameter count, the steps trained, the training time, the best validation figure and the path.
The figure is the task's headline metric, the one the documentation's tables report:

* ``lm``: ``val_loss`` (nats per character); ``val_perplexity`` at word level;
* ``music``: ``val_bits`` (bits per character);
* ``classify``: ``val_accuracy`` (higher is better);
* ``tag``: ``val_f1`` for entity tagging, else ``val_accuracy`` (higher);
* ``translate``: ``val_bleu`` (higher) when it was evaluated;
* ``forecast``: ``val_rmse`` (original units);
* ``caption``: ``val_bleu4`` (higher) when it was evaluated.

Any other task (or a run without that metric) falls back to the lowest ``val_loss``.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import struct
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from rnnkit.checkpoint import RunDir
from rnnkit.errors import CheckpointError

__all__ = [
    "RunSummary",
    "COLUMNS",
    "find_runs",
    "summarize_run",
    "scan_runs",
    "sort_runs",
    "format_table",
    "runs_to_json",
    "plot_runs",
]

log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    """One run folder as a table row (None where the run does not say)."""

    task: str | None
    cell: str | None
    size: str | None
    params: int | None
    steps: int | None
    time: float | None  # seconds of training, resumed sessions included
    metric: str | None  # which validation metric ``best`` is
    best: float | None
    path: str


COLUMNS = tuple(f.name for f in fields(RunSummary))

# task -> candidates (metric, lower is better), first one present in the run wins
_HEADLINE: dict[str, list[tuple[str, bool]]] = {
    "music": [("val_bits", True)],
    "classify": [("val_accuracy", False)],
    "tag": [("val_f1", False), ("val_accuracy", False)],
    "translate": [("val_bleu", False)],
    "forecast": [("val_rmse", True)],
    "caption": [("val_bleu4", False)],
}


def _headline(config: dict[str, Any]) -> list[tuple[str, bool]]:
    task = config.get("task")
    if task == "lm":
        word = (config.get("data") or {}).get("level") == "word"
        return [("val_perplexity", True)] if word else [("val_loss", True)]
    return [*_HEADLINE.get(str(task), []), ("val_loss", True)]


def find_runs(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Run folders at or below ``paths`` (a folder with ``config.json`` is a run; its
    subfolders are not searched), sorted by path.

    Raises:
        FileNotFoundError: a path does not exist.
    """
    found: set[Path] = set()
    for given in paths:
        root = Path(given)
        if not root.exists():
            raise FileNotFoundError(f"{root}: no such file or directory")
        if (root / RunDir.CONFIG).is_file():
            found.add(root)
            continue
        for directory, subdirs, files in os.walk(root):
            if RunDir.CONFIG in files:
                found.add(Path(directory))
                subdirs.clear()  # a run's own subfolders (tensorboard/, samples) are not runs
            else:
                subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
    return sorted(found)


def _parameter_count(path: Path) -> int | None:
    """Σ over tensors of Π shape, from a safetensors header (tied weights are stored once)."""
    try:
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            if length > 100_000_000:
                return None
            header = json.loads(f.read(length))
    except (OSError, struct.error, json.JSONDecodeError, UnicodeDecodeError):
        return None
    total = 0
    for name, entry in header.items():
        if name == "__metadata__" or not isinstance(entry, dict):
            continue
        total += math.prod(int(d) for d in entry.get("shape", []))
    return total


def _cell_label(model: dict[str, Any], task: str | None) -> str | None:
    if model.get("model") == "window":
        return "window"  # the fixed-window (feed-forward) language model has no cell
    cell = model.get("cell") or ("lstm" if task == "caption" else None)
    if cell is None:
        return None
    extras = [name for name in ("layer_norm", "peephole") if model.get(name)]
    return "+".join([str(cell), *("ln" if e == "layer_norm" else e for e in extras)])


def summarize_run(path: str | os.PathLike[str]) -> RunSummary:
    """The table row of one run folder.

    Raises:
        CheckpointError: ``config.json`` or ``metrics.jsonl`` is missing or malformed (the
            message names the file and line).
    """
    run = RunDir(path)
    config = run.load_config()
    records = run.read_metrics()
    model = config.get("model") if isinstance(config.get("model"), dict) else {}
    task = config.get("task")
    hidden, layers = model.get("hidden_size"), model.get("num_layers")
    if hidden is None:
        size = None
    else:
        size = f"{layers}×{hidden}" if layers is not None else str(hidden)
    steps = max((r["step"] for r in records if isinstance(r.get("step"), int)), default=None)
    times = [r["time"] for r in records if isinstance(r.get("time"), (int, float))]
    evals = [r for r in records if r.get("kind") == "eval"]
    metric, best = None, None
    for key, lower in _headline(config):
        values = [r[key] for r in evals if isinstance(r.get(key), (int, float))]
        values = [v for v in values if math.isfinite(v)]
        if values:
            metric, best = key, (min(values) if lower else max(values))
            break
    model_file = run.model_path("last")
    return RunSummary(
        task=task,
        cell=_cell_label(model, task),
        size=size,
        params=_parameter_count(model_file) if model_file.exists() else None,
        steps=steps,
        time=max(times) if times else None,
        metric=metric,
        best=best,
        path=os.fspath(run.path),
    )


def scan_runs(paths: Iterable[str | os.PathLike[str]] = ("runs",)) -> list[RunSummary]:
    """Rows for every run folder under ``paths``; a malformed run is skipped with a warning."""
    rows = []
    for path in find_runs(paths):
        try:
            rows.append(summarize_run(path))
        except CheckpointError as exc:
            log.warning("skipping %s: %s", path, exc)
    return rows


def sort_runs(
    rows: Sequence[RunSummary], column: str = "path", reverse: bool = False
) -> list[RunSummary]:
    """``rows`` sorted by ``column`` (one of :data:`COLUMNS`); rows without a value go last.

    Raises:
        ValueError: an unknown column (the message lists the known ones).
    """
    if column not in COLUMNS:
        raise ValueError(f"cannot sort by {column!r}; expected one of {', '.join(COLUMNS)}")
    have = [r for r in rows if getattr(r, column) is not None]
    missing = [r for r in rows if getattr(r, column) is None]
    have.sort(key=lambda r: (getattr(r, column), r.path), reverse=reverse)
    return have + missing


def _fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _fmt_params(n: int | None) -> str:
    if n is None:
        return "-"
    if n >= 1_000_000:
        return f"{n / 1e6:.1f}M"
    if n >= 1_000:
        return f"{n / 1e3:.0f}k"
    return str(n)


def _fmt_best(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"


def format_table(rows: Sequence[RunSummary]) -> str:
    """A plain-text table, one line per run (times as 5m48s, parameters as 722k / 6.6M)."""
    header = ["task", "cell", "size", "params", "steps", "time", "best", "metric", "path"]
    body = [
        [
            r.task or "-",
            r.cell or "-",
            r.size or "-",
            _fmt_params(r.params),
            "-" if r.steps is None else str(r.steps),
            _fmt_time(r.time),
            _fmt_best(r.best),
            r.metric or "-",
            r.path,
        ]
        for r in rows
    ]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    right = {"params", "steps", "time", "best"}

    def line(cells: list[str]) -> str:
        out = [c.rjust(w) if h in right else c.ljust(w) for c, w, h in zip(cells, widths, header)]
        return "  ".join(out).rstrip()

    return "\n".join(line(row) for row in [header, *body])


def runs_to_json(rows: Sequence[RunSummary]) -> str:
    """The rows as one JSON array of objects (keys: :data:`COLUMNS`; time in seconds)."""
    return json.dumps([asdict(r) for r in rows], indent=2, ensure_ascii=False)


def _smooth(values: list[float], k: int) -> list[float]:
    """Trailing moving average over ``k`` points (the first k − 1 points average fewer)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= k:
            total -= values[i - k]
        out.append(total / min(i + 1, k))
    return out


def plot_runs(
    paths: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    x: str = "step",
    labels: Sequence[str] | None = None,
) -> Path:
    """Overlay the loss curves of several runs in one PNG; returns its path.

    Each run gets one colour: its training loss (moving average over ~1/50 of the records) as a
    line and its validation loss as dots joined by a dashed line. ``x`` is ``"step"`` or
    ``"time"`` (minutes of training). The file is written atomically.

    Raises:
        ValueError: ``x`` is neither, or a run has no loss records at all.
        CheckpointError: a run's ``metrics.jsonl`` is malformed.
    """
    if x not in ("step", "time"):
        raise ValueError(f"x must be 'step' or 'time'; got {x!r}")
    if labels is not None and len(labels) != len(paths):
        raise ValueError(f"got {len(labels)} labels for {len(paths)} runs")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rnnkit.checkpoint import atomic_write_bytes

    def xs(rows):
        return [r[x] / 60 if x == "time" else r[x] for r in rows]

    fig, ax = plt.subplots(figsize=(8, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, path in enumerate(paths):
        run = RunDir(path)
        records = [r for r in run.read_metrics() if isinstance(r.get(x), (int, float))]
        train = [r for r in records if r.get("kind") == "train" and "loss" in r]
        valid = [r for r in records if r.get("kind") == "eval" and "val_loss" in r]
        if not train and not valid:
            raise ValueError(f"{run.metrics_path}: no training or validation loss to plot")
        name = labels[i] if labels is not None else run.path.name
        color = colors[i % len(colors)]
        if train:
            k = max(1, len(train) // 50)
            ax.plot(xs(train), _smooth([r["loss"] for r in train], k), color=color, lw=1.2,
                    label=f"{name} train")  # fmt: skip
        if valid:
            ax.plot(xs(valid), [r["val_loss"] for r in valid], "o--", color=color, lw=1,
                    ms=3.5, label=f"{name} validation")  # fmt: skip
    ax.set_xlabel("step" if x == "step" else "minutes of training")
    ax.set_ylabel("loss (nats per token; MSE for forecasts)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    out = Path(out)
    atomic_write_bytes(out, buf.getvalue())
    return out
