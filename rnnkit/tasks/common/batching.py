"""Sentence batching shared by the text tasks: examples, padding, length buckets, holdout split
(and reading a validation file or holding one out)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor

from rnnkit.data.batching import pad_sequences
from rnnkit.errors import DataError
from rnnkit.train import IndependentBatches

T = TypeVar("T")


@dataclass
class Example:
    """One encoded sequence: token ``ids`` (or numeric ``features (T, F)``), optional ``chars
    (T, C)``, and its ``target`` (a class id, or one tag id per step)."""

    length: int
    target: int | list[int]
    ids: list[int] | None = None
    chars: np.ndarray | None = None
    features: np.ndarray | None = None


def collate(items: Sequence[Example]) -> dict[str, Tensor | None]:
    """Pad a list of :class:`Example` into a batch: ``inputs (B, T)`` ids or ``(B, T, F)``
    values, ``lengths (B,)``, ``mask (B, T)``, ``chars (B, T, C)`` or None, ``targets`` (B,) or
    (B, T) (0 on padding: read it through the mask)."""
    lengths = torch.tensor([it.length for it in items], dtype=torch.int64)  # (B,)
    if items[0].features is not None:
        inputs, _ = pad_sequences([torch.from_numpy(it.features) for it in items], 0.0)
    else:
        inputs, _ = pad_sequences([torch.tensor(it.ids, dtype=torch.int64) for it in items], 0)
    T = inputs.shape[1]
    mask = torch.arange(T).unsqueeze(0) < lengths.unsqueeze(1)  # (B, T)
    chars = None
    if items[0].chars is not None:
        C = max(it.chars.shape[1] for it in items)
        buf = np.zeros((len(items), T, C), dtype=np.int64)
        for b, it in enumerate(items):
            buf[b, : it.chars.shape[0], : it.chars.shape[1]] = it.chars
        chars = torch.from_numpy(buf)  # (B, T, C)
    if isinstance(items[0].target, int):
        targets = torch.tensor([it.target for it in items], dtype=torch.int64)  # (B,)
    else:
        targets, _ = pad_sequences([torch.tensor(it.target, dtype=torch.int64) for it in items])
    return {"inputs": inputs, "lengths": lengths, "mask": mask, "chars": chars, "targets": targets}


def to_device(batch: dict[str, Tensor | None], device: torch.device) -> dict[str, Any]:
    """Every tensor of a batch on ``device``, except ``lengths`` (kept on the CPU for packing)."""
    return {
        k: (v.to(device) if isinstance(v, Tensor) and k != "lengths" else v)
        for k, v in batch.items()
    }


def bucket_batches(
    lengths: Sequence[int], batch_size: int, rng: np.random.Generator, pool: int = 50
) -> list[list[int]]:
    """Random batches of similar lengths (less padding, so less wasted work): shuffle, sort each
    pool of ``pool × batch_size`` examples by length, cut it into batches, shuffle the batches.
    Always ``ceil(N / batch_size)`` batches, every index exactly once."""
    order = rng.permutation(len(lengths))
    span = pool * batch_size
    batches = []
    for s in range(0, len(order), span):
        chunk = sorted(order[s : s + span].tolist(), key=lambda i: lengths[i])
        batches += [chunk[k : k + batch_size] for k in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Deterministic evaluation batches of similar lengths."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[k : k + batch_size] for k in range(0, len(order), batch_size)]


def split_holdout(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """A deterministic random split of ``range(n)`` into (kept, held out ≈ fraction·n)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"valid_fraction must be in (0, 1) when no --valid file; got {fraction}")
    order = np.random.default_rng(seed).permutation(n)
    cut = max(1, int(round(n * fraction)))
    if cut >= n:
        raise DataError(f"only {n} examples: too few to hold out {fraction:.0%} for validation")
    return sorted(order[cut:].tolist()), sorted(order[:cut].tolist())


def read_with_validation(
    path: str | Path,
    valid_path: str | None,
    read: Callable[[str | Path], T],
    hold_out: Callable[[T], tuple[T, T, str]],
) -> tuple[T, T, str]:
    """(train, valid, where they came from): ``read(path)`` trains and ``read(valid_path)``
    validates; without a validation file ``hold_out(read(path))`` splits it into (train, valid,
    how the validation part was held out)."""
    everything = read(path)
    if valid_path:
        return everything, read(valid_path), f"{path} (validation: {valid_path})"
    train, valid, how = hold_out(everything)
    return train, valid, f"{path} ({how})"


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------
class PlannedBatches(IndependentBatches):
    """Training examples held in memory, served to :func:`rnnkit.train.fit` as
    ``ceil(len(train) / batch_size)`` batches an epoch. Epoch e's plan (the example indices of
    each batch) is drawn by :meth:`draw_plan` from a generator seeded with (seed, e), so a
    resumed run sees exactly the same batches."""

    def __init__(self, model: Any, train: Sequence[Any], valid: Any, batch_size: int, seed: int):
        self.model = model
        self.train = train
        self.valid = valid
        self.batch_size = batch_size
        self.seed = seed
        self._epoch, self._plan = -1, []

    def draw_plan(self, rng: np.random.Generator) -> list[list[int]]:
        """One epoch's batches of indices into ``train``."""
        raise NotImplementedError

    def batches_per_epoch(self) -> int:
        return math.ceil(len(self.train) / self.batch_size)

    def _plan_for(self, epoch: int) -> list[list[int]]:
        if epoch != self._epoch:
            self._plan = self.draw_plan(np.random.default_rng([self.seed, epoch]))
            self._epoch = epoch
        return self._plan

    def start_epoch(self, epoch: int) -> None:
        self._plan_for(epoch)


class BucketedBatches(PlannedBatches):
    """:class:`PlannedBatches` whose batches group examples of similar ``sort_keys`` (lengths):
    see :func:`bucket_batches`."""

    def __init__(
        self,
        model: Any,
        train: Sequence[Any],
        valid: Any,
        batch_size: int,
        seed: int,
        sort_keys: Sequence[int],
    ):
        super().__init__(model, train, valid, batch_size, seed)
        self._sort_keys = list(sort_keys)

    def draw_plan(self, rng: np.random.Generator) -> list[list[int]]:
        return bucket_batches(self._sort_keys, self.batch_size, rng)


def batch_and_seed(train_cfg: Any, batch_size: int) -> tuple[int, int]:
    """(batch size, seed) of a run's training config; without one (a model restored only to be
    evaluated) the task's default ``batch_size`` and seed 0."""
    if train_cfg is None:
        return batch_size, 0
    return train_cfg.batch_size, train_cfg.seed
