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

from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from rnnkit.inference import EvaluateRequest, EvaluateResult, Message, refuse

__all__ = ["Output", "TaskModel", "saved_configs"]


class Output(NamedTuple):
    """A task model's forward result: raw ``logits`` (never log-probabilities), the ``loss`` when
    targets were given, and the recurrent ``state`` to carry into the next call."""

    logits: Tensor
    loss: Tensor | None = None
    state: Any = None


def saved_configs(saved: dict[str, Any], model_class: type, data_class: type) -> tuple[Any, Any]:
    """The ``model`` and ``data`` sections of a run's config.json as their dataclasses."""
    from rnnkit.config import from_dict

    return from_dict(model_class, saved["model"]), from_dict(data_class, saved["data"])


class TaskModel(nn.Module):
    """Base of every task's model: where it lives and the inference contract it answers.

    A subclass lists the request types of :mod:`rnnkit.inference` it answers in ``answers`` and
    implements :meth:`answer`. :meth:`infer` is the one entry point: it refuses a request not in
    ``answers`` (a ``ValueError`` naming those it takes), answers an ``EvaluateRequest`` with the
    model's ``evaluate_file`` where it has one (models over labelled data), and hands every other
    request to :meth:`answer`.
    """

    #: the request types :meth:`infer` answers
    answers: ClassVar[tuple[type, ...]] = ()

    @property
    def device(self) -> torch.device:
        """The device of the model's parameters."""
        return next(self.parameters()).device

    def infer(self, request: Message, **options: Any) -> Message:
        """The result of ``request`` (``options``: e.g. ``on_text`` for streaming generation)."""
        if not isinstance(request, self.answers):
            return refuse(self, request)
        evaluate_file = getattr(self, "evaluate_file", None)
        if isinstance(request, EvaluateRequest) and evaluate_file is not None:
            r = request
            return EvaluateResult(evaluate_file(r.data, confusion=r.confusion, encoding=r.encoding))
        return self.answer(request, **options)

    def answer(self, request: Message, **options: Any) -> Message:
        """The result of a request this model answers (already checked to be in ``answers``)."""
        raise NotImplementedError(f"{type(self).__name__} must implement answer()")
