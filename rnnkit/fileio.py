"""Atomic file writes and the path type every reader and writer takes.

Data goes to a temporary file in the same directory, is flushed and fsync'ed, then ``os.replace``-d
over the target, and the directory entry is fsync'ed: a crash (or Ctrl-C) mid-write leaves the
previous file intact and never a half-written one under the real name. :func:`append_jsonl` is the
one append-only writer (a log whose reader tolerates a torn last line). This module sits below
both :mod:`rnnkit.data` and :mod:`rnnkit.checkpoint` and imports neither torch nor numpy.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "PathLike",
    "append_jsonl",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
]

#: What every reader and writer of rnnkit accepts as a file name.
PathLike = str | os.PathLike[str]


def _fsync_dir(directory: Path) -> None:
    """Persist a rename: on POSIX the directory entry itself must be fsync'ed."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # Windows cannot open directories; the rename is durable enough there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the new one.

    The temporary file lives in the same directory (``os.replace`` is only atomic within one
    file system) and is removed if anything fails before the rename.
    """
    path = Path(path)
    directory = path.parent
    while True:
        tmp = directory / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            # 0o666 filtered by the umask: the final file gets ordinary permissions, unlike
            # tempfile.mkstemp's 0o600.
            fd = os.open(
                tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666
            )
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(directory)


def atomic_write_text(path: PathLike, text: str, encoding: str = "utf-8") -> None:
    """Atomically write ``text`` (newlines written as given, no translation)."""
    atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: PathLike, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON, keys in insertion order, UTF-8, final newline."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False) + "\n")


def append_jsonl(path: PathLike, obj: Mapping[str, Any]) -> None:
    """Append ``obj`` as one JSON line to ``path`` and fsync it.

    If a previous writer died mid-line (the file does not end in a newline), the new record starts
    on a fresh line so only the torn record is lost.
    """
    line = json.dumps(obj, ensure_ascii=False)
    with open(path, "a+b") as f:
        f.seek(0, os.SEEK_END)
        prefix = b""
        if f.tell() > 0:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                prefix = b"\n"
        f.write(prefix + line.encode("utf-8") + b"\n")
        f.flush()
        os.fsync(f.fileno())
