"""What every task shares: the ``Output`` of a forward pass and the task registry protocol.

A task module (``rnnkit/tasks/<name>.py``) exposes a ``TASK`` object with:

* ``name`` and ``sections``: the config dataclasses ``{"model": ..., "data": ..., "train": ...}``
  that ``rnnkit train <name>`` turns into flags;
* ``build(configs, device) -> (model, training_task, saved_config)``: read data, build the
  vocabulary and the model for a new run (``saved_config`` is what goes into config.json);
* ``restore(saved_config, run, device) -> (model, training_task | None)``: rebuild both from a
  run directory, for ``--resume`` and for :func:`rnnkit.load`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from torch import Tensor

__all__ = ["Output"]


class Output(NamedTuple):
    """A task model's forward result: raw ``logits`` (never log-probabilities), the ``loss`` when
    targets were given, and the recurrent ``state`` to carry into the next call."""

    logits: Tensor
    loss: Tensor | None = None
    state: Any = None
