"""How a task model over labelled data answers the inference contract: its own request, or
``EvaluateRequest`` (metrics of ``evaluate_file``), anything else refused."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rnnkit.inference import EvaluateRequest, EvaluateResult, Message, refuse


def answer(model: Any, request: Message, kind: type, run: Callable[[Any], Message]) -> Message:
    """``run(request)`` when ``request`` is a ``kind``; evaluation on a file; else a ValueError."""
    if isinstance(request, kind):
        return run(request)
    if isinstance(request, EvaluateRequest):
        r = request
        return EvaluateResult(
            model.evaluate_file(r.data, confusion=r.confusion, encoding=r.encoding)
        )
    return refuse(model, request)
