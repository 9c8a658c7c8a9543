"""Forecasting baselines (persistence, seasonal naive, AR(p)/VAR by least squares) and the comparison table."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from rnnkit.errors import DataError
from rnnkit.tasks.forecaster.windows import make_windows

if TYPE_CHECKING:
    from rnnkit.tasks.forecaster.model import Forecaster
    from rnnkit.tasks.forecaster.windows import Segment, Windows


# ---------------------------------------------------------------------------------------------
# Baselines
# ---------------------------------------------------------------------------------------------
def persistence(history: Tensor, horizon: int) -> Tensor:
    """ẑ_{t+h} = z_t for every h: ``history (B, L, C)`` → ``(B, H, C)``."""
    return history[:, -1:].expand(-1, horizon, -1).clone()


def seasonal_naive(history: Tensor, horizon: int, season: int) -> Tensor:
    """ẑ_{t+h} = z_{t+h−s·⌈h/s⌉}: the value one season before (repeating the last season)."""
    if history.shape[1] < season:
        raise DataError(f"seasonal naive needs {season} steps of history; got {history.shape[1]}")
    h = torch.arange(1, horizon + 1)
    back = h - season * torch.ceil(h / season).long()  # in (−s, 0]
    return history[:, history.shape[1] - 1 + back]


class ARModel:
    """AR(p) / VAR(p): z_t = c + Σ_{i=1..p} A_i z_{t−i}, fitted by least squares.

    ``coef (1 + p·C, C)`` stacks c and A_1 … A_p (rows ordered lag 1 first). Rows whose target is
    unobserved are left out of the fit; lagged inputs are the causally filled values.
    """

    def __init__(self, order: int, coef: np.ndarray):
        self.order = order
        self.coef = coef

    @classmethod
    def fit(cls, segments: list[Segment], order: int, ridge: float = 1e-6) -> ARModel:
        xs, ys = [], []
        for seg in segments:
            T = seg.inputs.shape[0]
            if T <= order:
                continue
            lags = [seg.inputs[order - i : T - i] for i in range(1, order + 1)]  # (T−p, C) each
            xs.append(np.concatenate([np.ones((T - order, 1))] + lags, 1))
            ys.append(seg.targets[order:])
        if not xs:
            raise DataError(f"no training segment is longer than the AR order {order}")
        X, Y = np.concatenate(xs), np.concatenate(ys)
        keep = np.isfinite(Y).all(1)
        X, Y = X[keep], Y[keep]
        if X.shape[0] < X.shape[1]:
            raise DataError(
                f"AR({order}) has {X.shape[1]} coefficients per column but only "
                f"{X.shape[0]} training rows"
            )
        # ridge-stabilised normal equations: (XᵀX + λI) β = XᵀY (λ tiny; c not penalised)
        reg = ridge * X.shape[0] * np.eye(X.shape[1])
        reg[0, 0] = 0.0
        coef = np.linalg.solve(X.T @ X + reg, X.T @ Y)
        return cls(order, coef)

    def forecast(self, history: Tensor, horizon: int) -> Tensor:
        """Recursive: each forecast becomes a lag of the next. ``(B, L ≥ p, C)`` → ``(B, H, C)``."""
        p = self.order
        if history.shape[1] < p:
            raise DataError(f"AR({p}) needs {p} steps of history; got {history.shape[1]}")
        buf = history[:, -p:].double().cpu().numpy()[:, ::-1]  # (B, p, C), lag 1 first
        buf = [buf[:, i] for i in range(p)]
        out = []
        for _ in range(horizon):
            x = np.concatenate([np.ones((buf[0].shape[0], 1))] + buf, 1)
            nxt = x @ self.coef  # (B, C)
            out.append(nxt)
            buf = [nxt] + buf[:-1]
        return torch.from_numpy(np.stack(out, 1)).float()


def select_ar_order(
    train: list[Segment], valid: Windows, horizon: int, max_order: int
) -> tuple[ARModel, dict[int, float]]:
    """Fit AR(p) for p = 1 … ``max_order`` (limited by the window) on ``train`` and keep the one
    with the lowest validation MSE over horizons 1…H (normalised units). Without validation
    windows the training windows decide."""
    scores: dict[int, float] = {}
    models: dict[int, ARModel] = {}
    if len(valid) == 0:  # nothing held out: judge the orders on the training windows
        C = train[0].inputs.shape[1] if train else 1
        valid = make_windows(train, valid.window, horizon, 1, C)
    top = max(1, min(max_order, valid.window))
    for p in range(1, top + 1):
        try:
            models[p] = ARModel.fit(train, p)
        except DataError:
            break
        pred = models[p].forecast(valid.history, horizon)
        err = (pred - valid.future) ** 2
        scores[p] = float(err[torch.isfinite(err)].mean())
    if not models:
        raise DataError("the training part is too short for any AR model")
    best = min(scores, key=scores.get)
    return models[best], scores


# ---------------------------------------------------------------------------------------------
# Comparing methods
# ---------------------------------------------------------------------------------------------
def _errors(pred: np.ndarray, truth: np.ndarray) -> dict[str, list[float]]:
    """Per-horizon MAE and RMSE over windows and columns (unobserved truth left out)."""
    err = pred - truth  # (M, H, C)
    ok = np.isfinite(err)
    n = np.maximum(ok.sum((0, 2)), 1)
    mae = np.where(ok, np.abs(err), 0).sum((0, 2)) / n
    rmse = np.sqrt(np.where(ok, err**2, 0).sum((0, 2)) / n)
    return {"mae": mae.tolist(), "rmse": rmse.tolist()}


def compare_methods(
    model: Forecaster,
    windows: Windows,
    train: list[Segment],
    valid: Windows | None = None,
    level: float | None = 0.8,
    samples: int = 200,
    seed: int = 0,
    baselines: bool = True,
) -> dict[str, Any]:
    """Forecast every window with the model and the baselines; errors per horizon in original
    units, and the empirical coverage of the model's ``level`` interval.

    Returns ``{"windows", "horizon", "methods": {name: {"mae": [...], "rmse": [...],
    "coverage": [...] (model only)}}, "predictions": {name: (M, H, C) array}, "truth",
    "lower", "upper", "ar_order"}``.
    """
    H = windows.future.shape[1]
    norm = model.normalizer
    truth = norm.inverse(windows.future.double().numpy())
    z = windows.history.to(model.device)
    point, lower, upper = model.forecast_normalised(z, H, level, samples, seed)
    name = f"{model.config.cell.upper()}"
    preds = {name: norm.inverse(point.double().cpu().numpy())}
    result: dict[str, Any] = {"windows": len(windows), "horizon": H, "ar_order": None}
    if baselines:
        preds["persistence"] = norm.inverse(persistence(windows.history, H).double().numpy())
        season = model.data_config.season
        if season and windows.window >= season:
            preds[f"seasonal naive ({season})"] = norm.inverse(
                seasonal_naive(windows.history, H, season).double().numpy()
            )
        if valid is None:  # choose p on the training windows, never on the ones scored here
            valid = make_windows(train, windows.window, H, 1, len(model.columns))
        ar, _ = select_ar_order(train, valid, H, model.data_config.max_ar_order)
        preds[f"AR({ar.order})"] = norm.inverse(ar.forecast(windows.history, H).double().numpy())
        result["ar_order"] = ar.order
    methods = {k: _errors(v, truth) for k, v in preds.items()}
    result["lower"] = result["upper"] = None
    if lower is not None:
        lo = norm.inverse(lower.double().cpu().numpy())
        hi = norm.inverse(upper.double().cpu().numpy())
        inside = (truth >= lo) & (truth <= hi)
        ok = np.isfinite(truth)
        cover = np.where(ok, inside, 0).sum((0, 2)) / np.maximum(ok.sum((0, 2)), 1)
        methods[name]["coverage"] = cover.tolist()
        methods[name]["coverage_all"] = float(inside[ok].mean()) if ok.any() else float("nan")
        result["lower"], result["upper"] = lo, hi
    result.update(methods=methods, predictions=preds, truth=truth, level=level)
    return result


def format_table(
    comparison: dict[str, Any], metric: str = "mae", steps: list[int] | None = None
) -> str:
    """A text table: one row per method, one column per horizon, then the mean."""
    methods = comparison["methods"]
    H = comparison["horizon"]
    steps = steps or list(range(1, H + 1))
    width = max(12, *(len(k) + 1 for k in methods))
    head = (
        f"{metric.upper():<{width}}"
        + "".join(f"{'h=' + str(h):>8}" for h in steps)
        + f"{'mean':>8}"
    )
    lines = [head]
    for name, m in methods.items():
        vals = m[metric]
        row = f"{name:<{width}}" + "".join(f"{vals[h - 1]:>8.3f}" for h in steps)
        lines.append(row + f"{np.mean(vals):>8.3f}")
    return "\n".join(lines)
