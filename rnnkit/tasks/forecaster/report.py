"""The ``rnnkit forecast`` report: a forecast from a run, its comparison with the baselines, the plot and the text."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rnnkit.data.series import (
    date_axis,
    extend_dates,
)
from rnnkit.errors import DataError
from rnnkit.inference import ForecastRequest
from rnnkit.tasks.forecaster.baselines import compare_methods, format_table
from rnnkit.tasks.forecaster.windows import prepare_data

if TYPE_CHECKING:
    from rnnkit.tasks.forecaster.model import Forecaster
    from rnnkit.tasks.forecaster.windows import PreparedData


# ---------------------------------------------------------------------------------------------
# rnnkit forecast RUN --data FILE --horizon H --plot out.png
# ---------------------------------------------------------------------------------------------
def _load_for(model: Forecaster, data: str | None) -> PreparedData:
    from dataclasses import replace

    dc = replace(model.data_config, data=data) if data else model.data_config
    prepared = prepare_data(dc, dc.window, model.normalizer)
    if prepared.columns != model.columns:
        raise DataError(
            f"the model forecasts columns {model.columns}; {dc.data} gives {prepared.columns}"
        )
    return prepared


def forecast_report(
    model: Forecaster,
    data: str | None = None,
    horizon: int | None = None,
    origin: str | None = None,
    series: int = 0,
    level: float | None = 0.8,
    samples: int = 200,
    seed: int = 0,
    plot: str | Path | None = None,
    evaluate: bool = False,
) -> dict[str, Any]:
    """Forecast ``horizon`` steps of ``data`` (a file with the run's columns, ``"ball"``, or the
    run's own data) from ``origin`` (a row number counted from 0, or a date label; default the
    last row, or the end of the window for a ball trajectory), with the truth where the data
    has it; optionally draw ``plot`` and compare with the baselines on the test part.

    The data is read with the run's settings and normalised with the run's training statistics.
    """
    H = model.config.horizon if horizon is None else horizon
    if H < 1:
        raise DataError(f"horizon must be >= 1; got {H}")
    if level is not None and not 0.0 < level < 1.0:
        raise DataError(f"level must lie in (0, 1); got {level}")
    prepared = _load_for(model, data)
    dc = model.data_config
    if prepared.ball is not None:
        test_ids = [seg.series for seg in prepared.parts["test"]] or [0]
        if not 0 <= series < len(test_ids):
            raise DataError(f"series must lie in 0..{len(test_ids) - 1} (test trajectories)")
        values = prepared.ball.observed[test_ids[series]]
        labels = [f"{t * prepared.ball.dt:.2f}" for t in range(values.shape[0])]
        default_origin = min(dc.window, values.shape[0]) - 1
        source = f"ball (test trajectory {series})"
    else:
        s = prepared.series
        values, labels = s.values, s.dates
        default_origin = len(s) - 1
        source = s.path
    N = values.shape[0]
    if origin is None:
        t0 = default_origin
    elif labels is not None and origin in labels:
        t0 = labels.index(origin)
    else:
        try:
            t0 = int(origin)
        except ValueError:
            raise DataError(
                f"origin {origin!r} is neither a row number nor a date in the data"
            ) from None
        if not 0 <= t0 < N:
            raise DataError(f"origin row {t0} is outside the data (0..{N - 1})")
    history = values[: t0 + 1]
    window = history[-model.data_config.window :].tolist()  # all that the model reads
    answer = model.infer(ForecastRequest(window, H, level, samples, seed))
    fc = {k: None if v is None else np.asarray(v) for k, v in answer.to_json().items()}
    known = min(H, N - 1 - t0)
    truth = np.full((H, values.shape[1]), np.nan)
    truth[:known] = values[t0 + 1 : t0 + 1 + known]
    if labels is not None:
        future_labels = labels[t0 + 1 : t0 + 1 + known] + extend_dates(labels[: t0 + 1], H)[known:]
    else:
        future_labels = [str(t0 + h) for h in range(1, H + 1)]
    rows = []
    for h in range(H):
        rows.append(
            {
                "step": h + 1,
                "date": future_labels[h],
                "mean": fc["mean"][h].tolist(),
                "lower": None if fc["lower"] is None else fc["lower"][h].tolist(),
                "upper": None if fc["upper"] is None else fc["upper"][h].tolist(),
                "truth": None if h >= known else [_finite_or_none(v) for v in truth[h]],
            }
        )
    report: dict[str, Any] = {
        "data": source,
        "columns": model.columns,
        "origin": {"row": t0, "date": labels[t0] if labels is not None else None},
        "horizon": H,
        "level": level if fc["lower"] is not None else None,
        "forecast": rows,
    }
    if plot:
        _plot_forecast(
            plot, model.columns, labels, values, t0, future_labels, fc, truth, level, source
        )
        report["plot"] = str(plot)
    if evaluate:
        test = prepared.windows("test", dc.window, H)
        if len(test) == 0:
            raise DataError(f"the test part of {source} is shorter than window + horizon {H}")
        valid = prepared.windows("valid", dc.window, H)
        cmp = compare_methods(
            model,
            test,
            prepared.parts["train"],
            valid if len(valid) else None,
            level,
            samples,
            seed,
        )
        report["evaluation"] = {
            "split": "test",
            "windows": cmp["windows"],
            "ar_order": cmp["ar_order"],
            "methods": cmp["methods"],
        }
    return report


def _finite_or_none(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None


def _plot_forecast(path, columns, labels, values, t0, future_labels, fc, truth, level, title):
    """History (last few windows), forecast, interval and truth; one panel per column."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    H = len(future_labels)
    start = max(0, t0 + 1 - max(4 * H, 40))
    axis = date_axis(labels) if labels is not None else None
    future_axis = date_axis(list(labels[: t0 + 1]) + future_labels) if labels is not None else None
    if axis is None or future_axis is None:
        xs_hist = np.arange(start, t0 + 1)
        xs_fut = np.arange(t0 + 1, t0 + 1 + H)
    else:
        xs_hist = axis[start : t0 + 1]
        xs_fut = future_axis[t0 + 1 : t0 + 1 + H]
    shown = columns[:4]
    fig, axes = plt.subplots(len(shown), 1, figsize=(8, 2.8 * len(shown)), squeeze=False)
    for c, name in enumerate(shown):
        ax = axes[c, 0]
        ax.plot(xs_hist, values[start : t0 + 1, c], color="0.2", lw=1.2, label="history")
        if np.isfinite(truth[:, c]).any():
            ax.plot(xs_fut, truth[:, c], "o", color="0.2", ms=3, mfc="none", label="truth")
        ax.plot(xs_fut, fc["mean"][:, c], color="C3", lw=1.6, label="forecast")
        if fc["lower"] is not None:
            ax.fill_between(
                xs_fut,
                fc["lower"][:, c],
                fc["upper"][:, c],
                color="C3",
                alpha=0.2,
                label=f"{level:.0%} interval",
            )
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        if c == 0:
            ax.set_title(str(title))
            ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def format_report(report: dict[str, Any]) -> str:
    """The forecast report as text: one line per step, then the test comparison if present."""
    cols = report["columns"]
    o = report["origin"]
    where = f"row {o['row']}" + (f" ({o['date']})" if o["date"] is not None else "")
    lines = [f"{report['data']}: forecast of {', '.join(cols)} from {where}"]
    level = report["level"]
    head = f"{'step':>4}  {'date':>12}"
    for c in cols:
        head += f"  {c + ' forecast':>16}"
        if level is not None:
            head += f"  {f'{level:.0%} interval':>22}"
        head += f"  {'truth':>10}"
    lines.append(head)
    for r in report["forecast"]:
        line = f"{r['step']:>4}  {r['date']:>12}"
        for c in range(len(cols)):
            line += f"  {r['mean'][c]:>16.4g}"
            if level is not None:
                interval = f"[{r['lower'][c]:.4g}, {r['upper'][c]:.4g}]"
                line += f"  {interval:>22}"
            t = None if r["truth"] is None else r["truth"][c]
            line += f"  {'' if t is None else f'{t:.4g}':>10}"
        lines.append(line)
    ev = report.get("evaluation")
    if ev:
        lines.append("")
        lines.append(f"test part: {ev['windows']} forecast windows (AR order {ev['ar_order']})")
        lines.append(format_table({"methods": ev["methods"], "horizon": report["horizon"]}))
        for name, m in ev["methods"].items():
            if "coverage_all" in m:
                lines.append(
                    f"{name}: {level:.0%} interval covers {m['coverage_all']:.1%} of test values"
                )
    if report.get("plot"):
        lines.append(f"plot: {report['plot']}")
    return "\n".join(lines)
