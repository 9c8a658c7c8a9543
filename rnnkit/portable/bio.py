"""BIO tag sequences (IOB2: ``B-X`` begins an entity of type X, ``I-X`` continues it, ``O`` is
outside) and their entity spans, the way CoNLL's ``conlleval`` reads them (standard library only).

rnnkit's entity metrics (:mod:`rnnkit.metrics`), its tagger and the exported runner's tagger all
read entities with :func:`bio_spans`.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["bio_spans", "is_bio", "split_tag"]


def split_tag(tag: str) -> tuple[str, str]:
    """``("B" | "I", type)`` of ``B-type`` / ``I-type``, ``("O", "")`` of ``O``; a
    :class:`ValueError` for anything else."""
    if tag == "O":
        return "O", ""
    if len(tag) > 2 and tag[1] == "-" and tag[0] in "BI":
        return tag[0], tag[2:]
    raise ValueError(f"not a BIO tag: {tag!r} (expected O, B-<type> or I-<type>)")


def is_bio(tags: Sequence[str]) -> bool:
    """Whether every tag is ``O``, ``B-X`` or ``I-X`` (and at least one is not ``O``)."""
    try:
        kinds = [split_tag(t)[0] for t in tags]
    except ValueError:
        return False
    return any(k != "O" for k in kinds)


def bio_spans(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """Entities of a BIO tag sequence as ``(type, start, end)`` with ``end`` exclusive.

    An entity starts at ``B-X``, or at an ``I-X`` that does not continue an ``X`` entity
    (conlleval's rule), and runs over the ``I-X`` tags that follow.
    """
    spans = []
    kind, start = "", -1
    for i, tag in enumerate(tags):
        prefix, t = split_tag(tag)
        continues = prefix == "I" and t == kind
        if kind and not continues:
            spans.append((kind, start, i))
            kind = ""
        if prefix == "B" or (prefix == "I" and not continues):
            kind, start = t, i
    if kind:
        spans.append((kind, start, len(tags)))
    return spans
