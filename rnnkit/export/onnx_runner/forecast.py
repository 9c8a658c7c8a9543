"""An exported forecaster (graph ``forecaster``): point forecasts and central intervals in the
original units, as ``Forecaster.forecast`` gives them."""

from __future__ import annotations

from typing import Any

import numpy as np

from .folder import ExportFolder


class ForecastMethods(ExportFolder):
    """The inference methods of an exported ``forecast`` model."""

    def _fc_run(self, inputs: np.ndarray, state: dict | None):
        """One forecaster graph call; a fresh window's state is built as ``Forecaster.forward``
        builds it (scaling statistics, lags repeating the first input)."""
        c = self.config["forecast"]
        B, T, C = inputs.shape
        if state is None:
            state = self.zero_state(B)  # h (and c): the recurrent part
            if c["window_norm"] == "prefix":
                ref = inputs[:, : max(1, min(c["burn_in"], T))]
                state["mean"] = ref.mean(1, keepdims=True)
                state["scale"] = np.maximum(ref.std(1, keepdims=True), 0.1).astype(np.float32)
            elif c["window_norm"] == "running":
                for n in ("n", "sum", "sum_sq"):
                    state[n] = np.zeros((B, 1, C), np.float32)
            state["lags"] = np.repeat(inputs[:, :1], c["need"], axis=1)
        out = self.run("forecaster", {"inputs": inputs.astype(np.float32), **state})
        return out["params"], {n: out[n + "_out"] for n in state}

    def _point(self, params: np.ndarray) -> np.ndarray:
        if self.config["forecast"]["head"] != "quantile":
            return params[..., 0]
        return self._quantile_at(params, 0.5)

    def _quantile_at(self, params: np.ndarray, level: float) -> np.ndarray:
        q, tau = np.sort(params, -1), self.config["forecast"]["levels"]
        if len(tau) == 1:
            return q[..., 0]
        i = int(np.clip(np.searchsorted(tau, level) - 1, 0, len(tau) - 2))
        w = (level - tau[i]) / (tau[i + 1] - tau[i])
        return q[..., i] + w * (q[..., i + 1] - q[..., i])

    def _sample(self, params: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        head = self.config["forecast"]["head"]
        if head == "gaussian":
            return params[..., 0] + np.exp(params[..., 1]) * rng.standard_normal(params.shape[:-1])
        if head == "point":
            return params[..., 0]
        q, tau = np.sort(params, -1), np.asarray(self.config["forecast"]["levels"])
        u = rng.random(params.shape[:-1]) * 0.99 + 0.005
        if tau.size == 1:
            return q[..., 0]
        i = np.clip(np.searchsorted(tau, u) - 1, 0, tau.size - 2)
        lo, hi = tau[i], tau[i + 1]
        q_lo = np.take_along_axis(q, i[..., None], -1)[..., 0]
        q_hi = np.take_along_axis(q, (i + 1)[..., None], -1)[..., 0]
        return q_lo + (u - lo) / (hi - lo) * (q_hi - q_lo)

    def _rollout(self, z: np.ndarray, horizon: int, choose) -> tuple[np.ndarray, np.ndarray]:
        """Recursive strategy: feed each step's chosen value back; (path, params per step)."""
        params, state, x, path = [], None, z, []
        for _ in range(horizon):
            out, state = self._fc_run(x, state)
            p = out[:, -1, 0]  # (B, C, K)
            params.append(p)
            nxt = choose(p).astype(np.float32)
            path.append(nxt)
            x = nxt[:, None]
        return np.stack(path, 1), np.stack(params, 1)

    def forecast(self, history, horizon=None, level=0.8, samples=200, seed=0) -> dict[str, Any]:
        """Forecast after ``history`` ((T, C) or (B, T, C), original units): ``mean`` and the
        central-``level`` interval's ``lower``/``upper`` in original units, as
        ``Forecaster.forecast``. Monte-Carlo intervals (recursive strategy trained without the
        rollout loss) draw from NumPy's generator, so they differ from torch's draws."""
        from statistics import NormalDist

        c = self.config["forecast"]
        x = np.asarray(history, dtype=np.float64)
        single = x.ndim == 2
        x = x[None] if single else x
        if x.ndim != 3 or x.shape[-1] != c["input_size"]:
            raise ValueError(
                f"history must have shape (steps, {c['input_size']}) or "
                f"(batch, steps, {c['input_size']}); got {x.shape}"
            )
        x = x[:, -c["window"] :]
        mean, std, transform = np.asarray(c["norm_mean"]), np.asarray(c["norm_std"]), c["transform"]

        def normalise(v):
            f = v if transform == "none" else (np.sqrt(v) if transform == "sqrt" else np.log1p(v))
            return (f - mean) / std

        def back(t):
            if t is None:
                return None
            y = np.asarray(t, np.float64) * std + mean
            if transform == "sqrt":
                y = np.square(np.maximum(y, 0.0))
            elif transform == "log1p":
                y = np.expm1(y)
            return y[0] if single else y

        z = np.stack([_causal_fill(normalise(s)) for s in x])
        z = np.nan_to_num(z, nan=0.0).astype(np.float32)
        H = c["horizon"] if horizon is None else horizon
        if H < 1:
            raise ValueError(f"horizon must be >= 1; got {H}")
        if c["strategy"] == "direct":
            if H > c["horizon"]:
                raise ValueError(f"this model forecasts directly up to {c['horizon']} steps")
            params = self._fc_run(z, None)[0][:, -1, :H]
        else:
            params = self._rollout(z, H, self._point)[1]
        point, lower, upper = self._point(params), None, None
        if level is not None and c["head"] != "point":
            if c["strategy"] == "direct" or c["rollout_weight"] > 0:
                if c["head"] == "gaussian":
                    half = NormalDist().inv_cdf(0.5 + level / 2) * np.exp(params[..., 1])
                    lower, upper = params[..., 0] - half, params[..., 0] + half
                else:
                    lower = self._quantile_at(params, 0.5 - level / 2)
                    upper = self._quantile_at(params, 0.5 + level / 2)
            else:
                rng = np.random.default_rng(seed)
                many = np.repeat(z, samples, axis=0)
                paths = self._rollout(many, H, lambda p: self._sample(p, rng))[0]
                paths = paths.reshape(z.shape[0], samples, H, -1)
                lower, upper = np.quantile(paths, [0.5 - level / 2, 0.5 + level / 2], axis=1)
        return {"mean": back(point), "lower": back(lower), "upper": back(upper)}


def _causal_fill(values: np.ndarray) -> np.ndarray:
    """Each NaN replaced by the last observed value above it in its column (time runs down)."""
    values = np.array(values, dtype=np.float64)
    n = values.shape[0]
    index = np.where(~np.isnan(values), np.arange(n)[:, None], -1)
    np.maximum.accumulate(index, axis=0, out=index)
    filled = values[np.maximum(index, 0), np.arange(values.shape[1])[None, :]]
    return np.where(index >= 0, filled, np.nan)
