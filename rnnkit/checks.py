"""Argument checks that constructors share, each raising ``ValueError`` with one message form."""

from __future__ import annotations

__all__ = ["check_positive"]


def check_positive(**sizes: int) -> None:
    """Raise ``ValueError`` unless every size is > 0, naming them all:
    ``check_positive(a=3, b=0)`` → "a and b must be positive; got 3, 0"."""
    if any(size <= 0 for size in sizes.values()):
        names = " and ".join(sizes)
        got = ", ".join(str(size) for size in sizes.values())
        raise ValueError(f"{names} must be positive; got {got}")
