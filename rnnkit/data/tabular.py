"""Readers for labelled examples: one text (or one row of numbers) and one label per record.

Four layouts of text classification data, one numeric layout, and word vectors:

* ``label<space>text`` lines (:func:`read_labeled_lines`): the ``stsa.binary.*`` files of SST-2;
* TSV / CSV with a header naming the text and label columns, or with 0-based column indices and
  no header (:func:`read_table`);
* JSON Lines, one object per line with a text and a label key (:func:`read_jsonl`);
* rows of numbers with a label column, optionally gzip-compressed (:func:`read_numeric_rows`):
  the 8×8 digits read as 64-pixel sequences;
* word2vec / GloVe text vectors (:func:`read_word_vectors`).

Every problem a file can have becomes a :class:`~rnnkit.errors.DataError` naming ``file:line``
and saying what was expected and what was found. With ``skip_bad_lines=True`` a malformed record
is reported (logged) and left out instead; a file with no usable record is still an error.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import math
import os
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rnnkit.data.readers import read_text
from rnnkit.errors import DataError
from rnnkit.fileio import PathLike

__all__ = [
    "BadLines",
    "LabeledText",
    "NumericRows",
    "TEXT_FORMATS",
    "chosen_format",
    "detect_format",
    "iter_lines",
    "read_classification",
    "read_jsonl",
    "read_labeled_lines",
    "read_numeric_rows",
    "read_table",
    "read_text_maybe_gzip",
    "read_word_vectors",
]

log = logging.getLogger(__name__)

#: Layouts :func:`read_classification` knows; ``auto`` picks one from the file name.
TEXT_FORMATS = ("auto", "lines", "tsv", "csv", "jsonl")

_MAX_REPORTED = 5  # skipped lines logged one by one before only the total is given


@dataclass(frozen=True)
class LabeledText:
    """One classification example: its ``text``, its ``label`` and the 1-based ``line`` it
    starts on (so later errors can point back at the file)."""

    text: str
    label: str
    line: int


@dataclass(frozen=True)
class NumericRows:
    """``features (N, F)`` float32, ``labels`` (N strings) and each row's 1-based ``lines``."""

    features: np.ndarray
    labels: list[str]
    lines: list[int]


class BadLines:
    """Raise on the first malformed record, or (``skip=True``) log it and count it."""

    def __init__(self, path: PathLike, skip: bool):
        self.path = os.fspath(path)
        self.skip = skip
        self.count = 0
        self.last_line = 0  # the last line :meth:`records` read

    def records(self, text: str) -> Iterator[tuple[int, str]]:
        """The lines of ``text`` that are not blank, as :func:`iter_lines` numbers them; the last
        line read, blank or not, is what :meth:`finish` points at by default."""
        for number, line in iter_lines(text):
            self.last_line = number
            if line.strip():
                yield number, line

    def __call__(self, message: str, line: int) -> None:
        if not self.skip:
            raise DataError(message, self.path, line)
        self.count += 1
        if self.count <= _MAX_REPORTED:
            log.warning("%s:%d: %s (skipped)", self.path, line, message)

    def finish(self, kept: int, what: str, last_line: int | None = None) -> None:
        """Log the total skipped; an error when nothing usable is left (at ``last_line``, by
        default the last line :meth:`records` read)."""
        if last_line is None:
            last_line = self.last_line
        if self.count > _MAX_REPORTED:
            log.warning("%s: %d malformed lines skipped in all", self.path, self.count)
        if kept == 0:
            why = f" ({self.count} malformed lines skipped)" if self.count else ""
            raise DataError(f"no {what} found{why}", self.path, max(last_line, 1))


def read_text_maybe_gzip(path: PathLike, encoding: str = "utf-8") -> str:
    """A text file's content; gzip-compressed files (by their magic bytes) are decompressed."""
    path = Path(path)
    with_magic = False
    try:
        with open(path, "rb") as f:
            with_magic = f.read(2) == b"\x1f\x8b"
    except OSError:
        pass  # read_text below gives the precise error (missing, directory, unreadable)
    if not with_magic:
        return read_text(path, encoding)
    try:
        data = gzip.decompress(path.read_bytes())
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"corrupt gzip data ({e})", path) from None
    if not data:
        raise DataError("is empty after decompression, expected text", path)
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DataError(
            f"byte 0x{data[e.start]:02x} at offset {e.start} is not valid {encoding}", path, line
        ) from None
    except LookupError:
        raise DataError(f"unknown text encoding {encoding!r}; try utf-8 or latin-1") from None


def iter_lines(text: str) -> Iterator[tuple[int, str]]:
    """(1-based number, line without its end) for each line. Only ``\\n`` ends a line (with an
    optional ``\\r`` before it), so the numbers match what editors show."""
    lines = text.split("\n")
    if lines and not lines[-1]:
        lines.pop()  # the newline that ends the last line does not start another
    for number, line in enumerate(lines, start=1):
        yield number, line[:-1] if line.endswith("\r") else line


def _clip(s: str, n: int = 40) -> str:
    return repr(s if len(s) <= n else s[:n] + "…")


# ---------------------------------------------------------------------------------------------
# text + label
# ---------------------------------------------------------------------------------------------
def read_labeled_lines(
    path: PathLike, encoding: str = "utf-8", skip_bad_lines: bool = False
) -> list[LabeledText]:
    """``<label> <text>`` per line (the label is the first whitespace-free field). Blank lines
    are ignored."""
    bad = BadLines(path, skip_bad_lines)
    out: list[LabeledText] = []
    for number, line in bad.records(read_text(path, encoding)):
        parts = line.strip().split(None, 1)
        if len(parts) < 2:
            bad(f"expected '<label> <text>', found only {_clip(parts[0])}", number)
            continue
        out.append(LabeledText(parts[1].strip(), parts[0], number))
    bad.finish(len(out), "'<label> <text>' lines")
    return out


def _column_index(name: str, header: list[str] | None, path, what: str) -> int:
    if header is None:
        return int(name)
    if name not in header:
        shown = ", ".join(repr(h) for h in header[:10])
        raise DataError(
            f"expected a header with a {what} column {name!r}; found columns {shown} "
            f"(choose them with --{what}-column)",
            path,
            1,
        )
    return header.index(name)


def read_table(
    path: PathLike,
    text_column: str = "text",
    label_column: str = "label",
    delimiter: str | None = None,
    encoding: str = "utf-8",
    skip_bad_lines: bool = False,
) -> list[LabeledText]:
    """TSV or CSV examples.

    With column *names* the first line is a header holding both; with two 0-based column
    *indices* (``"0"``, ``"1"``) there is no header. ``delimiter`` defaults to a tab for
    ``.tsv`` files and a comma otherwise. TSV fields are split on tabs as they are (quotes are
    ordinary characters); CSV follows RFC 4180 quoting.
    """
    path = Path(path)
    if delimiter is None:
        delimiter = "\t" if path.name.lower().removesuffix(".gz").endswith(".tsv") else ","
    by_index = text_column.lstrip("-").isdigit() and label_column.lstrip("-").isdigit()
    bad = BadLines(path, skip_bad_lines)
    text = read_text_maybe_gzip(path, encoding)
    if delimiter == "\t":
        rows: Iterable[tuple[int, list[str]]] = (
            (n, line.split("\t")) for n, line in iter_lines(text) if line.strip()
        )
    else:
        rows = _csv_rows(text, delimiter, path)
    header: list[str] | None = None
    out: list[LabeledText] = []
    ti = li = width = 0
    number = 0
    for number, fields in rows:
        if header is None and not by_index:
            header = [f.strip() for f in fields]
            ti = _column_index(text_column, header, path, "text")
            li = _column_index(label_column, header, path, "label")
            width = len(header)
            continue
        if by_index and not width:
            width = len(fields)
            ti, li = int(text_column), int(label_column)
            if not (-width <= ti < width and -width <= li < width):
                raise DataError(
                    f"columns {ti} and {li} requested but the first row has {width} fields",
                    path,
                    number,
                )
        if len(fields) != width:
            bad(f"expected {width} fields, found {len(fields)}", number)
            continue
        body, label = fields[ti].strip(), fields[li].strip()
        if not body:
            bad("the text field is empty", number)
            continue
        if not label:
            bad("the label field is empty", number)
            continue
        out.append(LabeledText(body, label, number))
    if header is None and not by_index and number == 0:
        raise DataError("expected a header line, found no lines", path, 1)
    bad.finish(len(out), "examples", number)
    return out


def _csv_rows(text: str, delimiter: str, path) -> Iterator[tuple[int, list[str]]]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise DataError(f"malformed CSV ({e})", path, reader.line_num or start) from None
        if any(f.strip() for f in row):
            yield start, row


def read_jsonl(
    path: PathLike,
    text_column: str = "text",
    label_column: str = "label",
    encoding: str = "utf-8",
    skip_bad_lines: bool = False,
) -> list[LabeledText]:
    """One JSON object per line with a string under ``text_column`` and a string, integer or
    boolean under ``label_column``. Blank lines are ignored."""
    bad = BadLines(path, skip_bad_lines)
    out: list[LabeledText] = []
    for number, line in bad.records(read_text(path, encoding)):
        try:
            obj = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as e:
            msg = e.msg if isinstance(e, json.JSONDecodeError) else "nesting too deep"
            bad(f"expected a JSON object, found invalid JSON ({msg})", number)
            continue
        if not isinstance(obj, dict):
            bad(f"expected a JSON object, found a {type(obj).__name__}", number)
            continue
        body, label = obj.get(text_column), obj.get(label_column)
        if not isinstance(body, str) or not body.strip():
            bad(f"expected a non-empty string under {text_column!r}, found {body!r:.40}", number)
            continue
        if isinstance(label, bool):
            label = str(label).lower()
        elif isinstance(label, int):
            label = str(label)
        if not isinstance(label, str) or not label.strip():
            bad(f"expected a string or integer under {label_column!r}, found {label!r:.40}", number)
            continue
        out.append(LabeledText(body.strip(), label.strip(), number))
    bad.finish(len(out), "examples")
    return out


def chosen_format(
    format: str, formats: tuple[str, ...], detect: Callable[[PathLike], str], path: PathLike
) -> str:
    """``format`` if it is one of ``formats`` other than ``"auto"``; for ``"auto"``,
    ``detect(path)`` (the format the file name says); a ``ValueError`` for any other."""
    if format not in formats:
        raise ValueError(f"format must be one of {formats}; got {format!r}")
    return detect(path) if format == "auto" else format


def detect_format(path: PathLike) -> str:
    """``tsv``, ``csv`` or ``jsonl`` from the file name (``.gz`` looked through); else
    ``lines`` (``<label> <text>``)."""
    name = Path(path).name.lower().removesuffix(".gz")
    for ext, fmt in ((".tsv", "tsv"), (".csv", "csv"), (".jsonl", "jsonl"), (".json", "jsonl")):
        if name.endswith(ext):
            return fmt
    return "lines"


def read_classification(
    path: PathLike,
    format: str = "auto",
    text_column: str = "text",
    label_column: str = "label",
    encoding: str = "utf-8",
    skip_bad_lines: bool = False,
) -> list[LabeledText]:
    """Read text classification examples in any of :data:`TEXT_FORMATS`."""
    fmt = chosen_format(format, TEXT_FORMATS, detect_format, path)
    if fmt == "lines":
        return read_labeled_lines(path, encoding, skip_bad_lines)
    if fmt == "jsonl":
        return read_jsonl(path, text_column, label_column, encoding, skip_bad_lines)
    return read_table(
        path,
        text_column,
        label_column,
        "\t" if fmt == "tsv" else ",",
        encoding,
        skip_bad_lines,
    )


# ---------------------------------------------------------------------------------------------
# numbers + label
# ---------------------------------------------------------------------------------------------
def _number(s: str) -> float | None:
    try:
        v = float(s)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def read_numeric_rows(
    path: PathLike,
    label_column: str = "-1",
    delimiter: str | None = None,
    encoding: str = "utf-8",
    skip_bad_lines: bool = False,
) -> NumericRows:
    """Rows of numbers, one of which is the label (``label_column``: a 0-based index, negative
    from the end, or a header name). Optionally gzip-compressed.

    The delimiter defaults to a tab for ``.tsv`` and a comma otherwise. A first line whose
    non-label fields are not all numbers is taken as a header. Every row must have the width of
    the first; values must be finite numbers.
    """
    path = Path(path)
    if delimiter is None:
        delimiter = "\t" if path.name.lower().removesuffix(".gz").endswith(".tsv") else ","
    bad = BadLines(path, skip_bad_lines)
    rows: list[list[float]] = []
    labels: list[str] = []
    lines: list[int] = []
    width, li = 0, None
    for number, line in bad.records(read_text_maybe_gzip(path, encoding)):
        fields = [f.strip() for f in line.split(delimiter)]
        if not width:
            width = len(fields)
            if width < 2:
                raise DataError(
                    f"expected at least two {delimiter!r}-separated fields (values and a label), "
                    f"found {width}",
                    path,
                    number,
                )
            if label_column.lstrip("-").isdigit():
                li = int(label_column)
                if not -width <= li < width:
                    raise DataError(
                        f"label column {li} requested but the first row has {width} fields",
                        path,
                        number,
                    )
                li %= width
                rest = fields[:li] + fields[li + 1 :]
                if any(_number(f) is None for f in rest):
                    continue  # a header line
            else:
                if all(_number(f) is not None for f in fields):
                    raise DataError(
                        f"the first line holds numbers, not a header naming the label column "
                        f"{label_column!r}: give the label column's index instead (e.g. "
                        "--label-column -1 for the last field)",
                        path,
                        number,
                    )
                if label_column not in fields:
                    raise DataError(
                        f"expected a header with a label column {label_column!r}; found "
                        f"{', '.join(map(repr, fields[:10]))}",
                        path,
                        number,
                    )
                li = fields.index(label_column)
                continue
        if len(fields) != width:
            bad(f"expected {width} fields, found {len(fields)}", number)
            continue
        values = [_number(f) for k, f in enumerate(fields) if k != li]
        if any(v is None for v in values):
            k = next(i for i, v in enumerate(values) if v is None)
            k = k if k < li else k + 1
            bad(f"field {k + 1}: expected a finite number, found {_clip(fields[k])}", number)
            continue
        if not fields[li]:
            bad("the label field is empty", number)
            continue
        rows.append(values)  # type: ignore[arg-type]
        labels.append(fields[li])
        lines.append(number)
    bad.finish(len(rows), "rows of numbers")
    return NumericRows(np.asarray(rows, dtype=np.float32), labels, lines)


# ---------------------------------------------------------------------------------------------
# word vectors
# ---------------------------------------------------------------------------------------------
def read_word_vectors(
    path: PathLike,
    keep: Iterable[str] | None = None,
    encoding: str = "utf-8",
) -> tuple[dict[str, np.ndarray], int]:
    """word2vec / GloVe *text* vectors: ``word v_1 … v_D`` per line, after an optional
    ``count dim`` header. Returns ``({word: vector (D,)}, D)``, keeping only the words in
    ``keep`` when given (a vocabulary), so large files cost little memory."""
    wanted = set(keep) if keep is not None else None
    vectors: dict[str, np.ndarray] = {}
    dim = 0
    number = 0
    for number, line in iter_lines(read_text_maybe_gzip(path, encoding)):
        fields = line.rstrip().split(" ")
        if not line.strip():
            continue
        if number == 1 and len(fields) == 2 and all(f.isdigit() for f in fields):
            dim = int(fields[1])  # word2vec header: vocabulary size, dimension
            continue
        if not dim:
            dim = len(fields) - 1
            if dim < 1:
                raise DataError(f"expected '<word> <value> …', found {_clip(line)}", path, number)
        if len(fields) < dim + 1:
            raise DataError(
                f"expected a word and {dim} values, found {len(fields)} fields", path, number
            )
        word = " ".join(fields[: len(fields) - dim])  # GloVe 840B has words with spaces
        if wanted is not None and word not in wanted:
            continue
        try:
            vec = np.asarray([float(v) for v in fields[-dim:]], dtype=np.float32)
        except ValueError:
            raise DataError(f"expected {dim} numbers after {_clip(word)}", path, number) from None
        if not np.isfinite(vec).all():
            raise DataError(f"non-finite value in the vector of {_clip(word)}", path, number)
        vectors[word] = vec
    if not dim:
        raise DataError("no vectors found", path, max(number, 1))
    return vectors, dim
