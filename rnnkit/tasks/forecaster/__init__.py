"""Forecasting numeric sequences: "given its past positions, where will the ball go next?"

Owns the forecasting task end to end: the config dataclasses, data preparation (a CSV/TSV series
split in time, or simulated ball trajectories split by trajectory), the recurrent
:class:`Forecaster`, its training task for :func:`rnnkit.train.fit`, inference
(:meth:`Forecaster.forecast`), the baselines every forecast is compared with, and the
``rnnkit forecast`` report.

**Model.** All values are normalised with statistics of the training part only
(z = (f(x) − μ) / σ, see :class:`rnnkit.data.series.Normalizer`). A recurrent encoder reads the
last ``window`` steps z_{t−L+1..t}; a linear head on its state h_t gives, for each of S output
steps and C columns, K numbers:

* ``head="point"`` (K = 1): ẑ, trained with the mean squared error;
* ``head="gaussian"`` (K = 2): the mean μ and log σ (σ = softplus(s) + 10⁻³ before rescaling),
  trained with the negative log likelihood ½ log 2π + log σ + (z − μ)² / (2σ²);
* ``head="quantile"`` (K = Q): the τ_k-quantiles q̂_k, trained with the pinball loss
  ρ_τ(u) = max(τ·u, (τ − 1)·u), u = z − q̂_τ, averaged over the levels. Crossed quantiles are
  sorted at inference (monotone rearrangement).

With ``residual`` the location outputs are offsets from the last input, ẑ_{t+h} = z_t + δ_h, so an
untrained model (zero head) is exactly persistence. Options on the way in:

* ``differences``: the encoder also reads z_t − z_{t−1} (a velocity, for trajectories);
* ``window_norm`` (RevIN-style, Kim et al. 2022): inputs are rescaled per window,
  x_t = (z_t − m_t) / s_t, and outputs mapped back, ẑ = x̂·s_t + m_t (σ ← σ·s_t), which makes the
  model indifferent to the level and amplitude of a window — what a series whose amplitude
  drifts (sunspot cycles) needs. ``prefix``: m, s are the mean and standard deviation of the
  window's first ``burn_in`` steps (never scored); ``running``: of z_0 … z_t at each position t,
  updated with fed-back values during a rollout. Both are causal; s ≥ 0.1;
* ``linear_lags`` p: a linear path over x_t … x_{t−p+1} added to the head's locations (LSTNet's
  autoregressive "highway", Lai et al. 2018), initialised at zero.

Multi-step forecasts come from one of two strategies (``--strategy``):

* ``recursive`` (S = 1): one step ahead, then rolled out by feeding each prediction back as the
  next input, x̂_{t+k+1} = F(z_≤t, x̂_{t+1..t+k}). Trained with teacher forcing at every position
  t ≥ ``burn_in`` of the window, plus (``rollout_weight`` w > 0) w × the loss of the H-step
  free-running rollout from the window's end, back-propagated through the fed-back predictions.
  With w > 0 the distribution the head gives at rollout step h is trained against the value h
  steps ahead, so the interval is read from it; with w = 0 it is a one-step distribution and the
  interval comes from Monte-Carlo sample paths (each step's draw fed back);
* ``direct`` (S = H): one head output per horizon 1…H from h_t, trained at every position; the
  interval at horizon h is μ_h ± Φ⁻¹((1 + level)/2)·σ_h or the interpolated quantiles.

**Baselines**, computed on the very same windows: persistence ẑ_{t+h} = z_t; seasonal naive
ẑ_{t+h} = z_{t+h−s⌈h/s⌉} (``season`` s); AR(p), z_t = c + Σ_{i≤p} A_i z_{t−i} fitted by least
squares on the training part (a VAR for several columns), p ∈ 1…``max_ar_order`` chosen by the
validation mean squared error over horizons 1…H, forecasts rolled out recursively.
"""

from __future__ import annotations

from rnnkit.tasks.common.recurrent import LAYERS
from rnnkit.tasks.forecaster.baselines import (
    ARModel,
    compare_methods,
    format_table,
    persistence,
    seasonal_naive,
    select_ar_order,
)
from rnnkit.tasks.forecaster.config import BALL, ForecasterConfig, ForecasterData
from rnnkit.tasks.forecaster.losses import gaussian_nll, quantile_loss
from rnnkit.tasks.forecaster.model import Forecaster, ForecastState, autoregressive_rollout
from rnnkit.tasks.forecaster.report import forecast_report, format_report
from rnnkit.tasks.forecaster.task import TASK, ForecastTraining
from rnnkit.tasks.forecaster.windows import (
    PreparedData,
    Segment,
    Windows,
    make_windows,
    prepare_data,
)

__all__ = [
    "ARModel",
    "autoregressive_rollout",
    "BALL",
    "compare_methods",
    "forecast_report",
    "Forecaster",
    "ForecasterConfig",
    "ForecasterData",
    "ForecastState",
    "ForecastTraining",
    "format_report",
    "format_table",
    "gaussian_nll",
    "LAYERS",
    "make_windows",
    "persistence",
    "prepare_data",
    "PreparedData",
    "quantile_loss",
    "seasonal_naive",
    "Segment",
    "select_ar_order",
    "TASK",
    "Windows",
]
