"""Forecasting data: series segments, sliding windows and :func:`prepare_data` (split, normalise, window)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from rnnkit.data.batching import sliding_windows
from rnnkit.data.series import (
    Normalizer,
    Series,
    causal_fill,
    chronological_split,
    read_series,
)
from rnnkit.errors import DataError
from rnnkit.tasks.forecaster.config import BALL

if TYPE_CHECKING:
    from rnnkit.tasks.forecaster.config import ForecasterData


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
