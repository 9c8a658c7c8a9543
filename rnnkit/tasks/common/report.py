"""How the labelled-data tasks print their evaluation: the per-class (or per-type) table."""

from __future__ import annotations

from typing import Any

__all__ = ["scores_table"]


def scores_table(title: str, scores: dict[str, dict[str, Any]]) -> list[str]:
    """Lines of a precision / recall / F1 / support table, one row per key of ``scores``
    (``title`` heads the first column: "class", "type" …)."""
    lines = [f"{title:>16}  {'precision':>9}  {'recall':>7}  {'f1':>6}  {'support':>7}"]
    for name, s in scores.items():
        lines.append(
            f"{name:>16}  {s['precision']:>9.4f}  {s['recall']:>7.4f}  {s['f1']:>6.4f}  "
            f"{s['support']:>7}"
        )
    return lines
