"""Why RNNs forget: gradient flow across time and long-term-memory benchmarks.

This module owns two instruments and the commands built on them.

**Gradient flow** (``rnnkit diagnose gradients``). For a recurrent layer run over T steps with a
loss L_T on the last step only, backpropagation through time gives

    ∂L_T/∂s_t = ∂L_T/∂s_T · J_T · J_{T−1} ⋯ J_{t+1},      J_k = ∂s_k/∂s_{k−1},

where s_t is the full state (h_t, plus c_t for an LSTM). :func:`gradient_flow` measures
‖∂L_T/∂h_t‖ (and ‖∂L_T/∂c_t‖, ‖∂L_T/∂x_t‖) at every distance T − t, the spectral norm
‖J_k‖₂ of every step Jacobian (with ``torch.func.jacrev``), and the parameter-gradient norm
before and after clipping. If every ‖J_k‖₂ ≤ γ < 1 the gradient shrinks at least like γ^(T−t)
(vanishing); with ‖J_k‖₂ > 1 it may grow (exploding). A tanh RNN with small recurrent weights
vanishes; identity-initialised ReLU RNNs (J = diag(relu′)·I) and gated cells (∂c_t/∂c_{t−1} = f_t)
keep a near-identity path.

**Memory tasks** (``rnnkit bench memory``): three synthetic problems whose answer depends on
inputs T steps in the past, each with a generator, a success criterion and a baseline:

* ``bit`` — the lecture's toy: the class is the sign of the first input, followed by T steps of
  Gaussian noise. Success: test accuracy ≥ 0.99 (chance 0.5).
* ``adding`` — (Hochreiter & Schmidhuber 1997; Le et al. 2015) T pairs (value ~ U(0, 1), marker);
  two markers are 1, one in each half; predict the sum of the two marked values. Success: test
  MSE < 0.01; predicting the mean 1 scores Var(u₁ + u₂) = 2/12 = 1/6 ≈ 0.167.
* ``copy`` — (Hochreiter & Schmidhuber 1997; Arjovsky et al. 2016) S symbols, T blanks, a
  delimiter; then reproduce the S symbols. Success: recall accuracy ≥ 0.99 (chance 1/K).

:func:`train_memory` trains one (cell, T, seed) with Adam and optional gradient clipping and
records the loss and the pre-clipping gradient norm of every step; :func:`run_memory_benchmark`
sweeps cells × lengths × seeds with one progress bar and writes a CSV, a success table and PNGs
(matplotlib Agg).
"""

from __future__ import annotations

import csv
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.layers import GRU, LSTM, RNN, RecurrentLayer

__all__ = [
    # memory tasks
    "MEMORY_TASKS",
    "MEMORY_CELLS",
    "ADDING_BASELINE_MSE",
    "bit_task",
    "adding_task",
    "copy_task",
    "MemoryConfig",
    "MemoryResult",
    "MemoryModel",
    "train_memory",
    "run_memory_benchmark",
    "memory_table",
    # gradient flow
    "CellSpec",
    "parse_cell_spec",
    "GradientFlow",
    "gradient_flow",
    "step_jacobians",
    "step_jacobian_matrices",
    "language_model_probe",
    "gradient_table",
    # writers and commands
    "write_gradient_csv",
    "plot_gradient_flow",
    "write_memory_csv",
    "write_memory_curves_csv",
    "plot_memory_results",
    "plot_memory_curves",
    "add_diagnostic_verbs",
]

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# Memory tasks: generators
# ---------------------------------------------------------------------------------------------
MEMORY_TASKS = ("bit", "adding", "copy")
ADDING_BASELINE_MSE = 1.0 / 6.0  # Var(u1 + u2) for u ~ U(0, 1): what predicting 1 scores


def bit_task(
    batch_size: int, length: int, generator: torch.Generator | None = None, noise: float = 1.0
) -> tuple[Tensor, Tensor]:
    """The sign toy: ``x (B, T+1, 1)`` and class labels ``y (B,)`` in {0, 1}.

    x_0 = ±1 carries the class (y = 1 ⇔ x_0 = +1); x_1 … x_T ~ N(0, noise²) carry nothing.
    The model must latch the first input across T noisy steps.
    """
    y = torch.randint(0, 2, (batch_size,), generator=generator)
    x = noise * torch.randn(batch_size, length + 1, 1, generator=generator)  # (B, T+1, 1)
    x[:, 0, 0] = 2.0 * y - 1.0
    return x, y


def adding_task(
    batch_size: int, length: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """The adding problem: ``x (B, T, 2)`` and targets ``y (B,)``.

    x[:, t, 0] ~ U(0, 1) are the values; x[:, t, 1] is a marker that is 1 at exactly two steps,
    one uniformly in [0, ⌈T/2⌉) and one in [⌈T/2⌉, T). y = the sum of the two marked values, so
    E[y] = 1 and Var(y) = 1/6: always predicting 1 gives MSE ≈ 0.167.
    """
    if length < 2:
        raise ValueError(f"the adding problem needs length >= 2; got {length}")
    half = (length + 1) // 2
    values = torch.rand(batch_size, length, generator=generator)
    first = torch.randint(0, half, (batch_size,), generator=generator)
    second = torch.randint(half, length, (batch_size,), generator=generator)
    marks = torch.zeros(batch_size, length)
    rows = torch.arange(batch_size)
    marks[rows, first] = 1.0
    marks[rows, second] = 1.0
    y = values[rows, first] + values[rows, second]
    return torch.stack([values, marks], -1), y  # (B, T, 2), (B,)


def copy_task(
    batch_size: int,
    length: int,
    generator: torch.Generator | None = None,
    symbols: int = 3,
    alphabet: int = 8,
) -> tuple[Tensor, Tensor]:
    """The copy task: one-hot ``x (B, S+T+1+S, K+2)`` and the symbols to recall ``y (B, S)``.

    Tokens: 0 = blank, 1…K = symbols, K+1 = delimiter. The input is S random symbols, T blanks,
    the delimiter, then S blanks during which the model must output the S symbols in order.
    ``y`` holds symbol indices 0…K−1 (token − 1); guessing scores accuracy 1/K.
    """
    if symbols < 1 or alphabet < 2:
        raise ValueError(
            f"copy task needs symbols >= 1 and alphabet >= 2; got {symbols}, {alphabet}"
        )
    S, K = symbols, alphabet
    y = torch.randint(0, K, (batch_size, S), generator=generator)
    tokens = torch.zeros(batch_size, S + length + 1 + S, dtype=torch.long)
    tokens[:, :S] = y + 1
    tokens[:, S + length] = K + 1
    return F.one_hot(tokens, K + 2).float(), y  # (B, S+T+1+S, K+2), (B, S)


# ---------------------------------------------------------------------------------------------
# Memory tasks: models and training
# ---------------------------------------------------------------------------------------------
#: the cells ``bench memory`` compares, as layer constructors with their options
MEMORY_CELLS = {
    "rnn": "tanh RNN, default init",
    "irnn": "ReLU RNN, identity init (Le et al. 2015)",
    "lstm": "LSTM, forget bias 1",
    "gru": "GRU",
}

#: Adam learning rate per cell when --lr is not given (tuned on the adding problem)
DEFAULT_LR = {"rnn": 1e-3, "irnn": 3e-4, "lstm": 1e-2, "gru": 1e-2}


def make_memory_layer(
    cell: str, input_size: int, hidden_size: int, init_scale: float | None = None
) -> RecurrentLayer:
    """A one-layer batch-first rnnkit layer for a ``MEMORY_CELLS`` name.

    ``init_scale`` σ redraws every recurrent weight block W_hh ~ N(0, σ²/H), whose spectral radius
    is ≈ σ (circular law): σ > 1 makes a tanh RNN's gradients explode at the start.
    """
    if cell == "rnn":
        layer = RNN(input_size, hidden_size, batch_first=True)
    elif cell == "irnn":
        layer = RNN(input_size, hidden_size, batch_first=True, nonlinearity="relu", init="identity")
    elif cell == "lstm":
        layer = LSTM(input_size, hidden_size, batch_first=True, forget_bias=1.0)
    elif cell == "gru":
        layer = GRU(input_size, hidden_size, batch_first=True)
    else:
        raise ValueError(f"unknown cell {cell!r}; expected one of {', '.join(MEMORY_CELLS)}")
    if init_scale is not None:
        scale_recurrent_init(layer, init_scale)
    return layer


def scale_recurrent_init(layer: nn.Module, scale: float) -> None:
    """Redraw each H×H block of every ``weight_hh*`` as N(0, scale²/H) (spectral radius ≈ scale)."""
    if scale <= 0:
        raise ValueError(f"init scale must be positive; got {scale}")
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if name.startswith("weight_hh"):
                H = p.shape[1]
                p.normal_(0.0, scale / math.sqrt(H))


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


def memory_metric_name(task: str) -> str:
    return "test MSE" if task == "adding" else "test accuracy"


def memory_success(task: str, metric: float) -> bool:
    """adding: MSE < 0.01; bit and copy: accuracy ≥ 0.99."""
    if task == "adding":
        return metric < 0.01
    return metric >= 0.99


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


# ---------------------------------------------------------------------------------------------
# Gradient flow across time
# ---------------------------------------------------------------------------------------------
@dataclass
class CellSpec:
    """A fresh recurrent layer to diagnose: the cell and its options (see ``rnnkit.cells``)."""

    cell: str = "rnn"  # rnn | lstm | gru
    nonlinearity: str = "tanh"  # rnn only
    init: str = "default"  # rnn only: default | identity
    layer_norm: bool = False
    forget_bias: float = 0.0  # lstm only
    init_scale: float | None = None  # W_hh ~ N(0, scale²/H) when set

    def label(self) -> str:
        """Short name for tables and legends, e.g. ``rnn relu identity`` or ``lstm fb=1``."""
        parts = [self.cell]
        if self.cell == "rnn":
            if self.nonlinearity != "tanh":
                parts.append(self.nonlinearity)
            if self.init != "default":
                parts.append(self.init)
        if self.cell == "lstm" and self.forget_bias:
            parts.append(f"fb={self.forget_bias:g}")
        if self.layer_norm:
            parts.append("ln")
        if self.init_scale is not None:
            parts.append(f"scale={self.init_scale:g}")
        return " ".join(parts)

    def build(self, input_size: int, hidden_size: int) -> RecurrentLayer:
        """The one-layer batch-first rnnkit layer this spec describes."""
        if self.cell not in ("rnn", "lstm", "gru"):
            raise ValueError(f"cell must be rnn, lstm or gru; got {self.cell!r}")
        if self.cell != "rnn" and (self.nonlinearity != "tanh" or self.init != "default"):
            raise ValueError("--nonlinearity and --init apply to --cell rnn only")
        if self.cell != "lstm" and self.forget_bias:
            raise ValueError("--forget-bias applies to --cell lstm only")
        kw = {"batch_first": True, "layer_norm": self.layer_norm}
        if self.cell == "rnn":
            layer = RNN(
                input_size, hidden_size, nonlinearity=self.nonlinearity, init=self.init, **kw
            )
        elif self.cell == "lstm":
            layer = LSTM(input_size, hidden_size, forget_bias=self.forget_bias, **kw)
        else:
            layer = GRU(input_size, hidden_size, **kw)
        if self.init_scale is not None:
            scale_recurrent_init(layer, self.init_scale)
        return layer


def add_cell_options(p) -> None:
    """The flags that describe a :class:`CellSpec` (shared by the CLI and ``--compare`` items)."""
    p.add_argument("--nonlinearity", choices=("tanh", "relu"), default="tanh", help="rnn only")
    p.add_argument(
        "--init", choices=("default", "identity"), default="default", help="rnn: identity = IRNN"
    )
    p.add_argument("--layer-norm", action="store_true", help="layer-normalised cell")
    p.add_argument("--forget-bias", type=float, default=0.0, help="lstm: initial forget bias")
    p.add_argument(
        "--init-scale",
        type=float,
        default=None,
        metavar="S",
        help="redraw W_hh ~ N(0, S²/H) (spectral radius ≈ S)",
    )


def _spec_parser():
    """The parser of one ``--compare`` item, ``CELL [options]``; it raises ValueError on errors."""
    import argparse

    class Parser(argparse.ArgumentParser):
        def error(self, message):  # argparse would print usage and exit
            raise ValueError(message)

    p = Parser(prog="--compare item", add_help=False)
    p.add_argument("cell", choices=("rnn", "lstm", "gru"))
    add_cell_options(p)
    return p


def parse_cell_spec(text: str) -> CellSpec:
    """``"rnn --nonlinearity relu --init identity"`` → a :class:`CellSpec` (ValueError if bad)."""
    import shlex

    words = shlex.split(text)
    if not words:
        raise ValueError("empty configuration in --compare")
    try:
        ns = _spec_parser().parse_args(words)
    except ValueError as e:
        raise ValueError(f"--compare item {text.strip()!r}: {e}") from None
    return spec_from_args(ns)


def spec_from_args(ns) -> CellSpec:
    return CellSpec(
        cell=ns.cell,
        nonlinearity=ns.nonlinearity,
        init=ns.init,
        layer_norm=ns.layer_norm,
        forget_bias=ns.forget_bias,
        init_scale=ns.init_scale,
    )


def _layer_cells(layer: RecurrentLayer) -> list[tuple]:
    """(cell, parameter dict) of each layer of a unidirectional rnnkit recurrent layer."""
    if not isinstance(layer, RecurrentLayer):
        raise ValueError(f"expected an rnnkit RNN/LSTM/GRU layer; got {type(layer).__name__}")
    if layer.bidirectional:
        raise ValueError("gradient flow is defined for a unidirectional layer; got bidirectional")
    # The layer owns the parameters under torch's names; its cells hold the step equations.
    return [(layer._cells[k], layer._params(k)) for k in range(layer.num_layers)]


def _flatten_state(states: list) -> Tensor:
    """Per-layer states → one (B, S) tensor: [h⁽⁰⁾, c⁽⁰⁾, h⁽¹⁾, …]."""
    return torch.cat([t for s in states for t in (s if isinstance(s, tuple) else (s,))], -1)


def _unflatten_state(flat: Tensor, cells: list) -> list:
    from rnnkit.state import LSTMState

    out, at = [], 0
    for cell, _ in cells:
        H = cell.hidden_size
        if cell.is_lstm:
            out.append(LSTMState(flat[..., at : at + H], flat[..., at + H : at + 2 * H]))
            at += 2 * H
        else:
            out.append(flat[..., at : at + H])
            at += H
    return out


def _stack_step(cells: list, zoneout: float, x_t: Tensor, states: list) -> tuple[Tensor, list]:
    """One time step of the whole stack (evaluation mode): returns (top h, new per-layer states).

    Zoneout in evaluation is its expectation s_t = p·s_{t−1} + (1 − p)·s̃_t, as in the layer.
    """
    inp, new_states = x_t, []
    for (cell, params), state in zip(cells, states):
        h, new = cell.step(cell.project_input(inp, params), state, params)
        if zoneout:
            if isinstance(new, tuple):
                new = type(new)(*(torch.lerp(n, o, zoneout) for n, o in zip(new, state)))
                h = new[0]
            else:
                new = h = torch.lerp(new, state, zoneout)
        new_states.append(new)
        inp = h
    return inp, new_states


def step_jacobians(layer: RecurrentLayer, x: Tensor, states: Tensor) -> Tensor:
    """Spectral norms ‖∂s_t/∂s_{t−1}‖₂ of the step Jacobians: ``(B, T)``.

    ``x (B, T, I)`` are the inputs and ``states (B, T+1, S)`` the flattened states s_0 … s_T
    (S = H, or 2H for an LSTM's (h, c); summed over stacked layers). Each J_t (S × S) is computed
    with ``torch.func.jacrev`` through the cell's step, vectorised over batch and time with
    ``vmap``; its spectral norm is the largest singular value. Jacobians are made and reduced a
    chunk at a time (about 64 MB each), so memory stays bounded for wide layers.
    """
    norms = [torch.linalg.matrix_norm(j, ord=2) for j in _jacobian_chunks(layer, x, states)]
    return torch.cat(norms).reshape(x.shape[:2])


def step_jacobian_matrices(layer: RecurrentLayer, x: Tensor, states: Tensor) -> Tensor:
    """The step Jacobians J_t = ∂s_t/∂s_{t−1} themselves: ``(B, T, S, S)``.

    See :func:`step_jacobians`; meant for small layers (B·T·S² numbers are kept).
    """
    jac = torch.cat(list(_jacobian_chunks(layer, x, states)))
    S = states.shape[-1]
    return jac.reshape(*x.shape[:2], S, S)


def _jacobian_chunks(layer: RecurrentLayer, x: Tensor, states: Tensor):
    """Yield the step Jacobians of all (b, t) in order, as ``(n, S, S)`` chunks."""
    from torch.func import jacrev, vmap

    cells = _layer_cells(layer)
    zoneout = layer.zoneout
    B, T = x.shape[:2]

    def transition(s_prev: Tensor, x_t: Tensor) -> Tensor:  # one example: (S,), (I,) → (S,)
        _, new = _stack_step(cells, zoneout, x_t, _unflatten_state(s_prev, cells))
        return _flatten_state(new)

    s_prev = states[:, :-1].detach().reshape(B * T, -1)  # (B·T, S)
    inputs = x.detach().reshape(B * T, -1)  # (B·T, I)
    S = s_prev.shape[-1]
    chunk = max(1, 2**26 // (S * S * s_prev.element_size()))
    jac_fn = vmap(jacrev(transition, argnums=0))
    with torch.no_grad():
        for k in range(0, B * T, chunk):
            yield jac_fn(s_prev[k : k + chunk], inputs[k : k + chunk])  # (n, S, S)


@dataclass
class GradientFlow:
    """Per-distance gradient norms of one configuration; index d = distance T − t (0 … T−1).

    ``grad_state[d]`` = ‖∂L_T/∂s_t‖ (h and, for an LSTM, c together), ``grad_h``/``grad_c`` its
    parts, ``grad_x[d]`` = ‖∂L_T/∂x_t‖, ``jacobian[d]`` = ‖∂s_t/∂s_{t−1}‖₂; each is a mean over
    the batch of per-sequence norms. ``param_grad_norm`` is the global parameter-gradient norm of
    the batch-mean loss, ``clipped_grad_norm`` the same after clipping to ``clip``.
    """

    label: str
    length: int
    grad_state: list[float]
    grad_h: list[float]
    grad_c: list[float] | None
    grad_x: list[float]
    jacobian: list[float]
    param_grad_norm: float
    clipped_grad_norm: float
    clip: float

    def ratio(self, distance: int, reference: int = 1) -> float:
        """‖∂L_T/∂s_{T−distance}‖ / ‖∂L_T/∂s_{T−reference}‖ (nan when out of range)."""
        if max(distance, reference) >= self.length:
            return math.nan
        ref = self.grad_state[reference]
        return self.grad_state[distance] / ref if ref > 0 else math.nan


def gradient_flow(
    layer: RecurrentLayer,
    x: Tensor,
    loss_fn: Callable[[Tensor], Tensor] | None = None,
    label: str = "",
    clip: float = 1.0,
    jacobian_batch: int = 8,
    params: Sequence[nn.Parameter] | None = None,
) -> GradientFlow:
    """Measure how the gradient of a last-step loss flows back through ``layer`` over ``x``.

    ``x (B, T, I)`` (batch-first whatever ``layer.batch_first`` says) is run through the layer's
    cells step by step from a zero state, in evaluation mode, keeping every state s_t. The loss is
    L_T = Σ_b ℓ(h_T⁽ᵇ⁾) with ``loss_fn(h_T (B, H)) → (B,)`` per-sequence losses (default: the
    projection ℓ = u·h_T on a fixed random unit vector u, so ‖∂ℓ/∂h_T‖ = 1). Summing over the
    batch makes each sequence's gradient its own, so the norms are per sequence, then averaged.

    Returns a :class:`GradientFlow`. The step-Jacobian norms use the first ``jacobian_batch``
    sequences (fewer when the state is wider than 128; 0 skips them, giving nan). ``params``
    (default: the layer's) are the parameters whose gradient of the batch-mean loss is reported
    before and after clipping to ``clip``.
    """
    cells = _layer_cells(layer)
    B, T = x.shape[:2]
    was_training = layer.training
    layer.eval()
    x = x.detach().requires_grad_(True) if x.is_leaf else x
    x.retain_grad()
    dtype = x.dtype
    if loss_fn is None:
        gen = torch.Generator().manual_seed(0)
        u = torch.randn(layer.hidden_size, generator=gen, dtype=torch.float64)
        u = (u / u.norm()).to(dtype)

        def loss_fn(h: Tensor) -> Tensor:
            return h @ u

    states = [cell.init_state(B, x.device, dtype) for cell, _ in cells]
    trajectory, top = [_flatten_state(states).detach()], []
    for t in range(T):
        h, states = _stack_step(cells, layer.zoneout, x[:, t], states)
        for part in states[-1] if isinstance(states[-1], tuple) else (states[-1],):
            part.retain_grad()
        top.append(states[-1])
        trajectory.append(_flatten_state(states).detach())
    per_example = loss_fn(h)  # (B,)
    params = list(params) if params is not None else list(layer.parameters())
    for p in params:
        p.grad = None
    per_example.sum().backward()

    def norms(grads: list[Tensor | None]) -> list[float]:  # time order → distance order
        return [float(g.norm(dim=-1).mean()) if g is not None else 0.0 for g in reversed(grads)]

    is_lstm = isinstance(top[0], tuple)
    grad_h = norms([s.h.grad if is_lstm else s.grad for s in top])
    grad_c = norms([s.c.grad for s in top]) if is_lstm else None
    if is_lstm:
        both = [
            torch.cat(
                [
                    s.h.grad if s.h.grad is not None else torch.zeros_like(s.h),
                    s.c.grad if s.c.grad is not None else torch.zeros_like(s.c),
                ],
                -1,
            )
            for s in top
        ]
        grad_state = norms(both)
    else:
        grad_state = grad_h
    grad_x = norms([x.grad[:, t] for t in range(T)])

    # the same gradients, as a training step would see them: of the batch-mean loss
    with torch.no_grad():
        for p in params:
            if p.grad is not None:
                p.grad /= B
    before = float(torch.nn.utils.clip_grad_norm_(params, clip if clip > 0 else math.inf))
    # clip_grad_norm_ returns the norm it found; measure what clipping left
    after = math.sqrt(sum(float(p.grad.pow(2).sum()) for p in params if p.grad is not None))
    for p in params:
        p.grad = None

    # an S × S SVD costs ~S³: wide states (a trained 256-unit LSTM has S = 512) use fewer sequences
    S = sum(2 * cell.hidden_size if cell.is_lstm else cell.hidden_size for cell, _ in cells)
    n = min(B, jacobian_batch, max(1, round(jacobian_batch * (128 / S) ** 2)))
    jacobian = [math.nan] * T
    if n > 0:
        traj = torch.stack(trajectory, 1)  # (B, T+1, S)
        jac = step_jacobians(layer, x[:n].detach(), traj[:n])  # (n, T)
        jacobian = [float(v) for v in jac.mean(0).flip(0)]
    layer.train(was_training)
    return GradientFlow(
        label=label,
        length=T,
        grad_state=grad_state,
        grad_h=grad_h,
        grad_c=grad_c,
        grad_x=grad_x,
        jacobian=jacobian,
        param_grad_norm=before,
        clipped_grad_norm=after,
        clip=clip,
    )


# ---------------------------------------------------------------------------------------------
# Writers: CSV, tables, PNGs
# ---------------------------------------------------------------------------------------------
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    return plt


def _save_figure(fig, path: Path) -> None:
    tmp = path.with_name("." + path.name + ".tmp")
    fig.savefig(tmp, format="png", dpi=110)
    _pyplot().close(fig)
    tmp.replace(path)


def _fmt(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return f"{v:.6g}"


def write_gradient_csv(flows: Sequence[GradientFlow], path: str | Path) -> Path:
    """One row per (configuration, distance): the norms of :class:`GradientFlow`."""
    path = Path(path)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            ["config", "distance", "grad_state", "grad_h", "grad_c", "grad_x", "jacobian_norm"]
        )
        for g in flows:
            for d in range(g.length):
                w.writerow(
                    [
                        g.label,
                        d,
                        _fmt(g.grad_state[d]),
                        _fmt(g.grad_h[d]),
                        _fmt(g.grad_c[d]) if g.grad_c is not None else "",
                        _fmt(g.grad_x[d]),
                        _fmt(g.jacobian[d]),
                    ]
                )
    return path


def plot_gradient_flow(flows: Sequence[GradientFlow], path: str | Path, title: str = "") -> Path:
    """Three log-scale panels against distance T − t: ‖∂L_T/∂s_t‖, ‖∂L_T/∂x_t‖, ‖J_t‖₂."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    panels = (
        ("grad_state", "‖∂L_T/∂s_t‖ (state)"),
        ("grad_x", "‖∂L_T/∂x_t‖ (input)"),
        ("jacobian", "‖∂s_t/∂s_(t−1)‖₂ (step Jacobian)"),
    )
    for ax, (key, ylabel) in zip(axes, panels):
        for g in flows:
            values = getattr(g, key)
            pts = [(d, v) for d, v in enumerate(values) if v > 0 and math.isfinite(v)]
            if pts:
                ax.plot(*zip(*pts), label=g.label, lw=1.5)
        ax.set_yscale("log")
        ax.set_xlabel("distance T − t (steps back from the loss)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, which="both")
    axes[2].axhline(1.0, color="grey", lw=0.8, ls="--")
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    _save_figure(fig, path)
    return path


def gradient_table(flows: Sequence[GradientFlow], distances: Sequence[int] = (1, 10, 50)) -> str:
    """Text table: state-gradient norm at a few distances, the ratio d/1, mean ‖J‖₂, clipping."""
    T = flows[0].length if flows else 0
    ds = [d for d in distances if d < T] + ([T - 1] if T - 1 not in distances and T > 1 else [])
    far = max((d for d in distances if d < T), default=None)
    width = max([len("config")] + [len(g.label) for g in flows])
    head = f"{'config':<{width}}  " + "  ".join(f"{f'd={d}':>9}" for d in ds)
    if far is not None and far != 1:
        head += f"  {f'd{far}/d1':>9}"
    head += f"  {'mean ‖J‖₂':>9}  {'grad norm → clipped':>21}"
    lines = [head]
    for g in flows:
        row = f"{g.label:<{width}}  " + "  ".join(f"{g.grad_state[d]:>9.2e}" for d in ds)
        if far is not None and far != 1:
            row += f"  {g.ratio(far):>9.2e}"
        mean_j = sum(g.jacobian) / max(len(g.jacobian), 1)
        row += f"  {mean_j:>9.3f}  {g.param_grad_norm:>9.3g} → {g.clipped_grad_norm:.3g}"
        lines.append(row)
    return "\n".join(lines)


def _run_label(cell: str, clip: float, several_clips: bool) -> str:
    if not several_clips:
        return cell
    return f"{cell} no clip" if not clip else f"{cell} clip {clip:g}"


def memory_table(results: Sequence[MemoryResult], labels: Sequence[str] | None = None) -> str:
    """Success table: rows = configurations, columns = lengths.

    A cell reads ``k/n @ s``: k of n seeds reached success, the median success step s; when none
    did, ``0/n`` and the mean final metric. The last column is the largest T that at least half
    of the seeds solved (— if none).
    """
    if not results:
        return "(no runs)"
    several = len({r.config.clip for r in results}) > 1
    groups: dict[tuple[str, int], list[MemoryResult]] = {}
    for r in results:
        key = (_run_label(r.config.cell, r.config.clip, several), r.config.length)
        groups.setdefault(key, []).append(r)
    labels = list(labels) if labels else list(dict.fromkeys(k[0] for k in groups))
    lengths = sorted({k[1] for k in groups})
    width = max(len("config"), *(len(x) for x in labels))
    col = 15
    lines = [
        f"{'config':<{width}}  "
        + "".join(f"{f'T={T}':>{col}}" for T in lengths)
        + f"{'largest T':>{col}}"
    ]
    for label in labels:
        row, best = f"{label:<{width}}  ", None
        for T in lengths:
            runs = groups.get((label, T), [])
            if not runs:
                row += f"{'—':>{col}}"
                continue
            ok = [r for r in runs if r.success]
            if ok:
                s = sorted(r.steps_to_success for r in ok)[len(ok) // 2]
                text = f"{len(ok)}/{len(runs)} @ {s}"
            else:
                finite = [r.metric for r in runs if math.isfinite(r.metric)]
                m = f"{sum(finite) / len(finite):.3g}" if finite else "nan"
                text = f"0/{len(runs)} ({m})"
            if 2 * len(ok) >= len(runs) and ok:
                best = T
            row += f"{text:>{col}}"
        row += f"{(str(best) if best is not None else '—'):>{col}}"
        lines.append(row)
    return "\n".join(lines)


def write_memory_csv(results: Sequence[MemoryResult], path: str | Path) -> Path:
    """One row per run: its configuration, success, steps to success, final metric, time."""
    path = Path(path)
    keys = [
        "task",
        "cell",
        "length",
        "seed",
        "clip",
        "lr",
        "hidden_size",
        "batch_size",
        "steps",
        "init_scale",
    ]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            [k if k != "steps" else "step_budget" for k in keys]
            + ["success", "steps_to_success", "metric", "steps_trained", "diverged"]
            + ["seconds", "cpu_seconds"]
        )
        for r in results:
            c = asdict(r.config)
            c["lr"] = c["lr"] if c["lr"] is not None else DEFAULT_LR[r.config.cell]
            w.writerow(
                [c[k] if c[k] is not None else "" for k in keys]
                + [
                    int(r.success),
                    r.steps_to_success if r.steps_to_success is not None else "",
                    _fmt(r.metric),
                    r.steps,
                    int(r.diverged),
                    f"{r.seconds:.2f}",
                    f"{r.cpu_seconds:.2f}",
                ]
            )
    return path


def write_memory_curves_csv(results: Sequence[MemoryResult], path: str | Path) -> Path:
    """Every step of every run: loss and gradient norm before clipping."""
    path = Path(path)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["cell", "length", "seed", "clip", "step", "loss", "grad_norm"])
        for r in results:
            c = r.config
            for step, loss, norm in r.curve:
                w.writerow([c.cell, c.length, c.seed, c.clip, step, _fmt(loss), _fmt(norm)])
    return path


def _colors(n: int):
    cmap = _pyplot().get_cmap("tab10")
    return [cmap(k % 10) for k in range(n)]


def plot_memory_results(results: Sequence[MemoryResult], path: str | Path) -> Path:
    """Left: fraction of seeds that succeed against T; right: final test metric against T."""
    plt = _pyplot()
    task = results[0].config.task
    several = len({r.config.clip for r in results}) > 1
    labels = list(dict.fromkeys(_run_label(r.config.cell, r.config.clip, several) for r in results))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    markers = "osD^vP*X"
    all_lengths = sorted({r.config.length for r in results})
    for k, (label, color) in enumerate(zip(labels, _colors(len(labels)))):
        runs = [r for r in results if _run_label(r.config.cell, r.config.clip, several) == label]
        lengths = sorted({r.config.length for r in runs})
        frac = [
            sum(r.success for r in runs if r.config.length == T)
            / sum(1 for r in runs if r.config.length == T)
            for T in lengths
        ]
        # a small vertical offset per configuration keeps coinciding lines visible
        offset = 0.012 * (k - (len(labels) - 1) / 2)
        style = {"color": color, "marker": markers[k % len(markers)], "label": label}
        ax1.plot(lengths, [f + offset for f in frac], "-", **style)
        pts = [(r.config.length, r.metric) for r in runs if math.isfinite(r.metric)]
        if pts:
            ax2.scatter(*zip(*pts), color=color, alpha=0.5, s=14)
            means = []
            for T in lengths:
                vals = [m for (L, m) in pts if L == T]
                if vals:
                    means.append((T, sum(vals) / len(vals)))
            ax2.plot(*zip(*means), "-", **style)
    from matplotlib.ticker import NullLocator

    for ax in (ax1, ax2):
        if len(all_lengths) > 1 and all_lengths[-1] / all_lengths[0] >= 5:
            ax.set_xscale("log")
        ax.set_xticks(all_lengths, [str(T) for T in all_lengths])
        ax.xaxis.set_minor_locator(NullLocator())  # only the lengths that were run
    ax1.set_ylim(-0.05, 1.05)
    ax1.set_xlabel("T (steps to remember across)")
    ax1.set_ylabel("fraction of seeds that succeed")
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    ax2.set_xlabel("T")
    ax2.set_ylabel(f"final {memory_metric_name(task)}")
    if task == "adding":
        ax2.set_yscale("log")
        ax2.axhline(0.01, color="green", ls="--", lw=0.8, label="success (0.01)")
        ax2.axhline(ADDING_BASELINE_MSE, color="grey", ls=":", lw=0.8, label="predict 1 (1/6)")
    else:
        ax2.axhline(0.99, color="green", ls="--", lw=0.8, label="success (0.99)")
        chance = 0.5 if task == "bit" else 1.0 / results[0].config.copy_alphabet
        ax2.axhline(chance, color="grey", ls=":", lw=0.8, label=f"chance ({chance:.2g})")
    ax2.grid(alpha=0.3, which="both")
    ax2.legend(fontsize=8)
    fig.suptitle(f"{task}: {memory_success_text(task)}")
    fig.tight_layout()
    path = Path(path)
    _save_figure(fig, path)
    return path


def plot_memory_curves(results: Sequence[MemoryResult], path: str | Path) -> Path:
    """Training loss and gradient norm before clipping against step, one line per run."""
    plt = _pyplot()
    several = len({r.config.clip for r in results}) > 1
    labels = list(dict.fromkeys(_run_label(r.config.cell, r.config.clip, several) for r in results))
    color_of = dict(zip(labels, _colors(len(labels))))
    lengths = sorted({r.config.length for r in results})
    styles = dict(zip(lengths, ["-", "--", "-.", ":"] * (len(lengths) // 4 + 1)))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.5))
    seen = set()
    for r in results:
        label = _run_label(r.config.cell, r.config.clip, several)
        if not r.curve:
            continue
        steps, losses, norms = zip(*r.curve)
        # a few runs: every step (spikes stay visible); many: light smoothing to stay readable
        k = 1 if len(results) <= 4 else max(1, len(losses) // 100)
        key = (label, r.config.length)
        legend = f"{label} T={r.config.length}" if key not in seen else None
        seen.add(key)
        style = {"color": color_of[label], "ls": styles[r.config.length], "lw": 1, "alpha": 0.75}
        ax1.plot(steps[k - 1 :], _moving_average(losses, k), label=legend, **style)
        ax2.plot(steps[k - 1 :], _geometric_average(norms, k), **style)
        if r.diverged:
            ax1.plot(steps[-1], 1.0, "x", color=color_of[label], ms=9)
    ax1.set_yscale("log")
    ax1.set_xlabel("step")
    ax1.set_ylabel("training loss")
    ax1.grid(alpha=0.3, which="both")
    ax1.legend(fontsize=7, ncol=2)
    ax2.set_yscale("log")
    ax2.set_xlabel("step")
    ax2.set_ylabel("gradient norm before clipping")
    for clip in sorted({r.config.clip for r in results if r.config.clip}):
        ax2.axhline(clip, color="grey", ls="--", lw=0.8)
    ax2.grid(alpha=0.3, which="both")
    fig.tight_layout()
    path = Path(path)
    _save_figure(fig, path)
    return path


def _geometric_average(values: Sequence[float], k: int) -> list[float]:
    """Moving geometric mean over k steps (for norms spanning many decades)."""
    logs = [math.log(v) if v > 0 and math.isfinite(v) else math.nan for v in values]
    return [math.exp(v) for v in _moving_average(logs, k)]


def _moving_average(values: Sequence[float], k: int) -> list[float]:
    """Mean over each window of k values, skipping non-finite ones (nan where none is finite)."""
    import numpy as np

    v = np.asarray(values, dtype=float)
    ok = np.isfinite(v)
    window = np.ones(k)
    total = np.convolve(np.where(ok, v, 0.0), window, mode="valid")
    count = np.convolve(ok.astype(float), window, mode="valid")
    with np.errstate(invalid="ignore", divide="ignore"):
        return list(np.where(count > 0, total / np.maximum(count, 1), np.nan))


def memory_success_text(task: str) -> str:
    if task == "adding":
        return "success = test MSE < 0.01 (predicting 1 scores 1/6 ≈ 0.167)"
    if task == "bit":
        return "success = test accuracy ≥ 0.99 (chance 0.5)"
    return "success = recall accuracy ≥ 0.99"


# ---------------------------------------------------------------------------------------------
# Sweeps
# ---------------------------------------------------------------------------------------------
#: defaults of ``bench memory`` per task: lengths and the step budget of every run
TASK_DEFAULTS = {
    "bit": {"lengths": (10, 50, 100, 200), "steps": 1000},
    "adding": {"lengths": (10, 50, 100, 200), "steps": 4000},
    "copy": {"lengths": (10, 20, 50, 100), "steps": 3000},
}


def run_memory_benchmark(
    base: MemoryConfig,
    cells: Sequence[str],
    lengths: Sequence[int],
    seeds: Sequence[int],
    clips: Sequence[float] = (1.0,),
    progress: bool = True,
    jobs: int = 1,
    threads: int = 1,
) -> list[MemoryResult]:
    """Train every (clip, cell, length, seed) with ``base``'s other settings; one progress bar.

    Runs are independent (each seeds its own data and weights), so ``jobs`` > 1 trains that many
    at once in worker processes with ``threads`` torch threads each; the results are the same
    and come back in plan order (clip, cell, length, seed). The bar counts training steps over
    the whole sweep; a run that succeeds early moves it on by the steps it did not need.
    """
    from tqdm.auto import tqdm

    for cell in cells:
        if cell not in MEMORY_CELLS:
            raise ValueError(f"unknown cell {cell!r}; expected some of {', '.join(MEMORY_CELLS)}")
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1; got {jobs}")
    plan = [
        MemoryConfig(**{**asdict(base), "clip": clip, "cell": cell, "length": T, "seed": seed})
        for clip in clips
        for cell in cells
        for T in sorted(lengths)
        for seed in seeds
    ]
    several = len(clips) > 1
    bar = tqdm(
        total=len(plan) * base.steps,
        disable=not progress,
        unit="step",
        dynamic_ncols=True,
        mininterval=0.5,
    )

    def describe(cfg: MemoryConfig, result: MemoryResult) -> str:
        outcome = f"ok@{result.steps_to_success}" if result.success else f"{result.metric:.3g}"
        return f"{_run_label(cfg.cell, cfg.clip, several)} T={cfg.length} s{cfg.seed} {outcome}"

    try:
        if jobs == 1:
            results = []
            for cfg in plan:
                label = f"{_run_label(cfg.cell, cfg.clip, several)} T={cfg.length} s{cfg.seed}"

                def on_step(step, loss, metric, label=label):
                    bar.update(1)
                    if step % 50 == 0:
                        bar.set_postfix_str(f"{label} loss={loss:.3g}", refresh=False)

                result = train_memory(cfg, on_step)
                bar.update(cfg.steps - result.steps)
                bar.set_postfix_str(describe(cfg, result), refresh=False)
                results.append(result)
            return results
        return _run_parallel(plan, jobs, threads, bar, describe)
    finally:
        bar.close()


def _run_parallel(plan, jobs, threads, bar, describe) -> list[MemoryResult]:
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    ctx = multiprocessing.get_context("spawn")  # no fork of a process that runs torch threads
    counter = ctx.Value("q", 0)
    results: list[MemoryResult | None] = [None] * len(plan)
    # longest sequences first, so the last runs to finish are short ones
    order = sorted(range(len(plan)), key=lambda k: -plan[k].length)
    pool = ProcessPoolExecutor(
        jobs, mp_context=ctx, initializer=_worker_init, initargs=(counter, threads)
    )
    try:
        futures = {pool.submit(_worker_run, plan[k]): k for k in order}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            for f in done:
                k = futures[f]
                results[k] = f.result()
                bar.set_postfix_str(describe(plan[k], results[k]), refresh=False)
            bar.update(counter.value - bar.n)
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return results  # type: ignore[return-value]


_STEP_COUNTER = None  # in a worker process: the shared count of steps done


def _worker_init(counter, threads: int) -> None:
    global _STEP_COUNTER
    _STEP_COUNTER = counter
    torch.set_num_threads(threads)


def _worker_run(cfg: MemoryConfig) -> MemoryResult:
    unreported = 0

    def report(n: int) -> None:
        with _STEP_COUNTER.get_lock():
            _STEP_COUNTER.value += n

    def on_step(step, loss, metric):
        nonlocal unreported
        unreported += 1
        if unreported == 20:
            report(unreported)
            unreported = 0

    result = train_memory(cfg, on_step)
    report(unreported + cfg.steps - result.steps)
    return result


# ---------------------------------------------------------------------------------------------
# Commands: ``rnnkit diagnose gradients`` and ``rnnkit bench memory``
# ---------------------------------------------------------------------------------------------
def _out_dir(out: str | None, default_name: str) -> Path:
    from rnnkit.checkpoint import default_run_dir

    path = Path(out) if out else default_run_dir(default_name)
    path.mkdir(parents=True, exist_ok=True)
    return path


def language_model_probe(
    model: nn.Module, ids: Tensor, length: int, batch_size: int, seed: int = 0
) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
    """Real inputs and a real loss for diagnosing a trained language model's ``.rnn`` layer.

    Cuts ``batch_size`` windows of ``length + 1`` tokens at random offsets of ``ids`` (1-D);
    returns the embedded inputs ``x (B, T, E)`` (part of the graph, so the embedding gets its
    gradient) and ℓ(h_T) = cross-entropy of the model's next-token prediction after the last step.
    """
    n = ids.numel()
    if n < length + 1:
        raise ValueError(f"the text has {n} tokens; --length {length} needs at least {length + 1}")
    gen = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, n - length, (batch_size,), generator=gen)
    windows = torch.stack([ids[s : s + length + 1] for s in starts.tolist()])  # (B, T+1)
    device = next(model.parameters()).device
    windows = windows.to(device)
    x = model.embedding(windows[:, :-1])  # (B, T, E)
    x.retain_grad()
    targets = windows[:, -1]

    def loss_fn(h_last: Tensor) -> Tensor:
        return F.cross_entropy(model.decoder(h_last), targets, reduction="none")

    return x, loss_fn


def _diagnose_run(args) -> GradientFlow:
    from rnnkit.api import load
    from rnnkit.checkpoint import RunDir
    from rnnkit.config import from_dict

    run = RunDir(args.run)
    config = run.load_config()
    if config.get("task") != "lm":
        raise ValueError(
            f"{args.run}: diagnose gradients --run supports language-model runs (task 'lm'); "
            f"this is a {config.get('task')!r} run"
        )
    from rnnkit.tasks.language_model import LanguageModelData, read_corpus

    model = load(args.run, tag=args.tag).double()  # float64: tiny norms stay measurable
    _, valid_text, _ = read_corpus(from_dict(LanguageModelData, config["data"]))
    ids = torch.tensor(model.vocab.encode(valid_text, unknown="unk"), dtype=torch.long)
    x, loss_fn = language_model_probe(model, ids, args.length, args.batch_size, args.seed)
    c = model.config
    label = f"{Path(args.run).name} ({c.cell}, H={c.hidden_size}, {c.num_layers} layer)"
    return gradient_flow(
        model.rnn, x, loss_fn, label=label, clip=args.clip, params=list(model.parameters())
    )


def cmd_diagnose_gradients(args) -> int:
    """``rnnkit diagnose gradients``: gradient norms across time for fresh or trained layers."""
    import json

    from tqdm.auto import tqdm

    if args.length < 2:
        raise ValueError(f"--length must be at least 2; got {args.length}")
    if args.threads < 1:
        raise ValueError(f"--threads must be at least 1; got {args.threads}")
    torch.set_num_threads(args.threads)
    if args.run and args.compare:
        raise ValueError("give either --run (a trained model) or --compare (fresh ones), not both")
    if args.run:
        with tqdm(total=1, disable=args.no_progress, unit="model") as bar:
            flows = [_diagnose_run(args)]
            bar.update(1)
        out = Path(args.out) if args.out else Path(args.run)  # plots live in the run directory
        out.mkdir(parents=True, exist_ok=True)
        title = f"trained model {args.run}, T={args.length}, real text"
    else:
        if args.compare:
            specs = [parse_cell_spec(item) for item in args.compare.split(";") if item.strip()]
        else:
            specs = [spec_from_args(args)]
        layers = []
        for spec in specs:  # build all first: a bad option fails before any work or output
            with torch.random.fork_rng():
                torch.manual_seed(args.seed)  # every configuration gets the same draw
                layers.append(spec.build(args.input_size, args.hidden_size).double())
        gen = torch.Generator().manual_seed(args.seed)
        x = torch.randn(args.batch_size, args.length, args.input_size, generator=gen)
        x = x.double()  # float64: a tanh RNN's norms fall below float32's range within ~100 steps
        flows = [
            gradient_flow(layer, x, label=spec.label(), clip=args.clip)
            for spec, layer in tqdm(
                list(zip(specs, layers)), disable=args.no_progress, unit="config"
            )
        ]
        out = _out_dir(args.out, "diagnose-gradients")
        title = (
            f"fresh layers, H={args.hidden_size}, T={args.length}, inputs ~ N(0, 1), loss = u·h_T"
        )
    csv_path = write_gradient_csv(flows, out / "gradients.csv")
    png_path = plot_gradient_flow(flows, out / "gradients.png", title)
    if args.json:
        for g in flows:
            print(
                json.dumps(
                    {
                        "config": g.label,
                        "length": g.length,
                        "grad_state": g.grad_state,
                        "grad_x": g.grad_x,
                        "jacobian_norm": g.jacobian,
                        "ratio_50_1": g.ratio(50),
                        "grad_norm": g.param_grad_norm,
                        "clipped_grad_norm": g.clipped_grad_norm,
                    }
                )
            )
    else:
        print(f"‖∂L_T/∂s_t‖ at distance d = T − t ({title}); clip = {args.clip:g}")
        print(gradient_table(flows))
    log.info("wrote %s and %s", csv_path, png_path)
    return 0


def _int_list(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{what} must be comma-separated integers; got {text!r}") from None
    if not values or min(values) < 1:
        raise ValueError(f"{what} must be positive integers; got {text!r}")
    return values


def cmd_bench_memory(args) -> int:
    """``rnnkit bench memory``: success table and plots of a memory task over cells × lengths."""
    defaults = TASK_DEFAULTS[args.task]
    cells = [c.strip() for c in args.cells.split(",") if c.strip()]
    for c in cells:
        if c not in MEMORY_CELLS:
            raise ValueError(
                f"--cells: unknown cell {c!r}; expected some of {', '.join(MEMORY_CELLS)}"
            )
    lengths = _int_list(args.lengths, "--lengths") if args.lengths else list(defaults["lengths"])
    if args.seeds < 1:
        raise ValueError(f"--seeds must be at least 1; got {args.seeds}")
    if args.symbols < 1 or args.noise < 0 or args.eval_every < 1:
        raise ValueError("--symbols and --eval-every must be >= 1 and --noise >= 0")
    if args.no_clip:
        clips = [0.0]
    else:
        try:
            clips = [float(v) for v in str(args.clip).split(",") if v.strip()]
        except ValueError:
            raise ValueError(
                f"--clip must be a number or a comma list (0 = off); got {args.clip!r}"
            ) from None
        if not clips or min(clips) < 0:
            raise ValueError(f"--clip values must be >= 0; got {args.clip!r}")
    steps = args.steps if args.steps is not None else defaults["steps"]
    if steps < 1:
        raise ValueError(f"--steps must be at least 1; got {steps}")
    base = MemoryConfig(
        task=args.task,
        hidden_size=args.hidden_size,
        batch_size=args.batch_size,
        steps=steps,
        lr=args.lr,
        optimizer=args.optimizer,
        init_scale=args.init_scale,
        eval_every=args.eval_every,
        noise=args.noise,
        copy_symbols=args.symbols,
        stop_on_success=not args.full_budget,
    )
    if args.threads < 1:
        raise ValueError(f"--threads must be at least 1; got {args.threads}")
    torch.set_num_threads(args.threads)
    out = _out_dir(args.out, f"bench-memory-{args.task}")
    start = time.monotonic()
    results = run_memory_benchmark(
        base,
        cells,
        lengths,
        list(range(args.seeds)),
        clips,
        progress=not args.no_progress,
        jobs=args.jobs,
        threads=args.threads,
    )
    minutes = (time.monotonic() - start) / 60
    cpu_minutes = sum(r.cpu_seconds for r in results) / 60
    write_memory_csv(results, out / f"memory-{args.task}.csv")
    write_memory_curves_csv(results, out / f"memory-{args.task}-curves.csv")
    plot_memory_results(results, out / f"memory-{args.task}.png")
    plot_memory_curves(results, out / f"memory-{args.task}-curves.png")
    lrs = ", ".join(f"{c} {args.lr if args.lr is not None else DEFAULT_LR[c]:g}" for c in cells)
    print(
        f"{args.task}: {memory_success_text(args.task)}\n"
        f"budget {steps} steps × batch {args.batch_size}, hidden {args.hidden_size}, "
        f"{args.seeds} seed(s), {args.optimizer} lr {lrs}, "
        f"clip {','.join(f'{c:g}' if c else 'off' for c in clips)}"
        + (f", init scale {args.init_scale:g}" if args.init_scale is not None else "")
        + f"; {minutes:.1f} min wall, {cpu_minutes:.1f} min CPU ({args.jobs} job(s) × "
        f"{args.threads} thread(s))\n"
        "cells: k/n @ s = k of n seeds succeeded, median at step s; 0/n (m) = mean final metric"
    )
    print(memory_table(results))
    print(f"wrote {out}/memory-{args.task}.csv, .png, -curves.csv, -curves.png")
    return 0


def add_diagnostic_verbs(verbs) -> None:
    """Add ``diagnose gradients`` and ``bench memory`` to the CLI's sub-parsers ``verbs``."""
    d = verbs.add_parser("diagnose", help="gradient-flow diagnostics of recurrent layers")
    dverbs = d.add_subparsers(dest="what", metavar="WHAT")
    dverbs.required = True
    g = dverbs.add_parser(
        "gradients",
        help="norm of ∂L_T/∂h_t against distance, step-Jacobian norms, clipping",
        description="How the gradient of a last-step loss L_T flows back through time: "
        "‖∂L_T/∂h_t‖, ‖∂L_T/∂x_t‖ and ‖∂h_t/∂h_{t−1}‖₂ for every t, and the parameter-gradient "
        "norm before/after clipping. Writes gradients.csv and gradients.png.",
        epilog="Example: rnnkit diagnose gradients --length 100 --compare "
        '"rnn;rnn --nonlinearity relu --init identity;lstm --forget-bias 1;gru"',
    )
    g.add_argument("--cell", choices=("rnn", "lstm", "gru"), default="rnn", help="(default rnn)")
    add_cell_options(g)
    g.add_argument("--length", type=int, default=100, metavar="T", help="sequence length (100)")
    g.add_argument("--hidden-size", type=int, default=64, help="fresh layers: H (default 64)")
    g.add_argument("--input-size", type=int, default=4, help="fresh layers: inputs (default 4)")
    g.add_argument("--batch-size", type=int, default=32, help="sequences averaged (default 32)")
    g.add_argument("--clip", type=float, default=1.0, help="clipping threshold shown (default 1)")
    g.add_argument("--seed", type=int, default=0, help="seed of weights and inputs (default 0)")
    g.add_argument(
        "--compare",
        metavar="SPECS",
        help='several fresh configurations separated by ";", each "CELL [options]", '
        'e.g. "rnn;rnn --nonlinearity relu --init identity;lstm --forget-bias 1"',
    )
    g.add_argument(
        "--run",
        metavar="RUN",
        help="diagnose a trained language-model run on its validation text (cell flags ignored)",
    )
    g.add_argument("--tag", choices=("best", "last"), default="best", help="--run weights")
    g.add_argument("--out", metavar="DIR", help="output folder (default RUN or runs/diagnose-…)")
    g.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    g.add_argument("--json", action="store_true", help="print one JSON object per configuration")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.set_defaults(func=cmd_diagnose_gradients)

    b = verbs.add_parser("bench", help="benchmarks (memory tasks)")
    bverbs = b.add_subparsers(dest="what", metavar="WHAT")
    bverbs.required = True
    m = bverbs.add_parser(
        "memory",
        help="long-term-memory tasks: success of each cell against sequence length",
        description="Train each cell on a memory task at each length with several seeds and "
        "print a success table; writes memory-TASK.csv/.png and -curves.csv/.png (training "
        "loss and gradient norm before clipping).",
        epilog="Examples: rnnkit bench memory --task adding  |  exploding gradients, with and "
        "without clipping: rnnkit bench memory --task adding --cells rnn --lengths 50 --seeds 1 "
        "--init-scale 3 --optimizer sgd --lr 0.01 --clip 0,1 --steps 600",
    )
    m.add_argument("--task", choices=MEMORY_TASKS, default="adding", help="(default adding)")
    m.add_argument(
        "--cells", default="rnn,irnn,lstm,gru", help="comma list of rnn, irnn, lstm, gru (all)"
    )
    m.add_argument("--lengths", help="comma list of T (default 10,50,100,200; copy 10,20,50,100)")
    m.add_argument("--seeds", type=int, default=3, help="seeds per cell and length (default 3)")
    m.add_argument(
        "--steps",
        type=int,
        help="step budget of each run (default bit 1000, adding 4000, copy 3000)",
    )
    clip = m.add_mutually_exclusive_group()
    clip.add_argument(
        "--clip", default="1.0", help="gradient-norm clip; a comma list runs each (0 = off)"
    )
    clip.add_argument("--no-clip", action="store_true", help="no gradient clipping")
    m.add_argument("--init-scale", type=float, metavar="S", help="W_hh ~ N(0, S²/H)")
    m.add_argument("--noise", type=float, default=1.0, help="bit: std of the noise steps (1)")
    m.add_argument("--symbols", type=int, default=3, help="copy: symbols to recall (3 of 8)")
    m.add_argument("--hidden-size", type=int, default=32, help="(default 32)")
    m.add_argument("--batch-size", type=int, default=64, help="(default 64)")
    m.add_argument(
        "--optimizer",
        choices=("adam", "sgd"),
        default="adam",
        help="adam (default) or sgd (momentum 0.9; shows exploding gradients without clipping)",
    )
    m.add_argument("--lr", type=float, help="learning rate for every cell (default: per cell)")
    m.add_argument("--eval-every", type=int, default=100, help="test every N steps (100)")
    m.add_argument(
        "--full-budget", action="store_true", help="keep training after success (full curves)"
    )
    m.add_argument(
        "--jobs",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="runs trained at once in worker processes (default: 2, or 1 on one core)",
    )
    m.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: small recurrent steps do not gain from more)",
    )
    m.add_argument("--out", metavar="DIR", help="output folder (default runs/bench-memory-…)")
    m.add_argument("--no-progress", action="store_true", help="no progress bar")
    m.set_defaults(func=cmd_bench_memory)
