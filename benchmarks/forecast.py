"""Forecasting benchmark: the tables behind issue 10's acceptance criteria 1 and 2.

1. **Ball** — simulated throws (``rnnkit.datasets.ball``); an LSTM rolls out 20 steps (1 s) from
   30 observed ones. Position RMSE (Euclidean, against the noise-free position) per horizon for
   the LSTM, AR(p) (p chosen on validation trajectories) and persistence, on all test windows
   and on those whose 20 future steps contain a bounce. Draws ``ball.png``.
2. **Yearly sunspots** 1700–2008, split in time: 65 % train, 15 % validation, last 20 % test
   (1947–2008). MAE per horizon 1…11 of the LSTM and the GRU (each the average of ``--seeds``
   runs' forecasts), AR(p) (p chosen on validation), seasonal naive (11 years) and persistence,
   and the empirical coverage of the 80 % interval on test.

Every method forecasts the very same windows; baselines are fitted on the training part only.

    python benchmarks/forecast.py                       # both parts: ~3 CPU-minutes, 1 thread
    python benchmarks/forecast.py --quick                # smoke test: prints the tables
    python benchmarks/forecast.py --sunspots ../shared/data/sunspots/sunspots.csv --out runs/bench
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from rnnkit.api import load
from rnnkit.checkpoint import RunDir
from rnnkit.config import to_dict
from rnnkit.tasks.forecaster import (
    TASK,
    ForecasterConfig,
    ForecasterData,
    compare_methods,
    persistence,
    select_ar_order,
)
from rnnkit.train import TrainConfig, fit, seed_everything

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SUNSPOTS = REPO / ".." / "shared" / "data" / "sunspots" / "sunspots.csv"


def train_run(model_cfg, data_cfg, train_cfg, out: Path):
    """Build, train into ``out`` and reload the best checkpoint, as ``rnnkit train`` would."""
    seed_everything(train_cfg.seed)
    model, task = TASK.build({"model": model_cfg, "data": data_cfg}, train_cfg, torch.device("cpu"))
    run = RunDir.create(out, exist_ok=False)
    run.save_config(
        {
            "task": TASK.name,
            "model": to_dict(model_cfg),
            "data": to_dict(data_cfg),
            "train": to_dict(train_cfg),
        }
    )
    start = time.monotonic()
    summary = fit(model, task, train_cfg, run)
    return load(out), task, summary, time.monotonic() - start


# ---------------------------------------------------------------------------------------------
# 1. ball
# ---------------------------------------------------------------------------------------------
def ball_part(out: Path, steps: int, threads_note: str) -> None:
    H, L = 20, 30
    model_cfg = ForecasterConfig(
        cell="lstm", hidden_size=64, horizon=H, differences=True, rollout_weight=1.0
    )
    data_cfg = ForecasterData(data="ball", window=L, burn_in=5)
    train_cfg = TrainConfig(
        lr=2e-3, batch_size=64, max_steps=steps, eval_every=250, progress=False, seed=1
    )
    model, task, summary, seconds = train_run(model_cfg, data_cfg, train_cfg, out / "ball-lstm")
    data = task.data
    traj = data.ball
    test = data.windows("test", L, H)
    valid = data.windows("valid", L, H)
    norm = model.normalizer

    point, _, _ = model.forecast_normalised(test.history, H, level=None)
    ar, _ = select_ar_order(data.parts["train"], valid, H, data_cfg.max_ar_order)
    preds = {
        "LSTM": norm.inverse(point.double().numpy()),
        f"AR({ar.order})": norm.inverse(ar.forecast(test.history, H).double().numpy()),
        "persistence": norm.inverse(persistence(test.history, H).double().numpy()),
    }
    rows = np.arange(H)[None, :] + test.origin[:, None] + 1  # (M, H) future steps
    truth = traj.position[test.series[:, None], rows]  # (M, H, 2) noise-free positions
    bounce = traj.bounced[test.series[:, None], rows].any(1)  # (M,) a bounce in the future

    def rmse(pred, mask=None, per_h=False):
        sq = ((pred - truth) ** 2).sum(-1)  # (M, H) squared Euclidean error
        if mask is not None:
            sq = sq[mask]
        return np.sqrt(sq.mean(0)) if per_h else float(np.sqrt(sq.mean()))

    print(f"\n## 1. Ball: 20-step rollout from 30 observed steps ({threads_note})")
    print(
        f"{len(traj)} trajectories ({len(data.parts['train'])} train / "
        f"{len(data.parts['valid'])} valid / {len(data.parts['test'])} test), dt = {traj.dt} s, "
        f"noise {data_cfg.ball_noise} m; {len(test)} test windows, {bounce.sum()} with a bounce "
        f"in the forecast; LSTM {summary['steps']} steps in {seconds:.0f} s"
    )
    base = rmse(preds["persistence"])
    shown = (1, 5, 10, 15, 20)
    print(
        "\nposition RMSE (m)".ljust(16)
        + "".join(f"{'h=' + str(h):>8}" for h in shown)
        + f"{'all h':>9}{'bounce':>9}{'no bounce':>11}{'/ persist.':>12}"
    )
    for name, pred in preds.items():
        per = rmse(pred, per_h=True)
        print(
            f"{name:<16}"
            + "".join(f"{per[h - 1]:>8.3f}" for h in shown)
            + f"{rmse(pred):>9.3f}{rmse(pred, bounce):>9.3f}{rmse(pred, ~bounce):>11.3f}"
            + f"{rmse(pred) / base:>12.3f}"
        )
    lstm, arr = rmse(preds["LSTM"]), rmse(preds[f"AR({ar.order})"])
    ok = (
        lstm <= 0.5 * base
        and lstm < arr
        and rmse(preds["LSTM"], bounce) < rmse(preds[f"AR({ar.order})"], bounce)
    )
    print(f"acceptance 1 (≤ 0.5× persistence, below AR overall and across bounces): {ok}")
    _ball_plot(out / "ball.png", traj, test, preds, ar.order, bounce)
    print(f"plot: {out / 'ball.png'}")


def _ball_plot(path, traj, test, preds, order, bounce) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # four test trajectories, each cut a little before a bounce in the forecast
    picks, seen = [], set()
    for m in np.flatnonzero(bounce):
        s = int(test.series[m])
        future = traj.bounced[s, test.origin[m] + 1 : test.origin[m] + 21]
        if s not in seen and future[6:14].any():
            picks.append(m)
            seen.add(s)
        if len(picks) == 4:
            break
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    H = preds["LSTM"].shape[1]
    for ax, m in zip(axes.flat, picks):
        s, t0 = int(test.series[m]), int(test.origin[m])
        ax.plot(*traj.position[s].T, color="0.8", lw=1, label="true path")
        ax.plot(
            *traj.observed[s, t0 - test.window + 1 : t0 + 1].T,
            ".",
            color="0.2",
            ms=4,
            label="observed history",
        )
        ax.plot(
            *traj.position[s, t0 + 1 : t0 + 1 + H].T,
            "o",
            color="0.4",
            mfc="none",
            ms=4,
            label="truth (next 20)",
        )
        ax.plot(*preds["LSTM"][m].T, "-", color="C3", lw=2, label="LSTM rollout")
        ax.plot(*preds[f"AR({order})"][m].T, "--", color="C0", lw=1.5, label=f"AR({order})")
        ax.plot(*preds["persistence"][m, 0], "x", color="C2", ms=9, mew=2, label="persistence")
        ax.set_title(f"test trajectory {s}, forecast from t = {t0 * traj.dt:.2f} s", fontsize=9)
        ax.set_xlabel("x (m)")
        ax.set_ylabel("y (m)")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# 2. sunspots
# ---------------------------------------------------------------------------------------------
def sunspots_part(out: Path, path: Path, seeds: int, steps: int, threads_note: str) -> None:
    H = 11
    data_cfg = dict(
        data=str(path), window=40, burn_in=11, season=11, valid_fraction=0.15, test_fraction=0.2
    )
    members: dict[str, list[dict]] = {}
    base = None
    seconds = 0.0
    for cell in ("lstm", "gru"):
        for seed in range(1, seeds + 1):
            model_cfg = ForecasterConfig(
                cell=cell,
                hidden_size=32,
                horizon=H,
                head="quantile",
                window_norm="running",
                rollout_weight=1.0,
                differences=False,
            )
            train_cfg = TrainConfig(
                lr=1e-3, batch_size=16, max_steps=steps, eval_every=100, progress=False, seed=seed
            )
            model, task, _, secs = train_run(
                model_cfg, ForecasterData(**data_cfg), train_cfg, out / f"sunspots-{cell}-{seed}"
            )
            seconds += secs
            data = task.data
            test = data.windows("test", 40, H)
            valid = data.windows("valid", 40, H)
            cmp = compare_methods(model, test, data.parts["train"], valid, level=0.8)
            members.setdefault(cell.upper(), []).append(cmp)
            base = base or cmp
    truth = base["truth"]
    series = data.series
    first_test = len(series) - int(round(len(series) * data_cfg["test_fraction"]))
    print(f"\n## 2. Yearly sunspots: MAE per horizon on the last 20% ({threads_note})")
    print(
        f"{series.path}: {len(series)} years {series.dates[0]}–{series.dates[-1]}; test "
        f"{series.dates[first_test]}–{series.dates[-1]}: {base['windows']} forecast origins with "
        f"all 11 years known; {len(members)} × {seeds} recurrent runs of {steps} steps in "
        f"{seconds:.0f} s; the LSTM/GRU rows average their {seeds} runs' forecasts"
    )

    def mae(pred):
        return np.nanmean(np.abs(pred - truth), axis=(0, 2))

    rows = {}
    for name, runs in members.items():
        rows[name] = np.mean([r["predictions"][name] for r in runs], 0)
    baselines = {k: v for k, v in base["predictions"].items() if k not in members}
    rows.update(sorted(baselines.items(), key=lambda kv: -mae(kv[1]).mean()))
    print(
        "\nMAE".ljust(22) + "".join(f"{'h=' + str(h):>7}" for h in range(1, H + 1)) + f"{'mean':>7}"
    )
    for name, pred in rows.items():
        e = mae(pred)
        print(f"{name:<21}" + "".join(f"{v:>7.2f}" for v in e) + f"{e.mean():>7.2f}")
    best_base = np.min([mae(v) for v in baselines.values()], 0)
    for name, runs in members.items():
        wins = mae(rows[name])[2:] < best_base[2:]
        each = [int((mae(r["predictions"][name])[2:] < best_base[2:]).sum()) for r in runs]
        print(
            f"{name}: beats every baseline at h ≥ 3: {bool(wins.all())} ({wins.sum()}/9 horizons; "
            f"single runs: {', '.join(f'{w}/9' for w in each)})"
        )
    print("\n80% interval (quantiles 0.1 and 0.9 averaged over runs), empirical coverage on test:")
    for name, runs in members.items():
        lo = np.mean([r["lower"] for r in runs], 0)
        hi = np.mean([r["upper"] for r in runs], 0)
        ok = np.isfinite(truth)
        inside = (truth >= lo) & (truth <= hi)
        per_h = [float(inside[:, h][ok[:, h]].mean()) for h in range(H)]
        single = [r["methods"][name]["coverage_all"] for r in runs]
        print(
            f"{name}: {inside[ok].mean():.1%} overall (h=1 {per_h[0]:.0%}, h=6 {per_h[5]:.0%}, "
            f"h=11 {per_h[10]:.0%}; single runs {', '.join(f'{c:.1%}' for c in single)})"
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", choices=("ball", "sunspots"), help="run one part")
    p.add_argument("--sunspots", default=str(DEFAULT_SUNSPOTS), help="yearly sunspots CSV")
    p.add_argument("--seeds", type=int, default=3, help="recurrent runs per cell (sunspots)")
    p.add_argument("--ball-steps", type=int, default=1500, help="ball training steps")
    p.add_argument("--sunspot-steps", type=int, default=1500, help="sunspot training steps")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--out", help="keep the runs and the plot here (default: a temp directory)")
    p.add_argument("--quick", action="store_true", help="smoke test: a few steps, one seed")
    args = p.parse_args(argv)
    if args.quick:
        args.ball_steps, args.sunspot_steps, args.seeds = 5, 5, 1
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    note = f"CPU, {args.threads} thread{'s' if args.threads > 1 else ''}"
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="rnnkit-forecast-"))
    out.mkdir(parents=True, exist_ok=True)
    print(f"# rnnkit forecasting benchmark (runs in {out})")
    if args.only in (None, "ball"):
        ball_part(out, args.ball_steps, note)
    if args.only in (None, "sunspots"):
        path = Path(args.sunspots)
        if not path.exists():
            print(f"no sunspot data at {path}; pass --sunspots FILE", file=sys.stderr)
            return 2
        sunspots_part(out, path, args.seeds, args.sunspot_steps, note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
