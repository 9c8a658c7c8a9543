"""Classification data: reading splits, label order, encoding examples, the vocabulary."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from rnnkit.data.tabular import read_classification, read_numeric_rows
from rnnkit.data.vocab import Vocab
from rnnkit.errors import DataError
from rnnkit.tasks.classifier.config import CHAR_SPECIALS
from rnnkit.tasks.classifier.encoders import char_vocab
from rnnkit.tasks.common.batching import split_holdout

if TYPE_CHECKING:
    from rnnkit.tasks.classifier.config import ClassifierData
    from rnnkit.tasks.classifier.model import Classifier
    from rnnkit.tasks.common.batching import Example


# ---------------------------------------------------------------------------------------------
# Data preparation
# ---------------------------------------------------------------------------------------------
@dataclass
class RawExamples:
    """Examples as read: ``inputs`` (texts, or rows of numbers), ``labels``, source ``lines``."""

    inputs: list[Any]
    labels: list[str]
    lines: list[int]
    path: str

    def subset(self, idx: Sequence[int]) -> RawExamples:
        return RawExamples(
            [self.inputs[i] for i in idx],
            [self.labels[i] for i in idx],
            [self.lines[i] for i in idx],
            self.path,
        )


def read_examples(d: ClassifierData, path: str, encoding: str | None = None) -> RawExamples:
    enc = encoding or d.encoding
    if d.format == "numeric":
        rows = read_numeric_rows(
            path, d.label_column, encoding=enc, skip_bad_lines=d.skip_bad_lines
        )
        return RawExamples(list(rows.features), rows.labels, rows.lines, str(path))
    items = read_classification(
        path, d.format, d.text_column, d.label_column, enc, d.skip_bad_lines
    )
    return RawExamples(
        [e.text for e in items], [e.label for e in items], [e.line for e in items], str(path)
    )


def read_split(d: ClassifierData, part: str) -> RawExamples:
    """The ``train`` or ``valid`` examples: the files given, or a seeded hold-out of --data."""
    if not d.data:
        raise DataError("no training data: pass --data FILE (see recipes/ for examples)")
    if d.valid:
        return read_examples(d, d.data if part == "train" else d.valid)
    everything = read_examples(d, d.data)
    kept, held = split_holdout(len(everything.labels), d.valid_fraction, d.split_seed)
    return everything.subset(kept if part == "train" else held)


def _label_order(labels: Sequence[str]) -> list[str]:
    distinct = set(labels)
    try:
        return sorted(distinct, key=lambda s: (float(s), s))  # numeric labels in numeric order
    except ValueError:
        return sorted(distinct)


def encode_all(model: Classifier, raw: RawExamples, where: str) -> list[Example]:
    index = {label: k for k, label in enumerate(model.labels)}
    out = []
    for x, label, line in zip(raw.inputs, raw.labels, raw.lines):
        if label not in index:
            raise DataError(
                f"label {label!r} was not among the training labels {model.labels[:10]}",
                raw.path,
                line,
            )
        try:
            out.append(model.encode(x, index[label]))
        except DataError as e:
            raise DataError(e.message, raw.path, line) from None
    if not out:
        raise DataError(f"{where}: no examples")
    return out


def resolve_data(d: ClassifierData, train: RawExamples) -> Vocab | None:
    """Fill the data config's derived fields from the training examples (labels, character
    vocabulary, numeric width and scale) and build the token vocabulary (None for numbers)."""
    d.labels = _label_order(train.labels)
    if len(d.labels) < 2:
        raise DataError(f"only one label ({d.labels[0]!r}) in the training data", train.path)
    if d.format == "numeric":
        width = len(train.inputs[0])
        if d.step_size < 1 or width % d.step_size:
            raise DataError(
                f"each row has {width} numbers, not a multiple of step_size {d.step_size}",
                train.path,
            )
        d.num_features = width
        d.feature_scale = float(np.abs(np.stack(train.inputs)).max()) or 1.0
        return None
    texts = [t.lower() if d.lowercase else t for t in train.inputs]
    tokens = [t.split()[: d.max_len] if d.level == "word" else list(t) for t in texts]
    vocab = Vocab.build(tokens, level=d.level, max_size=d.max_vocab, min_freq=d.min_freq)
    if d.level == "word":
        d.chars = char_vocab(tokens).itos[len(CHAR_SPECIALS) :]
    return vocab
