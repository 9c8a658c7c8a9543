"""Forecaster's settings: the model and data config dataclasses, with their parsing."""

from __future__ import annotations

from dataclasses import dataclass

from rnnkit.config import option
from rnnkit.data.series import (
    MISSING_MODES,
    TRANSFORMS,
)
from rnnkit.errors import DataError
from rnnkit.tasks.common.recurrent import LAYERS

BALL = "ball"


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------
@dataclass
class ForecasterConfig:
    """Architecture and output of a recurrent forecaster."""

    cell: str = option("lstm", "recurrent cell", tuple(LAYERS))
    hidden_size: int = option(64, "recurrent state width")
    num_layers: int = option(1, "stacked recurrent layers")
    dropout: float = option(0.0, "dropout between layers and before the head")
    horizon: int = option(20, "steps ahead to forecast (and to train for)")
    strategy: str = option(
        "recursive",
        "recursive: one step ahead, rolled out by feeding predictions back; "
        "direct: one output per horizon",
        ("recursive", "direct"),
    )
    head: str = option(
        "point",
        "point (MSE), gaussian (mean and σ, NLL) or quantile (pinball loss)",
        ("point", "gaussian", "quantile"),
    )
    quantiles: str = option("0.1,0.5,0.9", "quantile head: comma-separated levels in (0, 1)")
    residual: bool = option(
        True, "predict the change from the last input (zero head = persistence)"
    )
    rollout_weight: float = option(
        1.0, "recursive: weight of the free-running H-step rollout loss (0 = teacher forcing only)"
    )
    window_norm: str = option(
        "none",
        "rescale each window (RevIN-style, for series whose level or amplitude drifts): by "
        "the mean and std of its first burn_in steps (prefix), or of all steps so far "
        "(running)",
        ("none", "prefix", "running"),
    )
    differences: bool = option(
        True, "also feed the first differences z_t − z_{t−1} (velocities) to the encoder"
    )
    linear_lags: int = option(
        0,
        "add a linear autoregressive path over the last N inputs to the head (LSTNet-style; "
        "0 = none)",
    )
    input_size: int = option(0, "number of columns (set from the data)", cli=False)


@dataclass
class ForecasterData:
    """Where the series come from, how they are split, windowed and compared."""

    data: str = option(
        BALL, "CSV/TSV file of numeric columns, or 'ball' for simulated trajectories"
    )
    columns: str | None = option(
        None, "comma-separated columns to forecast (default: all but the date column)"
    )
    date_column: str | None = option(
        "auto", "date/time column kept for labels: a name, auto or none"
    )
    missing: str = option(
        "mask",
        "missing values: mask (not scored; inputs carry the last value), ffill, "
        "interpolate or error",
        MISSING_MODES,
    )
    transform: str = option("none", "variance-stabilising transform before normalising", TRANSFORMS)
    window: int = option(30, "history steps the encoder reads")
    burn_in: int = option(5, "first window positions left out of the loss (state warm-up)")
    stride: int = option(1, "step between training windows")
    valid_fraction: float = option(0.15, "share of the series (or trajectories) for validation")
    test_fraction: float = option(0.2, "share of the series (or trajectories) held out for test")
    season: int = option(0, "seasonal-naive period in steps (0 = none)")
    max_ar_order: int = option(16, "largest AR(p) order tried")
    ball_trajectories: int = option(600, "ball: trajectories to simulate")
    ball_steps: int = option(100, "ball: observations per trajectory")
    ball_noise: float = option(0.02, "ball: observation noise (m)")
    ball_seed: int = option(0, "ball: simulation seed")


def _parse_quantiles(text: str) -> list[float]:
    try:
        levels = sorted(float(q) for q in text.split(",") if q.strip())
    except ValueError:
        raise DataError(f"quantiles must be numbers like 0.1,0.5,0.9; got {text!r}") from None
    if not levels or any(not 0.0 < q < 1.0 for q in levels) or len(set(levels)) != len(levels):
        raise DataError(f"quantiles must be distinct levels in (0, 1); got {text!r}")
    return levels
