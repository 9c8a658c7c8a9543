"""Numeric time series from CSV/TSV files: reading, missing values, chronological splits and
normalisation fitted on the training part only.

* :func:`read_series` reads chosen columns of a delimited text file (comma, tab or whitespace; a
  header row optional) into a :class:`Series`, keeps a date/time column as labels for plots, and
  handles missing cells (empty, ``NA``, ``NaN``, ``?`` …) in one of four declared ways, reported in
  :attr:`Series.report`:

  - ``mask`` (default): the value stays NaN. Forecasting uses it as an *input* only through
    :func:`causal_fill` (the last observed value carried forward — never a later one) and leaves
    it out of every loss and metric as a *target*;
  - ``ffill``: replaced by the last observed value (causal);
  - ``interpolate``: replaced by linear interpolation between its neighbours in row order (this
    looks one observation ahead, so a filled input can carry information from the future);
  - ``error``: a :class:`~rnnkit.errors.DataError` naming the first one.

  With ``ffill``/``interpolate``, leading rows before a column's first observation have nothing
  to fill from and are dropped (also reported).
* :func:`chronological_split` cuts ``[0, N)`` into train / validation / test in time order,
  never shuffling across time.
* :class:`Normalizer` is fitted on the training rows only: z = (f(x) − μ) / σ with an optional
  variance-stabilising f (``sqrt`` or ``log1p``), so nothing about the validation or test period
  reaches the model through its input scaling.

Errors name ``file:line`` and what was expected.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from rnnkit.errors import DataError, DataFileNotFoundError
from rnnkit.fileio import PathLike

__all__ = [
    "MISSING_MODES",
    "TRANSFORMS",
    "Normalizer",
    "Series",
    "causal_fill",
    "chronological_split",
    "date_axis",
    "extend_dates",
    "read_series",
]

log = logging.getLogger(__name__)

MISSING_MODES = ("mask", "ffill", "interpolate", "error")
TRANSFORMS = ("none", "sqrt", "log1p")
_MISSING_TOKENS = {"", "na", "n/a", "nan", "null", "none", "?", "-", ".", "missing"}
_DATE_WORDS = ("date", "time", "year", "month", "day", "week", "period", "timestamp")
_DATE_FORMATS = (
    "%Y-%m-%d",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%d %H:%M",
    "%Y%m%d",
    "%Y/%m/%d",
    "%d/%m/%Y",
    "%Y-%m",
    "%b-%d-%Y",
    "%b %Y",
    "%Y-%b",
)


@dataclass
class Series:
    """Numeric columns of one file, in file order.

    ``values (N, C)`` float64 (NaN where a value is missing and ``missing == "mask"``),
    ``observed (N, C)`` whether the file had a value there, ``dates`` the date column's text
    (``None`` without one), ``lines (N,)`` the 1-based file line of each row.
    """

    values: np.ndarray
    columns: list[str]
    dates: list[str] | None
    date_column: str | None
    path: str
    observed: np.ndarray
    lines: np.ndarray
    missing: str = "mask"
    report: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return self.values.shape[0]

    def describe(self) -> str:
        """One line: rows, columns, and what happened to missing values."""
        r = self.report
        text = f"{self.path}: {len(self)} rows × {len(self.columns)} columns ({', '.join(self.columns)})"
        if r.get("missing"):
            per = ", ".join(f"{c}: {n}" for c, n in r["missing"].items() if n)
            text += f"; {sum(r['missing'].values())} missing values ({per}) {r['handled']}"
        if r.get("dropped_leading"):
            text += f"; dropped {r['dropped_leading']} leading rows with nothing to fill from"
        return text


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _sniff_delimiter(path: Path, first_line: str) -> str | None:
    """``\\t`` for .tsv/.tab, ``,`` for .csv, otherwise guessed from the first line (``None``:
    runs of whitespace)."""
    suffix = path.suffix.lower()
    if suffix in (".tsv", ".tab"):
        return "\t"
    if suffix == ".csv":
        return ","
    if "\t" in first_line:
        return "\t"
    if "," in first_line:
        return ","
    if ";" in first_line:
        return ";"
    return None


def _rows(text: str, delimiter: str | None) -> list[tuple[int, list[str]]]:
    """(line number, fields) for every non-blank, non-comment line."""
    out = []
    if delimiter is None:
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip() and not line.lstrip().startswith("#"):
                out.append((number, line.split()))
        return out
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    for fields in reader:
        number = reader.line_num
        if not any(f.strip() for f in fields) or fields[0].lstrip().startswith("#"):
            continue
        out.append((number, [f.strip() for f in fields]))
    return out


def _pick_column(name: str, header: list[str], path: Path, header_line: int) -> int:
    if name in header:
        return header.index(name)
    lowered = [h.lower() for h in header]
    if name.lower() in lowered:
        return lowered.index(name.lower())
    if name.isdigit() and 1 <= int(name) <= len(header):
        return int(name) - 1  # 1-based column number
    raise DataError(
        f"no column {name!r}; the header has {', '.join(repr(h) for h in header)}",
        path,
        header_line,
    )


def read_series(
    path: PathLike,
    columns: list[str] | str | None = None,
    date_column: str | None = "auto",
    missing: str = "mask",
    delimiter: str | None = "auto",
    encoding: str = "utf-8",
) -> Series:
    """Read numeric columns of a CSV/TSV/whitespace-separated file into a :class:`Series`.

    Args:
        path: the file. A first row with any non-numeric field is a header; otherwise the
            columns are named ``1``, ``2``, … (their 1-based numbers).
        columns: names (or 1-based numbers), a list or one comma-separated string; default every
            column except the date column.
        date_column: a column kept as text labels (for plots and forecast dates); ``"auto"``
            takes the first column when its name looks like a date/time (``date``, ``year``,
            ``t``, …) or its first value is not a number; ``None`` or ``"none"``: no date column.
        missing: ``mask``, ``ffill``, ``interpolate`` or ``error`` (see the module docstring).
        delimiter: ``"auto"`` (by extension, then from the first line), ``","``, ``"\\t"``, …,
            or ``None`` for runs of whitespace.
        encoding: text encoding of the file.

    Raises:
        DataError: ``file:line: what was expected`` for an unknown column, a non-numeric cell,
            a row with the wrong number of fields, a missing value under ``missing="error"``,
            or a file with no data rows.
    """
    path = Path(path)
    if missing not in MISSING_MODES:
        raise DataError(f"missing must be one of {', '.join(MISSING_MODES)}; got {missing!r}")
    if not path.exists():
        raise DataFileNotFoundError("no such file", path)
    if path.is_dir():
        raise DataError("is a directory, expected a CSV/TSV file", path)
    try:
        text = path.read_text(encoding=encoding)
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise DataError(
            f"not {encoding} text (byte 0x{e.object[e.start]:02x})", path, line
        ) from None
    first = next((ln for ln in text.splitlines() if ln.strip()), "")
    if not first:
        raise DataError("is empty, expected a header and rows of numbers", path)
    sep = _sniff_delimiter(path, first) if delimiter == "auto" else delimiter
    rows = _rows(text, sep)
    if not rows:
        raise DataError("has no rows, expected a header and rows of numbers", path)

    header_line, first_fields = rows[0]
    has_header = any(not _is_number(f) and f.lower() not in _MISSING_TOKENS for f in first_fields)
    if has_header:
        header, body = first_fields, rows[1:]
    else:
        header, body = [str(i + 1) for i in range(len(first_fields))], rows
    if len(set(header)) != len(header):
        dup = next(h for h in header if header.count(h) > 1)
        raise DataError(f"column name {dup!r} appears twice in the header", path, header_line)
    if not body:
        raise DataError("has a header but no data rows", path, header_line)

    date_index = None
    if date_column == "auto":
        name0 = header[0].lower()
        if len(header) > 1 and (
            name0 in ("t", "ts")
            or any(w in name0 for w in _DATE_WORDS)
            or not _is_number(body[0][1][0])
        ):
            date_index = 0
    elif date_column not in (None, "", "none"):
        date_index = _pick_column(date_column, header, path, header_line)

    if columns is None or columns == "":
        picked = [i for i in range(len(header)) if i != date_index]
    else:
        names = [c.strip() for c in columns.split(",")] if isinstance(columns, str) else columns
        picked = [_pick_column(c, header, path, header_line) for c in names if c]
    if not picked:
        raise DataError("no value columns to read (only a date column?)", path, header_line)
    if date_index is not None and date_index in picked:
        raise DataError(f"column {header[date_index]!r} is the date column, not a value", path)

    n, width = len(body), len(header)
    values = np.full((n, len(picked)), np.nan)
    dates = [] if date_index is not None else None
    lines = np.empty(n, dtype=np.int64)
    for r, (number, fields) in enumerate(body):
        if len(fields) != width:
            raise DataError(
                f"expected {width} fields (as in the {'header' if has_header else 'first row'}), "
                f"got {len(fields)}",
                path,
                number,
            )
        lines[r] = number
        if dates is not None:
            dates.append(fields[date_index])
        for c, i in enumerate(picked):
            cell = fields[i]
            if cell.lower() in _MISSING_TOKENS:
                if missing == "error":
                    raise DataError(
                        f"column {header[i]!r} has no value; pass missing=mask, ffill or "
                        "interpolate to accept gaps",
                        path,
                        number,
                    )
                continue
            try:
                v = float(cell)
            except ValueError:
                raise DataError(
                    f"column {header[i]!r}: expected a number, got {cell!r}", path, number
                ) from None
            if not math.isfinite(v):
                raise DataError(
                    f"column {header[i]!r}: expected a finite number, got {cell!r}", path, number
                )
            values[r, c] = v

    names = [header[i] for i in picked]
    observed = ~np.isnan(values)
    counts = {name: int((~observed[:, c]).sum()) for c, name in enumerate(names)}
    for c, name in enumerate(names):
        if not observed[:, c].any():
            raise DataError(f"column {name!r} has no values at all", path, header_line)
    report: dict = {"rows": n, "missing": counts, "dropped_leading": 0}
    if missing == "mask":
        report["handled"] = "masked (inputs carry the last observed value; not scored as targets)"
    elif missing == "ffill":
        report["handled"] = "filled with the last observed value"
    else:
        report["handled"] = "filled by linear interpolation between neighbours"
    if missing in ("ffill", "interpolate") and sum(counts.values()):
        start = max(int(np.argmax(observed[:, c])) for c in range(len(names)))
        values = values[start:]
        if missing == "ffill":
            values = causal_fill(values)
        else:
            values = _interpolate(values)
        observed, lines = observed[start:], lines[start:]
        dates = dates[start:] if dates is not None else None
        report["dropped_leading"] = start
        report["rows"] = values.shape[0]
    series = Series(
        values=values,
        columns=names,
        dates=dates,
        date_column=header[date_index] if date_index is not None else None,
        path=str(path),
        observed=observed,
        lines=lines,
        missing=missing,
        report=report,
    )
    if sum(counts.values()):
        log.info("%s", series.describe())
    return series


def causal_fill(values: np.ndarray) -> np.ndarray:
    """Each NaN replaced by the last non-NaN value *above* it in its column (rows are time).

    Uses only the past, so filling an input window never reveals a later observation. NaNs before
    a column's first observation stay NaN.
    """
    values = np.array(values, dtype=np.float64, copy=True)
    if values.ndim == 1:
        return causal_fill(values[:, None])[:, 0]
    n = values.shape[0]
    ok = ~np.isnan(values)
    index = np.where(ok, np.arange(n)[:, None], -1)  # (N, C) row of the last observation so far
    np.maximum.accumulate(index, axis=0, out=index)
    cols = np.arange(values.shape[1])[None, :]
    filled = values[np.maximum(index, 0), cols]
    return np.where(index >= 0, filled, np.nan)


def _interpolate(values: np.ndarray) -> np.ndarray:
    out = values.copy()
    t = np.arange(values.shape[0])
    for c in range(values.shape[1]):
        ok = ~np.isnan(values[:, c])
        out[:, c] = np.interp(t, t[ok], values[ok, c])  # ends: the nearest observation
    return out


def chronological_split(n: int, valid_fraction: float, test_fraction: float) -> tuple[int, int]:
    """Boundaries ``(a, b)``: rows ``[0, a)`` train, ``[a, b)`` validation, ``[b, n)`` test.

    n_test = round(n · test_fraction), n_valid = round(n · valid_fraction); time order is kept.
    """
    for name, f in (("valid_fraction", valid_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= f < 1.0:
            raise DataError(f"{name} must lie in [0, 1); got {f}")
    n_test = int(round(n * test_fraction))
    n_valid = int(round(n * valid_fraction))
    a = n - n_valid - n_test
    if a < 2:
        raise DataError(
            f"the series has {n} rows: nothing left to train on after holding out "
            f"{n_valid} for validation and {n_test} for test"
        )
    return a, n - n_test


class Normalizer:
    """z = (f(x) − μ) / σ per column, μ and σ from the training rows only (NaNs ignored).

    f is ``none`` (identity), ``sqrt`` (√x, for counts such as sunspot numbers) or ``log1p``
    (log(1 + x)); both need x ≥ 0. A constant column gets σ = 1.
    """

    def __init__(self, mean: np.ndarray, std: np.ndarray, transform: str = "none"):
        if transform not in TRANSFORMS:
            raise DataError(f"transform must be one of {', '.join(TRANSFORMS)}; got {transform!r}")
        self.mean = np.asarray(mean, dtype=np.float64)
        self.std = np.asarray(std, dtype=np.float64)
        self.transform = transform

    @classmethod
    def fit(cls, train_values: np.ndarray, transform: str = "none") -> Normalizer:
        """Statistics of ``train_values (N, C)`` — pass the training rows and nothing else."""
        f = forward_transform(np.asarray(train_values, dtype=np.float64), transform)
        if f.ndim == 1:
            f = f[:, None]
        if not np.isfinite(f).any(axis=0).all():
            raise DataError("a column has no observed value in the training part")
        mean = np.nanmean(f, axis=0)
        std = np.nanstd(f, axis=0)
        std = np.where(std > 1e-12, std, 1.0)
        return cls(mean, std, transform)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (forward_transform(x, self.transform) - self.mean) / self.std

    def inverse(self, z: np.ndarray) -> np.ndarray:
        return inverse_transform(np.asarray(z) * self.std + self.mean, self.transform)


def forward_transform(x: np.ndarray, name: str) -> np.ndarray:
    """f(x): identity, √x or log(1 + x). Negative inputs to √/log1p are an error."""
    x = np.asarray(x, dtype=np.float64)
    if name == "none":
        return x
    if np.nanmin(x) < 0:
        raise DataError(f"transform {name!r} needs values >= 0; the data has {np.nanmin(x):g}")
    return np.sqrt(x) if name == "sqrt" else np.log1p(x)


def inverse_transform(y: np.ndarray, name: str) -> np.ndarray:
    """f⁻¹(y): identity, max(y, 0)² or exp(y) − 1 (the square keeps forecasts non-negative)."""
    y = np.asarray(y, dtype=np.float64)
    if name == "none":
        return y
    if name == "sqrt":
        return np.square(np.maximum(y, 0.0))
    return np.expm1(y)


def date_axis(dates: list[str] | None) -> np.ndarray | None:
    """Plot positions for date labels: datetimes for YYYYMMDD, floats when every label is
    another number (years), datetimes when every label parses with one of a few common formats,
    else ``None`` (use row numbers)."""
    if not dates:
        return None
    if all(len(d) == 8 and d.isdigit() for d in dates):  # YYYYMMDD, e.g. 19580329
        try:
            return np.array([datetime.strptime(d, "%Y%m%d") for d in dates], dtype="datetime64[s]")
        except ValueError:
            pass
    if all(_is_number(d) for d in dates):
        return np.array([float(d) for d in dates])
    for fmt in _DATE_FORMATS:
        try:
            return np.array([datetime.strptime(d, fmt) for d in dates], dtype="datetime64[s]")
        except ValueError:
            continue
    return None


def extend_dates(dates: list[str] | None, steps: int) -> list[str]:
    """Labels for ``steps`` rows after the last one, continuing the median spacing of the last
    few labels; ``+1``, ``+2``, … when the labels are not numbers or dates."""
    axis = date_axis(dates[-12:] if dates else None)
    if axis is None or len(axis) < 2:
        return [f"+{h}" for h in range(1, steps + 1)]
    step = np.median(np.diff(axis))
    future = [axis[-1] + step * h for h in range(1, steps + 1)]
    if axis.dtype.kind == "f":
        return [f"{v:g}" for v in future]
    return [str(np.datetime64(v, "D")) for v in future]
