"""Config options that a task inherits from a shared options dataclass but defaults otherwise."""

from __future__ import annotations

from dataclasses import field
from typing import Any

__all__ = ["with_default"]


def with_default(owner: type, name: str, default: Any) -> Any:
    """Field ``name`` of dataclass ``owner`` with another ``default``: what a subclass writes to
    give an inherited option its own default while keeping its help text and choices (the field
    keeps its place among ``owner``'s fields, so its ``--flag`` does too)."""
    return field(default=default, metadata=owner.__dataclass_fields__[name].metadata)
