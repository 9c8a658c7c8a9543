"""The recurrent :class:`Forecaster`: encoder, point/Gaussian/quantile heads, recursive and direct rollouts."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.data.series import (
    Normalizer,
    causal_fill,
)
from rnnkit.errors import DataError
from rnnkit.inference import ForecastRequest, ForecastResult
from rnnkit.tasks.base import Output, TaskModel
from rnnkit.tasks.common.recurrent import recurrent_for
from rnnkit.tasks.forecaster.config import ForecasterData, _parse_quantiles
from rnnkit.tasks.forecaster.losses import _masked_mean, gaussian_nll, quantile_loss

if TYPE_CHECKING:
    from rnnkit.tasks.forecaster.config import ForecasterConfig


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


class Forecaster(TaskModel):
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
        self.rnn = recurrent_for(c, c.input_size * (2 if c.differences else 1))
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

    #: the requests :meth:`infer` answers
    answers = (ForecastRequest,)

    def answer(self, request: ForecastRequest) -> ForecastResult:
        """The forecast of a :class:`~rnnkit.inference.ForecastRequest` (its history's last
        window is read)."""
        r = request
        out = self.forecast(
            np.asarray(r.history, dtype=np.float64), r.horizon, r.level, r.samples, r.seed
        )

        def rows(a):
            return None if a is None else np.asarray(a, dtype=np.float64).tolist()

        level = r.level if out["lower"] is not None else None
        return ForecastResult(rows(out["mean"]), rows(out["lower"]), rows(out["upper"]), level)

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
