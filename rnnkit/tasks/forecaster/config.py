"""Forecaster's settings: the model and data config dataclasses, with their parsing."""

from __future__ import annotations

from dataclasses import dataclass, field

from rnnkit.config import field_meta as _opt
from rnnkit.data.series import (
    MISSING_MODES,
    TRANSFORMS,
)
from rnnkit.errors import DataError

BALL = "ball"


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------
@dataclass
class ForecasterConfig:
    """Architecture and output of a recurrent forecaster."""

    cell: str = field(default="lstm", metadata=_opt("recurrent cell", ("lstm", "gru", "rnn")))
    hidden_size: int = field(default=64, metadata=_opt("recurrent state width"))
    num_layers: int = field(default=1, metadata=_opt("stacked recurrent layers"))
    dropout: float = field(default=0.0, metadata=_opt("dropout between layers and before the head"))
    horizon: int = field(default=20, metadata=_opt("steps ahead to forecast (and to train for)"))
    strategy: str = field(
        default="recursive",
        metadata=_opt(
            "recursive: one step ahead, rolled out by feeding predictions back; "
            "direct: one output per horizon",
            ("recursive", "direct"),
        ),
    )
    head: str = field(
        default="point",
        metadata=_opt(
            "point (MSE), gaussian (mean and σ, NLL) or quantile (pinball loss)",
            ("point", "gaussian", "quantile"),
        ),
    )
    quantiles: str = field(
        default="0.1,0.5,0.9", metadata=_opt("quantile head: comma-separated levels in (0, 1)")
    )
    residual: bool = field(
        default=True,
        metadata=_opt("predict the change from the last input (zero head = persistence)"),
    )
    rollout_weight: float = field(
        default=1.0,
        metadata=_opt(
            "recursive: weight of the free-running H-step rollout loss (0 = teacher forcing only)"
        ),
    )
    window_norm: str = field(
        default="none",
        metadata=_opt(
            "rescale each window (RevIN-style, for series whose level or amplitude drifts): by "
            "the mean and std of its first burn_in steps (prefix), or of all steps so far "
            "(running)",
            ("none", "prefix", "running"),
        ),
    )
    differences: bool = field(
        default=True,
        metadata=_opt("also feed the first differences z_t − z_{t−1} (velocities) to the encoder"),
    )
    linear_lags: int = field(
        default=0,
        metadata=_opt(
            "add a linear autoregressive path over the last N inputs to the head (LSTNet-style; "
            "0 = none)"
        ),
    )
    input_size: int = field(
        default=0, metadata=_opt("number of columns (set from the data)", cli=False)
    )


@dataclass
class ForecasterData:
    """Where the series come from, how they are split, windowed and compared."""

    data: str = field(
        default=BALL,
        metadata=_opt("CSV/TSV file of numeric columns, or 'ball' for simulated trajectories"),
    )
    columns: str | None = field(
        default=None,
        metadata=_opt("comma-separated columns to forecast (default: all but the date column)"),
    )
    date_column: str | None = field(
        default="auto", metadata=_opt("date/time column kept for labels: a name, auto or none")
    )
    missing: str = field(
        default="mask",
        metadata=_opt(
            "missing values: mask (not scored; inputs carry the last value), ffill, "
            "interpolate or error",
            MISSING_MODES,
        ),
    )
    transform: str = field(
        default="none",
        metadata=_opt("variance-stabilising transform before normalising", TRANSFORMS),
    )
    window: int = field(default=30, metadata=_opt("history steps the encoder reads"))
    burn_in: int = field(
        default=5, metadata=_opt("first window positions left out of the loss (state warm-up)")
    )
    stride: int = field(default=1, metadata=_opt("step between training windows"))
    valid_fraction: float = field(
        default=0.15, metadata=_opt("share of the series (or trajectories) for validation")
    )
    test_fraction: float = field(
        default=0.2, metadata=_opt("share of the series (or trajectories) held out for test")
    )
    season: int = field(default=0, metadata=_opt("seasonal-naive period in steps (0 = none)"))
    max_ar_order: int = field(default=16, metadata=_opt("largest AR(p) order tried"))
    ball_trajectories: int = field(default=600, metadata=_opt("ball: trajectories to simulate"))
    ball_steps: int = field(default=100, metadata=_opt("ball: observations per trajectory"))
    ball_noise: float = field(default=0.02, metadata=_opt("ball: observation noise (m)"))
    ball_seed: int = field(default=0, metadata=_opt("ball: simulation seed"))


def _parse_quantiles(text: str) -> list[float]:
    try:
        levels = sorted(float(q) for q in text.split(",") if q.strip())
    except ValueError:
        raise DataError(f"quantiles must be numbers like 0.1,0.5,0.9; got {text!r}") from None
    if not levels or any(not 0.0 < q < 1.0 for q in levels) or len(set(levels)) != len(levels):
        raise DataError(f"quantiles must be distinct levels in (0, 1); got {text!r}")
    return levels
