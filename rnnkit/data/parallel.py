"""Parallel text: sentence pairs from two aligned files or one TSV, and the word tokenizer.

* :func:`read_parallel` reads ``(sources, targets)``: either two files where line i of one is the
  translation of line i of the other, or one tab-separated file of ``source<TAB>target`` lines.
  Files ending in ``.gz`` (or starting with gzip's magic bytes) are decompressed transparently.
  Two files with different line counts are an error naming both files and both counts; blank
  pairs are skipped, a pair with only one side blank is an error at that line.
* :func:`tokenize` lower-cases (optionally) and splits words from punctuation; :func:`detokenize`
  glues the tokens back into ordinary text, which is what BLEU is computed on.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

from rnnkit.data.readers import read_text
from rnnkit.errors import DataError, DataFileNotFoundError
from rnnkit.fileio import PathLike
from rnnkit.portable.words import detokenize, tokenize

__all__ = ["detokenize", "read_lines", "read_parallel", "tokenize"]


def read_lines(path: PathLike, encoding: str = "utf-8") -> list[str]:
    """The lines of a text file (gzip-compressed or not), without their line endings."""
    path = Path(path)
    if not path.exists():
        raise DataFileNotFoundError("no such file", path=path)
    if path.is_dir():
        raise DataError("is a directory, expected a text file", path=path)
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic != b"\x1f\x8b":
        text = read_text(path, encoding)
    else:
        try:
            data = gzip.decompress(path.read_bytes())
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"not a readable gzip file ({exc})", path=path) from None
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            raise DataError(
                f"invalid {encoding} at byte {exc.start} of the decompressed text; pass "
                "--encoding if the file uses another encoding",
                path=path,
                line=line,
            ) from None
        except LookupError:
            raise DataError(f"unknown text encoding {encoding!r}") from None
        if not data:
            raise DataError("is empty, expected text", path=path)
        text = text.removeprefix("\ufeff")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline does not start another line
    return [line.rstrip("\r") for line in lines]


def read_parallel(
    source: PathLike, target: PathLike | None = None, encoding: str = "utf-8"
) -> tuple[list[str], list[str]]:
    """Aligned ``(sources, targets)`` sentences.

    With ``target``, line i of ``source`` pairs with line i of ``target``; without it,
    ``source`` is a TSV whose lines are ``source<TAB>target`` (further columns are ignored).
    """
    sources, targets = [], []
    if target is None:
        for n, line in enumerate(read_lines(source, encoding), 1):
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) < 2:
                raise DataError(
                    "expected 'source<TAB>target', found no tab (give two aligned files with "
                    "--src and --tgt, or a TSV)",
                    source,
                    n,
                )
            src, tgt = parts[0].strip(), parts[1].strip()
            if not src or not tgt:
                raise DataError(f"the {'source' if not src else 'target'} side is empty", source, n)
            sources.append(src)
            targets.append(tgt)
    else:
        src_lines, tgt_lines = read_lines(source, encoding), read_lines(target, encoding)
        if len(src_lines) != len(tgt_lines):
            raise DataError(
                f"the parallel files differ in length: {source} has {len(src_lines)} lines but "
                f"{target} has {len(tgt_lines)} lines; line i of each must be a translation pair"
            )
        for n, (src, tgt) in enumerate(zip(src_lines, tgt_lines), 1):
            src, tgt = src.strip(), tgt.strip()
            if not src and not tgt:
                continue
            if not src or not tgt:
                raise DataError(
                    f"empty line, while line {n} of {target if not src else source} is not",
                    source if not src else target,
                    n,
                )
            sources.append(src)
            targets.append(tgt)
    if not sources:
        where = source if target is None else f"{source} and {target}"
        raise DataError(f"no sentence pairs in {where}")
    return sources, targets
