"""Training one model on one memory task: the model, its loss and metric, and the training loop.

:func:`train_memory` trains one (cell, T, seed) with Adam (or SGD with momentum) and optional
gradient clipping, records the loss and the pre-clipping gradient norm of every step, scores a
fixed test set every ``eval_every`` steps and stops at success (see
:mod:`rnnkit.insight.memory_tasks` for the tasks and their success criteria).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.insight.layers import make_memory_layer
from rnnkit.insight.memory_tasks import (
    MEMORY_TASKS,
    adding_task,
    bit_task,
    copy_task,
    memory_success,
)
from rnnkit.layers import RecurrentLayer

#: Adam learning rate per cell when --lr is not given (tuned on the adding problem)
DEFAULT_LR = {"rnn": 1e-3, "irnn": 3e-4, "lstm": 1e-2, "gru": 1e-2}


class MemoryModel(nn.Module):
    """Recurrent layer + linear read-out: the last step (bit, adding) or the last S steps (copy)."""

    def __init__(self, task: str, layer: RecurrentLayer, out_features: int, read_steps: int = 1):
        super().__init__()
        self.task = task
        self.rnn = layer
        self.head = nn.Linear(layer.hidden_size, out_features)
        self.read_steps = read_steps

    def forward(self, x: Tensor) -> Tensor:
        y, _ = self.rnn(x)  # (B, L, H)
        if self.task == "copy":
            return self.head(y[:, -self.read_steps :])  # (B, S, K)
        return self.head(y[:, -1]).squeeze(-1)  # (B,) regression value or class logit


@dataclass
class MemoryConfig:
    """One training run of a memory task."""

    task: str = "adding"
    cell: str = "lstm"
    length: int = 100
    hidden_size: int = 32
    batch_size: int = 64
    steps: int = 4000
    lr: float | None = None  # None: DEFAULT_LR[cell]
    optimizer: str = "adam"  # adam | sgd (with momentum 0.9)
    clip: float = 1.0  # max global gradient norm; 0 = no clipping
    init_scale: float | None = None
    eval_every: int = 100
    test_size: int = 1000
    seed: int = 0
    stop_on_success: bool = True
    noise: float = 1.0  # bit task: std of the distracting inputs
    copy_symbols: int = 3
    copy_alphabet: int = 8


@dataclass
class MemoryResult:
    """What one run did: success, when, the final test metric and the training curves."""

    config: MemoryConfig
    success: bool
    steps_to_success: int | None
    metric: float  # adding: test MSE; bit, copy: test accuracy
    steps: int
    diverged: bool
    seconds: float  # wall clock
    curve: list[tuple[int, float, float]] = field(default_factory=list)  # (step, loss, grad norm)
    evals: list[tuple[int, float]] = field(default_factory=list)  # (step, test metric)
    cpu_seconds: float = 0.0  # CPU time of this process (≈ wall time on an idle machine)


def memory_batch(cfg: MemoryConfig, batch_size: int, generator: torch.Generator):
    """A batch ``(x, y)`` of ``cfg.task`` at ``cfg.length``."""
    if cfg.task == "bit":
        return bit_task(batch_size, cfg.length, generator, cfg.noise)
    if cfg.task == "adding":
        return adding_task(batch_size, cfg.length, generator)
    if cfg.task == "copy":
        return copy_task(batch_size, cfg.length, generator, cfg.copy_symbols, cfg.copy_alphabet)
    raise ValueError(f"unknown memory task {cfg.task!r}; expected one of {', '.join(MEMORY_TASKS)}")


def _memory_loss(task: str, pred: Tensor, y: Tensor) -> Tensor:
    if task == "adding":
        return F.mse_loss(pred, y)
    if task == "bit":
        return F.binary_cross_entropy_with_logits(pred, y.float())
    return F.cross_entropy(pred.reshape(-1, pred.shape[-1]), y.reshape(-1))


@torch.no_grad()
def _memory_metric(task: str, model: MemoryModel, x: Tensor, y: Tensor, chunk: int = 500) -> float:
    total = 0.0
    for s in range(0, x.shape[0], chunk):
        pred, target = model(x[s : s + chunk]), y[s : s + chunk]
        if task == "adding":
            total += float(((pred - target) ** 2).sum())
        elif task == "bit":
            total += float(((pred > 0).long() == target).sum())
        else:
            total += float((pred.argmax(-1) == target).float().mean(-1).sum())
    return total / x.shape[0]


def build_memory_model(cfg: MemoryConfig) -> MemoryModel:
    """The model for ``cfg`` (seeded by ``cfg.seed``, so every run starts from its own init)."""
    input_size = {"bit": 1, "adding": 2, "copy": cfg.copy_alphabet + 2}[cfg.task]
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        layer = make_memory_layer(cfg.cell, input_size, cfg.hidden_size, cfg.init_scale)
        if cfg.task == "copy":
            return MemoryModel("copy", layer, cfg.copy_alphabet, cfg.copy_symbols)
        return MemoryModel(cfg.task, layer, 1)


def train_memory(
    cfg: MemoryConfig, on_step: Callable[[int, float, float | None], None] | None = None
) -> MemoryResult:
    """Train one model on one memory task; stop at success (``stop_on_success``) or the budget.

    Every step draws a fresh batch, minimises the task loss (MSE, binary or categorical
    cross-entropy) with Adam and clips the global gradient norm to ``cfg.clip`` (0 = off); the
    norm before clipping is recorded. Every ``eval_every`` steps the model is scored on a fixed
    test set of ``test_size`` sequences (the same for every cell and seed at a given length).
    A non-finite loss or gradient ends the run as diverged. ``on_step(step, loss, metric)``
    is called after every step (``metric`` only after an evaluation).
    """
    if cfg.task not in MEMORY_TASKS:
        raise ValueError(
            f"unknown memory task {cfg.task!r}; expected one of {', '.join(MEMORY_TASKS)}"
        )
    if cfg.length < 1 or cfg.steps < 1:
        raise ValueError(f"length and steps must be >= 1; got {cfg.length}, {cfg.steps}")
    model = build_memory_model(cfg)
    lr = cfg.lr if cfg.lr is not None else DEFAULT_LR[cfg.cell]
    if cfg.optimizer == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    params = list(model.parameters())
    test_gen = torch.Generator().manual_seed(1_000_003 + cfg.length)
    x_test, y_test = memory_batch(cfg, cfg.test_size, test_gen)
    train_gen = torch.Generator().manual_seed(cfg.seed)
    max_norm = cfg.clip if cfg.clip and cfg.clip > 0 else math.inf

    start, cpu_start = time.monotonic(), time.process_time()
    curve: list[tuple[int, float, float]] = []
    evals: list[tuple[int, float]] = []
    success_step, diverged, metric, step = None, False, math.nan, 0
    for step in range(1, cfg.steps + 1):
        model.train()
        x, y = memory_batch(cfg, cfg.batch_size, train_gen)
        loss = _memory_loss(cfg.task, model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
        loss_value = float(loss.detach())
        curve.append((step, loss_value, norm))
        if not (math.isfinite(loss_value) and math.isfinite(norm)):
            diverged = True
            break
        optimizer.step()
        evaluated = None
        if step % cfg.eval_every == 0 or step == cfg.steps:
            model.eval()
            metric = _memory_metric(cfg.task, model, x_test, y_test)
            evals.append((step, metric))
            evaluated = metric
            if success_step is None and memory_success(cfg.task, metric):
                success_step = step
        if on_step is not None:
            on_step(step, loss_value, evaluated)
        if success_step is not None and cfg.stop_on_success:
            break
    if diverged:
        metric = math.nan
    return MemoryResult(
        config=cfg,
        success=success_step is not None,
        steps_to_success=success_step,
        metric=metric,
        steps=step,
        diverged=diverged,
        seconds=time.monotonic() - start,
        curve=curve,
        evals=evals,
        cpu_seconds=time.process_time() - cpu_start,
    )


def run_label(cell: str, clip: float, several_clips: bool) -> str:
    """A run's name in tables and legends: the cell, and its clipping when a sweep has several."""
    if not several_clips:
        return cell
    return f"{cell} no clip" if not clip else f"{cell} clip {clip:g}"
