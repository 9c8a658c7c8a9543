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

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.config import field_meta as _opt
from rnnkit.data.batching import sliding_windows
from rnnkit.data.series import (
    MISSING_MODES,
    TRANSFORMS,
    Normalizer,
    Series,
    causal_fill,
    chronological_split,
    date_axis,
    extend_dates,
    read_series,
)
from rnnkit.errors import DataError
from rnnkit.layers import GRU, LSTM, RNN
from rnnkit.tasks.base import Output
from rnnkit.train import IndependentBatches

__all__ = [
    "ARModel",
    "Forecaster",
    "ForecasterConfig",
    "ForecasterData",
    "ForecastTraining",
    "PreparedData",
    "TASK",
    "autoregressive_rollout",
    "compare_methods",
    "format_report",
    "format_table",
    "forecast_report",
    "gaussian_nll",
    "persistence",
    "prepare_data",
    "quantile_loss",
    "seasonal_naive",
    "select_ar_order",
]

log = logging.getLogger(__name__)

LAYERS = {"lstm": LSTM, "gru": GRU, "rnn": RNN}
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


# ---------------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------------
def _masked_mean(loss: Tensor, mask: Tensor) -> Tensor:
    mask = mask.to(loss.dtype)
    return (loss * mask).sum() / mask.sum().clamp_min(1.0)


def quantile_loss(pred: Tensor, target: Tensor, quantiles: Tensor | list[float]) -> Tensor:
    """Pinball loss per element, averaged over the levels: ``pred (..., Q)``, ``target (...)``.

    ρ_τ(u) = max(τ·u, (τ − 1)·u) with u = y − q̂_τ: under-prediction costs τ per unit,
    over-prediction 1 − τ, so the minimiser is the τ-quantile. Returns shape ``target.shape``.
    """
    tau = torch.as_tensor(quantiles, dtype=pred.dtype, device=pred.device)
    u = target.unsqueeze(-1) - pred  # (..., Q)
    return torch.maximum(tau * u, (tau - 1) * u).mean(-1)


def gaussian_nll(mean: Tensor, sigma: Tensor, target: Tensor) -> Tensor:
    """−log N(y; μ, σ²) = ½ log 2π + log σ + (y − μ)² / (2σ²), per element."""
    return 0.5 * math.log(2 * math.pi) + torch.log(sigma) + 0.5 * ((target - mean) / sigma) ** 2


# ---------------------------------------------------------------------------------------------
# Rollout and the model
# ---------------------------------------------------------------------------------------------
def autoregressive_rollout(
    step: Callable[[Tensor, Any], tuple[Tensor, Any]], history: Tensor, horizon: int
) -> Tensor:
    """Multi-step forecast by feeding predictions back.

    ``step(x (B, T, C), state) -> (next value (B, C), state)`` reads ``x`` after ``state`` and
    predicts the value after it. The first call reads ``history (B, L, C)``; each later call reads
    only the previous prediction: x̂_{t+k+1} = step(x̂_{t+k}, state_{t+k}). Returns
    ``(B, horizon, C)``. A ``step`` that returns its last input gives persistence.
    """
    nxt, state = step(history, None)
    out = [nxt]
    for _ in range(horizon - 1):
        nxt, state = step(nxt.unsqueeze(1), state)
        out.append(nxt)
    return torch.stack(out, 1)  # (B, H, C)


class ForecastState(NamedTuple):
    """What a forecaster carries between calls: the recurrent state and the window's scaling."""

    rnn: Any
    stats: tuple  # window scaling: (mean, scale) for prefix, sums (n, Σz, Σz²) for running
    lags: Tensor  # (B, n, C) the last inputs, for differences and the linear path


class Forecaster(nn.Module):
    """Recurrent encoder → linear head over (steps, columns, outputs); see the module docstring.

    The normaliser's μ and σ are buffers (``norm_mean``, ``norm_std``), so they are saved in
    ``model.safetensors`` with the weights; ``data_config`` (columns, transform, window, …) comes
    from the run's ``config.json``.
    """

    def __init__(self, config: ForecasterConfig, data_config: ForecasterData | None = None):
        super().__init__()
        c = config
        if c.input_size < 1:
            raise ValueError(f"input_size must be >= 1 (number of columns); got {c.input_size}")
        if c.horizon < 1:
            raise DataError(f"horizon must be >= 1; got {c.horizon}")
        self.config = config
        self.data_config = data_config or ForecasterData()
        self.levels = _parse_quantiles(c.quantiles) if c.head == "quantile" else []
        names = self.data_config.columns
        self.columns = names.split(",") if names else [str(i + 1) for i in range(c.input_size)]
        self.steps = c.horizon if c.strategy == "direct" else 1  # S
        self.outputs = {"point": 1, "gaussian": 2, "quantile": len(self.levels)}[c.head]  # K
        self.rnn = LAYERS[c.cell](
            c.input_size * (2 if c.differences else 1),
            c.hidden_size,
            num_layers=c.num_layers,
            batch_first=True,
            dropout=c.dropout if c.num_layers > 1 else 0.0,
        )
        self.drop = nn.Dropout(c.dropout)
        self.head = nn.Linear(c.hidden_size, self.steps * c.input_size * self.outputs)
        if c.linear_lags < 0:
            raise DataError(f"linear_lags must be >= 0; got {c.linear_lags}")
        if c.linear_lags:  # LSTNet's autoregressive highway, starting at zero
            self.linear = nn.Linear(c.linear_lags * c.input_size, self.steps * c.input_size)
            nn.init.zeros_(self.linear.weight)
            nn.init.zeros_(self.linear.bias)
        with torch.no_grad():  # start near persistence (residual) or near the mean
            self.head.weight.mul_(0.1)
            self.head.bias.zero_()
        self.register_buffer("norm_mean", torch.zeros(c.input_size, dtype=torch.float64))
        self.register_buffer("norm_std", torch.ones(c.input_size, dtype=torch.float64))
        self.register_buffer("quantile_levels", torch.tensor(self.levels or [0.5]))

    # -- normalisation --------------------------------------------------------------------------
    def set_normalizer(self, normalizer: Normalizer) -> None:
        self.norm_mean.copy_(torch.as_tensor(normalizer.mean))
        self.norm_std.copy_(torch.as_tensor(normalizer.std))

    @property
    def normalizer(self) -> Normalizer:
        return Normalizer(
            self.norm_mean.cpu().numpy(), self.norm_std.cpu().numpy(), self.data_config.transform
        )

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    # -- core -----------------------------------------------------------------------------------
    def forward(self, inputs: Tensor, state=None, targets: Tensor | None = None) -> Output:
        """``inputs (B, T, C)`` normalised → ``Output(logits (B, T, S, C, K), loss, state)``.

        ``logits`` are the head's distribution parameters in normalised units, mapped back from
        window units: the location(s) (offset by the last input when ``residual``) and, for the
        Gaussian head, log σ. ``state`` is a :class:`ForecastState`; passing it back continues the
        sequence (that is how a rollout feeds predictions). ``targets (B, T, S, C)`` (NaN = not
        observed) give ``loss``.
        """
        if inputs.dim() != 3 or inputs.shape[-1] != self.config.input_size:
            raise ValueError(
                f"expected inputs of shape (batch, steps, {self.config.input_size}); "
                f"got {tuple(inputs.shape)}"
            )
        B, T, C = inputs.shape
        p = self.config.linear_lags
        need = max(p - 1, 1 if self.config.differences else 0)  # past inputs to remember
        if state is None:  # a fresh window; the past before it repeats its first value
            state = ForecastState(
                None, self._initial_stats(inputs), inputs[:, :1].expand(B, need, C)
            )
        mean, scale, stats = self._scaling(inputs, state.stats)  # (B, 1 or T, C) each
        seen = torch.cat([state.lags, inputs], 1)  # (B, need + T, C) normalised, not rescaled
        x = (inputs - mean) / scale  # (B, T, C) window units (global units without norm)
        features = x
        if self.config.differences:  # velocity-like input: (z_t − z_{t−1}) / scale
            features = torch.cat([x, (inputs - seen[:, need - 1 : need - 1 + T]) / scale], -1)
        y, rnn_state = self.rnn(features, state.rnn)  # (B, T, H)
        raw = self.head(self.drop(y)).view(B, T, self.steps, C, self.outputs)  # (B, T, S, C, K)
        if p:  # linear path over x_t, x_{t−1}, …, x_{t−p+1}
            past = seen[:, need - (p - 1) :].unfold(1, p, 1)  # (B, T, C, p) oldest first
            past = ((past - mean[..., None]) / scale[..., None]).flip(-1).reshape(B, T, C * p)
            raw = raw + self.linear(past).view(B, T, self.steps, C, 1)
        lags = seen[:, seen.shape[1] - need :]
        m, s = mean[:, :, None, :, None], scale[:, :, None, :, None]  # (B, 1 or T, 1, C, 1)
        last = x[:, :, None, :, None] if self.config.residual else 0.0  # (B, T, 1, C, 1)
        if self.config.head == "gaussian":
            log_sigma = torch.log(F.softplus(raw[..., 1:]) + 1e-3) + torch.log(s)
            raw = torch.cat([(raw[..., :1] + last) * s + m, log_sigma], -1)
        else:
            raw = (raw + last) * s + m
        state = ForecastState(rnn_state, stats, lags)
        loss = None if targets is None else self.loss(raw, targets)
        return Output(raw, loss, state)

    def loss(self, params: Tensor, targets: Tensor, weight: Tensor | None = None) -> Tensor:
        """Mean head loss over observed targets: ``params (..., C, K)``, ``targets (..., C)``;
        ``weight`` (broadcastable bool) drops positions, NaN targets are never scored."""
        mask = torch.isfinite(targets)
        if weight is not None:
            mask = mask & weight
        y = torch.nan_to_num(targets)
        head = self.config.head
        if head == "point":
            per = (params[..., 0] - y) ** 2
        elif head == "gaussian":
            per = gaussian_nll(params[..., 0], self.sigma(params), y)
        else:
            per = quantile_loss(params, y, self.quantile_levels)
        return _masked_mean(per, mask)

    def sigma(self, params: Tensor) -> Tensor:
        """Gaussian head: σ (normalised units) from its logarithm, the second parameter."""
        return torch.exp(params[..., 1])

    def _initial_stats(self, inputs: Tensor) -> tuple[Tensor, ...]:
        """The scaling state of a fresh window: ``prefix`` → (mean, scale) of its first
        ``burn_in`` steps (scale ≥ 0.1); ``running`` → zero sums (n, Σz, Σz²); ``none`` → ()."""
        mode = self.config.window_norm
        if mode == "prefix":
            ref = inputs[:, : max(1, min(self.data_config.burn_in, inputs.shape[1]))]  # (B, k, C)
            mean = ref.mean(1, keepdim=True)  # (B, 1, C)
            return mean, ref.std(1, unbiased=False, keepdim=True).clamp_min(0.1)
        if mode == "running":
            zero = inputs.new_zeros(inputs.shape[0], 1, inputs.shape[2])
            return zero, zero, zero
        return ()

    def _scaling(self, inputs: Tensor, stats: tuple[Tensor, ...]):
        """(mean, scale, new stats) for ``inputs``: fixed for ``prefix``; for ``running`` the
        mean and standard deviation of every step so far, z_0 … z_t, at each position t."""
        mode = self.config.window_norm
        if mode == "prefix":
            return stats[0], stats[1], stats
        if mode == "running":
            n0, s1, s2 = stats
            T = inputs.shape[1]
            n = n0 + torch.arange(1, T + 1, device=inputs.device, dtype=inputs.dtype)[:, None]
            c1 = s1 + inputs.cumsum(1)  # (B, T, C)
            c2 = s2 + (inputs**2).cumsum(1)
            mean = c1 / n
            scale = (c2 / n - mean**2).clamp_min(0.0).sqrt().clamp_min(0.1)
            return mean, scale, (n[:, -1:].expand_as(n0), c1[:, -1:], c2[:, -1:])
        ones = inputs.new_ones(1, 1, inputs.shape[2])
        return ones * 0.0, ones, stats

    def point(self, params: Tensor) -> Tensor:
        """The point forecast of ``params (..., K)``: ẑ, μ, or the median (interpolated)."""
        if self.config.head != "quantile":
            return params[..., 0]
        return self._quantile_at(params, 0.5)

    def _quantile_at(self, params: Tensor, level: float) -> Tensor:
        """Piecewise-linear interpolation of the sorted quantile outputs at ``level``, extended
        linearly beyond the outer levels (constant with a single level)."""
        q = params.sort(-1).values
        tau = self.quantile_levels.tolist()
        if len(tau) == 1:
            return q[..., 0]
        i = int(np.clip(np.searchsorted(tau, level) - 1, 0, len(tau) - 2))
        w = (level - tau[i]) / (tau[i + 1] - tau[i])
        return q[..., i] + w * (q[..., i + 1] - q[..., i])

    def _sample(self, params: Tensor, generator: torch.Generator) -> Tensor:
        """One draw per element: N(μ, σ²), or the quantile function at u ~ U(0.005, 0.995)."""
        if self.config.head == "gaussian":
            noise = torch.randn(params.shape[:-1], generator=generator, device=params.device)
            return params[..., 0] + self.sigma(params) * noise.to(params.dtype)
        if self.config.head == "point":
            return params[..., 0]
        q = params.sort(-1).values
        tau = self.quantile_levels
        u = torch.rand(params.shape[:-1], generator=generator, device=params.device) * 0.99 + 0.005
        if tau.numel() == 1:
            return q[..., 0]
        i = (torch.searchsorted(tau, u.contiguous()) - 1).clamp(0, tau.numel() - 2)
        lo, hi = tau[i], tau[i + 1]
        q_lo = q.gather(-1, i.unsqueeze(-1)).squeeze(-1)
        q_hi = q.gather(-1, (i + 1).unsqueeze(-1)).squeeze(-1)
        return q_lo + (u - lo) / (hi - lo) * (q_hi - q_lo)

    def rollout(
        self, history: Tensor, horizon: int, choose: Callable[[Tensor], Tensor] | None = None
    ) -> tuple[Tensor, Tensor]:
        """Recursive strategy: ``history (B, L, C)`` normalised → (fed-back path (B, H, C),
        parameters at each step (B, H, C, K)). ``choose`` turns parameters into the value fed
        back (default :meth:`point`)."""
        choose = choose or self.point
        params: list[Tensor] = []

        def step(x: Tensor, state):
            out = self(x, state)
            p = out.logits[:, -1, 0]  # (B, C, K)
            params.append(p)
            return choose(p), out.state

        path = autoregressive_rollout(step, history, horizon)
        return path, torch.stack(params, 1)

    # -- inference ------------------------------------------------------------------------------
    @torch.no_grad()
    def forecast_normalised(
        self,
        history: Tensor,
        horizon: int | None = None,
        level: float | None = 0.8,
        samples: int = 200,
        seed: int = 0,
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """``history (B, L, C)`` normalised → (point (B, H, C), lower, upper) normalised; the
        interval bounds are ``None`` for the point head or ``level=None``."""
        self.eval()
        H = self.config.horizon if horizon is None else horizon
        if H < 1:
            raise DataError(f"horizon must be >= 1; got {H}")
        if self.config.strategy == "direct":
            if H > self.config.horizon:
                raise DataError(
                    f"this model forecasts directly up to {self.config.horizon} steps; asked for "
                    f"{H} (train with --strategy recursive to roll out further)"
                )
            params = self(history).logits[:, -1, :H]  # (B, H, C, K)
        else:
            _, params = self.rollout(history, H)  # (B, H, C, K) along the fed-back path
        point = self.point(params)
        if level is None or self.config.head == "point":
            return point, None, None
        if self.config.strategy == "direct" or self.config.rollout_weight > 0:
            return (point, *self._interval(params, level))
        # teacher-forced one-step distributions: propagate them by sampling paths
        gen = torch.Generator(device=history.device)
        gen.manual_seed(seed)
        B = history.shape[0]
        many = history.repeat_interleave(samples, 0)  # (B·S, L, C)
        paths, _ = self.rollout(many, H, choose=lambda p: self._sample(p, gen))
        paths = paths.view(B, samples, H, -1)  # (B, S, H, C)
        probs = torch.tensor([0.5 - level / 2, 0.5 + level / 2], dtype=paths.dtype)
        lower, upper = torch.quantile(paths, probs.to(paths.device), dim=1)
        return point, lower, upper

    def _interval(self, params: Tensor, level: float) -> tuple[Tensor, Tensor]:
        """Central ``level`` interval of each predicted distribution: μ ± Φ⁻¹((1 + level)/2)·σ,
        or the interpolated quantiles at (1 ∓ level)/2."""
        if self.config.head == "gaussian":
            half = _normal_quantile(0.5 + level / 2) * self.sigma(params)
            return params[..., 0] - half, params[..., 0] + half
        return self._quantile_at(params, 0.5 - level / 2), self._quantile_at(
            params, 0.5 + level / 2
        )

    def prepare_history(self, history: np.ndarray | Tensor) -> Tensor:
        """Original units ``(T, C)`` or ``(B, T, C)`` → the last ``window`` steps, normalised,
        missing values carried forward (then the training mean)."""
        x = np.asarray(history, dtype=np.float64)
        if x.ndim == 2:
            x = x[None]
        if x.ndim != 3 or x.shape[-1] != self.config.input_size:
            raise DataError(
                f"history must have shape (steps, {self.config.input_size}) or "
                f"(batch, steps, {self.config.input_size}); got {x.shape}"
            )
        x = x[:, -self.data_config.window :]
        z = np.stack([causal_fill(self.normalizer(s)) for s in x])
        return torch.from_numpy(np.nan_to_num(z, nan=0.0)).float().to(self.device)

    def forecast(
        self,
        history: np.ndarray | Tensor,
        horizon: int | None = None,
        level: float | None = 0.8,
        samples: int = 200,
        seed: int = 0,
    ) -> dict[str, np.ndarray | None]:
        """Forecast the next ``horizon`` steps after ``history`` (original units).

        ``history`` is ``(T, C)`` (one series) or ``(B, T, C)``; only its last ``window`` steps
        are read. Returns ``{"mean", "lower", "upper"}`` arrays of shape ``(H, C)`` (or
        ``(B, H, C)``) in original units; the bounds of the central ``level`` interval are
        ``None`` for a point head. ``samples`` Monte-Carlo paths give the recursive strategy's
        interval (reproducible with ``seed``).
        """
        single = np.ndim(history) == 2
        z = self.prepare_history(history)
        point, lower, upper = self.forecast_normalised(z, horizon, level, samples, seed)
        norm = self.normalizer

        def back(t: Tensor | None):
            if t is None:
                return None
            v = norm.inverse(t.double().cpu().numpy())
            return v[0] if single else v

        return {"mean": back(point), "lower": back(lower), "upper": back(upper)}


def _normal_quantile(p: float) -> float:
    """Φ⁻¹(p) of the standard normal."""
    return (
        math.sqrt(2.0) * torch.special.erfinv(torch.tensor(2 * p - 1, dtype=torch.float64)).item()
    )


# ---------------------------------------------------------------------------------------------
# Data: segments, windows
# ---------------------------------------------------------------------------------------------
@dataclass
class Segment:
    """A contiguous stretch of one series in normalised units: ``inputs (T, C)`` causally
    filled (no NaN), ``targets (T, C)`` NaN where unobserved. ``start`` is the row of its first
    step in the source series; ``series`` which series (trajectory) it belongs to."""

    inputs: np.ndarray
    targets: np.ndarray
    start: int
    series: int = 0


@dataclass
class Windows:
    """Forecast windows of ``L + H`` steps: ``inputs``/``targets (M, L + H, C)`` (float32,
    normalised), and for each its series and the row of its forecast origin (last input)."""

    inputs: Tensor
    targets: Tensor
    series: np.ndarray
    origin: np.ndarray
    window: int

    def __len__(self) -> int:
        return self.inputs.shape[0]

    @property
    def history(self) -> Tensor:
        return self.inputs[:, : self.window]

    @property
    def future(self) -> Tensor:
        return self.targets[:, self.window :]


@dataclass
class PreparedData:
    """The series split into train / valid / test segments, with the normaliser fitted on the
    training part, and where it came from (``series`` for a file, ``ball`` when simulated)."""

    columns: list[str]
    normalizer: Normalizer
    parts: dict[str, list[Segment]]
    description: str
    series: Series | None = None
    ball: Any = None

    def windows(self, part: str, window: int, horizon: int, stride: int = 1) -> Windows:
        """Every ``window + horizon`` stretch of the part's segments, ``stride`` apart."""
        return make_windows(self.parts[part], window, horizon, stride, len(self.columns))


def make_windows(
    segments: list[Segment], window: int, horizon: int, stride: int, num_columns: int
) -> Windows:
    """Sliding ``(window + horizon)``-step windows over each segment (none cross segments)."""
    ins, tgs, ser, org = [], [], [], []
    for seg in segments:
        if seg.inputs.shape[0] < window + horizon:
            continue
        x, xf = sliding_windows(torch.from_numpy(seg.inputs), window, horizon, stride)
        y, yf = sliding_windows(torch.from_numpy(seg.targets), window, horizon, stride)
        ins.append(torch.cat([x, xf], 1))  # (m, L + H, C)
        tgs.append(torch.cat([y, yf], 1))
        m = x.shape[0]
        ser.append(np.full(m, seg.series))
        org.append(seg.start + window - 1 + stride * np.arange(m))
    if not ins:
        empty = torch.zeros(0, window + horizon, num_columns)
        return Windows(empty, empty.clone(), np.zeros(0, int), np.zeros(0, int), window)
    return Windows(
        torch.cat(ins).float(),
        torch.cat(tgs).float(),
        np.concatenate(ser),
        np.concatenate(org),
        window,
    )


def _segment(norm: Normalizer, values: np.ndarray, start: int, series: int = 0) -> Segment:
    targets = norm(values)
    inputs = np.nan_to_num(causal_fill(targets), nan=0.0)  # before the first value: the mean
    return Segment(inputs, targets, start, series)


def prepare_data(
    data: ForecasterData, window: int, normalizer: Normalizer | None = None
) -> PreparedData:
    """Read (or simulate) the data and split it; the normaliser sees the training part only.

    A file is split in time: rows [0, a) train, [a, b) validation, [b, N) test; the validation
    and test segments start ``window`` rows early so their first forecast origin has a full
    history (inputs may come from the previous part; targets never do). Ball trajectories are
    split by trajectory, in order. A given ``normalizer`` (a trained model's) is used instead of
    fitting one.
    """
    if window < 1:
        raise DataError(f"window must be >= 1; got {window}")
    if data.data == BALL:
        from rnnkit.datasets import ball

        traj = ball(
            n=data.ball_trajectories,
            steps=data.ball_steps,
            noise=data.ball_noise,
            seed=data.ball_seed,
        )
        n = len(traj)
        n_test = int(round(n * data.test_fraction))
        n_valid = int(round(n * data.valid_fraction))
        a, b = n - n_valid - n_test, n - n_test
        if a < 1:
            raise DataError(f"{n} ball trajectories leave none for training")
        norm = normalizer or Normalizer.fit(traj.observed[:a].reshape(-1, 2), data.transform)
        parts = {
            name: [_segment(norm, traj.observed[i], 0, i) for i in range(lo, hi)]
            for name, lo, hi in (("train", 0, a), ("valid", a, b), ("test", b, n))
        }
        text = (
            f"ball: {n} simulated trajectories × {data.ball_steps} steps (seed {data.ball_seed}, "
            f"noise {data.ball_noise} m): {a} train, {b - a} validation, {n - b} test"
        )
        return PreparedData(["x", "y"], norm, parts, text, ball=traj)

    series = read_series(data.data, data.columns, data.date_column, data.missing)
    values = series.values
    N = len(series)
    a, b = chronological_split(N, data.valid_fraction, data.test_fraction)
    norm = normalizer or Normalizer.fit(values[:a], data.transform)  # training rows only
    va, ta = max(0, a - window), max(0, b - window)
    parts = {
        "train": [_segment(norm, values[:a], 0)],
        "valid": [_segment(norm, values[va:b], va)] if b > a else [],
        "test": [_segment(norm, values[ta:], ta)] if N > b else [],
    }
    text = f"{series.describe()}; split in time: {a} train, {b - a} validation, {N - b} test rows"
    if series.dates:
        text += f" (test from {series.dates[b] if b < N else '-'})"
    return PreparedData(series.columns, norm, parts, text, series=series)


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


# ---------------------------------------------------------------------------------------------
# Training task
# ---------------------------------------------------------------------------------------------
class ForecastTraining(IndependentBatches):
    """Windows of ``L + H`` steps, shuffled per epoch with a seeded generator (so a resumed run
    sees the same batches). The loss is the head's loss at every window position t ≥ ``burn_in``
    (targets z_{t+1..t+S}) plus, for a recursive model with ``rollout_weight`` w > 0,
    w × the loss of the H-step free-running rollout from the end of the history."""

    tokens_name = "window"

    def __init__(self, model: Forecaster, data: PreparedData, batch_size: int, seed: int = 0):
        cfg, dc = model.config, model.data_config
        self.model = model
        self.data = data
        self.batch_size = batch_size
        self.seed = seed
        self.window, self.horizon = dc.window, cfg.horizon
        self.burn_in = min(dc.burn_in, dc.window - 1)
        self.train = data.windows("train", dc.window, cfg.horizon, dc.stride)
        self.valid = data.windows("valid", dc.window, cfg.horizon, 1)
        if len(self.train) == 0:
            raise DataError(
                f"no training window: the training part is shorter than window {dc.window} + "
                f"horizon {cfg.horizon}"
            )
        if len(self.valid) == 0:
            log.warning("no validation window fits; evaluating on the training windows")
            self.valid = self.train
        self._order = torch.arange(len(self.train))
        self._epoch: int | None = None
        self._persistence_mae: float | None = None

    def batches_per_epoch(self) -> int:
        return math.ceil(len(self.train) / self.batch_size)

    def start_epoch(self, epoch: int) -> None:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        self._order = torch.randperm(len(self.train), generator=gen)
        self._epoch = epoch

    def batch(self, epoch: int, index: int):
        if self._epoch != epoch:  # a resumed run starts mid-epoch without start_epoch()
            self.start_epoch(epoch)
        idx = self._order[index * self.batch_size : (index + 1) * self.batch_size]
        return self.train.inputs[idx], self.train.targets[idx]

    def training_loss(self, model: Forecaster, batch) -> tuple[Tensor, int]:
        inputs, targets = (t.to(model.device) for t in batch)
        L, H = self.window, self.horizon
        out = model(inputs[:, :L])
        S = model.steps
        # targets of position t: z_{t+1 .. t+S}  → (B, L, S, C)
        future = targets[:, 1 : L + S].unfold(1, S, 1).permute(0, 1, 3, 2)
        positions = torch.arange(L, device=inputs.device) >= self.burn_in
        loss = model.loss(out.logits, future, positions[None, :, None, None])
        w = model.config.rollout_weight
        if model.config.strategy == "recursive" and w > 0 and H > 1:
            _, params = model.rollout(inputs[:, :L], H)
            loss = loss + w * model.loss(params, targets[:, L : L + H])
        return loss, inputs.shape[0]

    @torch.no_grad()
    def evaluate(self, model: Forecaster) -> dict[str, float]:
        """``loss``: mean squared error of the H-step point forecast on the validation windows
        (normalised units); ``mae``/``rmse`` in original units; ``skill`` = MAE / persistence's."""
        model.eval()
        norm = model.normalizer
        H = self.horizon
        sampled = model.config.strategy == "recursive" and model.config.rollout_weight == 0
        point, lower, upper = model.forecast_normalised(  # no Monte-Carlo paths here
            self.valid.history.to(model.device),
            H,
            None if sampled else 0.8,
        )
        future = self.valid.future.to(point.device)
        err = (point - future)[torch.isfinite(future)]
        truth = norm.inverse(self.valid.future.double().numpy())
        pred = norm.inverse(point.double().cpu().numpy())
        e = _errors(pred, truth)
        if self._persistence_mae is None:
            base = norm.inverse(persistence(self.valid.history, H).double().numpy())
            self._persistence_mae = float(np.mean(_errors(base, truth)["mae"]))
        metrics = {
            "loss": float((err**2).mean()),
            "mae": float(np.mean(e["mae"])),
            "rmse": float(np.sqrt(np.mean(np.square(e["rmse"])))),
            "skill": float(np.mean(e["mae"])) / max(self._persistence_mae, 1e-12),
        }
        if lower is not None:
            ok = torch.isfinite(future)
            inside = (future >= lower) & (future <= upper)
            metrics["coverage"] = float(inside[ok].float().mean())
        return metrics


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
    fc = model.forecast(history, H, level, samples, seed)
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


# ---------------------------------------------------------------------------------------------
# Task registry entry
# ---------------------------------------------------------------------------------------------
class _ForecastTask:
    """Forecast numeric series (CSV/TSV columns or simulated ball trajectories)."""

    name = "forecast"
    sections = {"model": ForecasterConfig, "data": ForecasterData}
    # with the default data (the ball) this is acceptance run 1 of benchmarks/forecast.py
    defaults = {"train": {"max_steps": 1500, "eval_every": 250, "batch_size": 64}}

    def build(self, configs: dict[str, Any], train_cfg, device):
        model_cfg: ForecasterConfig = configs["model"]
        data_cfg: ForecasterData = configs["data"]
        if model_cfg.head == "quantile":
            _parse_quantiles(model_cfg.quantiles)
        prepared = prepare_data(data_cfg, data_cfg.window)
        # resolved values go into config.json so rnnkit.load rebuilds the same model
        data_cfg.columns = ",".join(prepared.columns)
        model_cfg.input_size = len(prepared.columns)
        log.info("data: %s", prepared.description)
        model = Forecaster(model_cfg, data_cfg).to(device)
        model.set_normalizer(prepared.normalizer)
        training = ForecastTraining(model, prepared, train_cfg.batch_size, train_cfg.seed)
        self._log_baselines(model, training, prepared)
        return model, training

    @staticmethod
    def _log_baselines(model: Forecaster, training: ForecastTraining, prepared: PreparedData):
        valid = training.valid
        H = model.config.horizon
        truth = model.normalizer.inverse(valid.future.double().numpy())
        preds = {"persistence": persistence(valid.history, H)}
        season = model.data_config.season
        if season and valid.window >= season:
            preds[f"seasonal naive ({season})"] = seasonal_naive(valid.history, H, season)
        try:
            ar, _ = select_ar_order(
                prepared.parts["train"], valid, H, model.data_config.max_ar_order
            )
            preds[f"AR({ar.order})"] = ar.forecast(valid.history, H)
        except DataError as e:
            log.warning("no AR baseline: %s", e)
        for name, p in preds.items():
            e = _errors(model.normalizer.inverse(p.double().numpy()), truth)
            log.info(
                "baseline %s: validation MAE %.4g (mean over horizons 1..%d)",
                name,
                np.mean(e["mae"]),
                H,
            )

    def restore(self, saved: dict[str, Any], vocab, device, train_cfg=None, with_data=False):
        from rnnkit.config import from_dict

        model_cfg = from_dict(ForecasterConfig, saved["model"])
        data_cfg = from_dict(ForecasterData, saved["data"])
        model = Forecaster(model_cfg, data_cfg).to(device)
        training = None
        if with_data:
            prepared = prepare_data(data_cfg, data_cfg.window)
            model.set_normalizer(prepared.normalizer)
            seed = train_cfg.seed if train_cfg is not None else 0
            batch = train_cfg.batch_size if train_cfg is not None else 32
            training = ForecastTraining(model, prepared, batch, seed)
        return model, training


TASK = _ForecastTask()
