"""Tasks: one module per use of the recurrent core, each exposing a ``TASK`` (see ``base``).

``get_task(name)`` imports a task's module on demand, so ``rnnkit`` stays quick to import and a
task's optional dependencies load only when that task is used.
"""

from __future__ import annotations

import importlib

from rnnkit.tasks.base import Output

__all__ = ["Output", "TASK_MODULES", "get_task"]

#: ``rnnkit train <name>`` → the module that implements it.
TASK_MODULES: dict[str, str] = {
    "lm": "rnnkit.tasks.language_model",
    "forecast": "rnnkit.tasks.forecaster",
    "music": "rnnkit.tasks.music",
    "classify": "rnnkit.tasks.classifier",
    "tag": "rnnkit.tasks.tagger",
    "translate": "rnnkit.tasks.seq2seq",
    "caption": "rnnkit.tasks.captioner",
}


def get_task(name: str):
    """The ``TASK`` object of task ``name`` (a ``ValueError`` listing the known ones otherwise)."""
    if name not in TASK_MODULES:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASK_MODULES))}")
    return importlib.import_module(TASK_MODULES[name]).TASK
