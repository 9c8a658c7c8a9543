"""Memory tasks: three synthetic problems whose answer depends on inputs T steps in the past.

Each task has a generator, a success criterion and a baseline:

* ``bit`` — the lecture's toy: the class is the sign of the first input, followed by T steps of
  Gaussian noise. Success: test accuracy ≥ 0.99 (chance 0.5).
* ``adding`` — (Hochreiter & Schmidhuber 1997; Le et al. 2015) T pairs (value ~ U(0, 1), marker);
  two markers are 1, one in each half; predict the sum of the two marked values. Success: test
  MSE < 0.01; predicting the mean 1 scores Var(u₁ + u₂) = 2/12 = 1/6 ≈ 0.167.
* ``copy`` — (Hochreiter & Schmidhuber 1997; Arjovsky et al. 2016) S symbols, T blanks, a
  delimiter; then reproduce the S symbols. Success: recall accuracy ≥ 0.99 (chance 1/K).

Training a model on them is :mod:`rnnkit.insight.memory`; sweeping cells × lengths × seeds is
:mod:`rnnkit.insight.sweep`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

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


def memory_metric_name(task: str) -> str:
    """The name of a memory task's test metric, as tables print it."""
    return "test MSE" if task == "adding" else "test accuracy"


def memory_success(task: str, metric: float) -> bool:
    """adding: MSE < 0.01; bit and copy: accuracy ≥ 0.99."""
    if task == "adding":
        return metric < 0.01
    return metric >= 0.99


def memory_success_text(task: str) -> str:
    """A memory task's success criterion in words, for the report's header."""
    if task == "adding":
        return "success = test MSE < 0.01 (predicting 1 scores 1/6 ≈ 0.167)"
    if task == "bit":
        return "success = test accuracy ≥ 0.99 (chance 0.5)"
    return "success = recall accuracy ≥ 0.99"
