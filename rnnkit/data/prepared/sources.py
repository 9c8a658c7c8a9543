"""Corpus sources for :mod:`rnnkit.data.prepared`: which files an input names, and their text as a
stream of decoded pieces that never holds a whole file in memory.

An input is a file, a folder (every regular file under it, recursively, in sorted order, hidden
files skipped) or a glob pattern (``data/*.txt``, ``books/**/*.gz``); files ending in ``.gz`` are
decompressed on the fly. The corpus is the concatenation of the files in the order given, with a
``"\\n"`` inserted between two files when the first does not end in one (so the last word of a file
never fuses with the first word of the next), and, as :func:`~rnnkit.data.readers.read_text` does,
a leading UTF-8 byte-order mark dropped from each file.

Decoding uses an incremental decoder, so a multi-byte character cut by a chunk edge is completed by
the next chunk; line endings are kept as they are (a CRLF is two characters, as in ``read_text``).
Bytes that are not valid in the encoding give the readers' one-line error: the file, the byte
offset, the line and the offending bytes, with the ``--encoding`` hint.
"""

from __future__ import annotations

import codecs
import glob
import gzip
import io
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from rnnkit.data.readers import _describe_bytes
from rnnkit.errors import DataError, DataFileNotFoundError

__all__ = ["Source", "expand_inputs", "iter_text", "count_characters"]

PathLike = str | os.PathLike[str]

#: bytes read per chunk (decoded text is at most this many characters)
CHUNK_BYTES = 4 << 20
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class Source:
    """One input file as recorded in ``meta.json``: resolved path, size on disk and mtime.

    Two prepares with equal sources (and options) would write the same folder, which is how a
    rerun on unchanged inputs knows it has nothing to do.
    """

    path: str
    bytes: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> Source:
        st = path.stat()
        return cls(str(path.resolve()), st.st_size, st.st_mtime_ns)

    def to_dict(self) -> dict:
        return {"path": self.path, "bytes": self.bytes, "mtime_ns": self.mtime_ns}


def expand_inputs(inputs: Sequence[PathLike] | PathLike, what: str = "input") -> list[Source]:
    """The files that ``inputs`` name (files, folders, glob patterns), in order, without repeats.

    Raises:
        DataFileNotFoundError: a path that does not exist or a pattern that matches nothing.
        DataError: no inputs at all, or a folder without files.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    files: list[Path] = []
    for item in inputs:
        text = os.fspath(item)
        path = Path(text)
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            if not found:
                raise DataError(f"the {what} folder holds no files", path=path)
            files.extend(found)
        elif _GLOB_CHARS & set(text):
            found = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
            if not found:
                raise DataFileNotFoundError(f"the {what} pattern matches no file", path=text)
            files.extend(found)
        else:
            raise DataFileNotFoundError("no such file or folder", path=text)
    if not files:
        raise DataError(f"no {what} files given")
    seen: set[str] = set()
    out = []
    for f in files:
        source = Source.of(f)
        if source.path not in seen:
            seen.add(source.path)
            out.append(source)
    return out


def _open_binary(path: str) -> tuple[io.BufferedIOBase, Callable[[], int]]:
    """The file's bytes (decompressed for ``.gz``) and a function giving how far into the file on
    disk reading has got (for the progress bar)."""
    raw = open(path, "rb")  # noqa: SIM115 - closed by the caller through the returned stream
    if path.endswith(".gz"):
        return gzip.GzipFile(fileobj=raw, mode="rb"), raw.tell
    return raw, raw.tell


def _decode_error(
    exc: UnicodeDecodeError,
    data: bytes,
    path: str,
    encoding: str,
    base: int,
    lines_before: int,
    pending: bytes,
) -> DataError:
    """The readers' message for undecodable bytes; ``data`` is what this decode call saw
    (the decoder's pending bytes first), starting at file offset ``base - len(pending)``."""
    full = pending + data
    start = exc.start
    bad = full[start : max(exc.end, start + 1)][:4]
    line = lines_before - pending.count(b"\n") + full.count(b"\n", 0, start) + 1
    offset = base - len(pending) + start
    suggestion = "latin-1" if codecs.lookup(encoding).name != "latin-1" else "utf-8"
    where = " of the decompressed data" if path.endswith(".gz") else ""
    return DataError(
        f"{_describe_bytes(bad)} at offset {offset}{where} (line {line}) is not valid "
        f"{encoding}; pass --encoding {suggestion} if the file uses another encoding",
        path=path,
    )


def iter_text(
    sources: Sequence[Source],
    encoding: str = "utf-8",
    chunk_bytes: int = CHUNK_BYTES,
    on_bytes: Callable[[int], None] | None = None,
) -> Iterator[str]:
    """The corpus as decoded pieces of at most about ``chunk_bytes`` characters each.

    ``on_bytes(n)`` is told after each chunk how many more bytes of the files on disk were read.
    Joining the pieces gives the corpus described in the module docstring.
    """
    try:
        codec = codecs.lookup(encoding)
    except LookupError:
        raise DataError(f"unknown text encoding {encoding!r}; try utf-8 or latin-1") from None
    utf8 = codec.name in ("utf-8", "utf-8-sig")
    ends_with_newline = True
    for n, source in enumerate(sources):
        try:
            stream, position = _open_binary(source.path)
        except OSError as exc:
            raise DataError(f"cannot read file ({exc.strerror or exc})", path=source.path) from None
        decoder = codec.incrementaldecoder("strict")
        first, base, lines, reported, empty = True, 0, 0, 0, True
        with stream:
            while True:
                try:
                    data = stream.read(chunk_bytes)
                except (OSError, EOFError, gzip.BadGzipFile) as exc:
                    raise DataError(f"cannot read file ({exc})", path=source.path) from None
                final = not data
                pending = decoder.getstate()[0]
                try:
                    text = decoder.decode(data, final=final)
                except UnicodeDecodeError as exc:
                    raise _decode_error(
                        exc, data, source.path, encoding, base, lines, pending
                    ) from None
                base += len(data)
                lines += data.count(b"\n")
                if first and text:
                    first = False
                    if utf8 and text.startswith("\ufeff"):
                        text = text[1:]
                if text:
                    if empty and n and not ends_with_newline:
                        text = "\n" + text  # keep the previous file's last line apart
                    empty = False
                    ends_with_newline = text.endswith("\n")
                    yield text
                if on_bytes is not None:
                    now = position()
                    on_bytes(now - reported)
                    reported = now
                if final:
                    break


def count_characters(sources: Sequence[Source], encoding: str = "utf-8", **kwargs) -> int:
    """Length in characters of the corpus :func:`iter_text` yields (one decoding pass)."""
    return sum(len(piece) for piece in iter_text(sources, encoding, **kwargs))
