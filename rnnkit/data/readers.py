"""Reading corpora from disk: plain text, the bundled corpora, and train/validation splits.

Every failure a user can cause (a wrong path, an empty file, a file in another encoding) becomes
a one-line :class:`~rnnkit.errors.DataError` that names the file and says what was expected and
what was found, so the CLI can print it and exit 2 instead of showing a traceback.
"""

from __future__ import annotations

import codecs
import logging
from pathlib import Path

from rnnkit.errors import DataError, DataFileNotFoundError
from rnnkit.fileio import PathLike

__all__ = [
    "IRISH_TUNES",
    "TINY_SHAKESPEARE",
    "bundled_path",
    "read_text",
    "split_text",
]

logger = logging.getLogger(__name__)

#: Karpathy's char-rnn Tiny Shakespeare (about 1.1M characters).
TINY_SHAKESPEARE = "tinyshakespeare.txt"
#: A collection of Irish folk tunes in ABC notation.
IRISH_TUNES = "irish_tunes.abc"

_BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"


def bundled_path(name: str) -> Path:
    """Path of a corpus shipped in ``rnnkit/data/bundled/`` (e.g. :data:`TINY_SHAKESPEARE`).

    Raises:
        DataFileNotFoundError: ``name`` is not a bundled file; the message lists those that are.
    """
    path = _BUNDLED_DIR / name
    # Reject path tricks ("../x") as well as plain misses.
    if Path(name).name != name or not path.is_file():
        available = sorted(
            p.name for p in _BUNDLED_DIR.iterdir() if p.is_file() and not p.name.endswith(".md")
        )
        raise DataFileNotFoundError(
            f"no bundled corpus named {name!r}; available: {', '.join(available)}"
        )
    return path


def _describe_bytes(chunk: bytes) -> str:
    hexes = " ".join(f"0x{b:02x}" for b in chunk)
    return f"byte {hexes}" if len(chunk) == 1 else f"bytes {hexes}"


def read_text(path: PathLike, encoding: str = "utf-8") -> str:
    """Read a whole text file.

    Line endings are kept as they are in the file (a character model sees ``\\r`` if the file has
    CRLF endings). With a UTF-8 encoding a leading byte-order mark is dropped.

    Raises:
        DataFileNotFoundError: the file does not exist (also a ``FileNotFoundError``).
        DataError: the path is a directory or unreadable, the file is empty, the encoding is
            unknown, or the bytes are not valid in ``encoding``; for the last, the message gives
            the byte offset, line number and offending byte(s) and suggests ``--encoding``.
    """
    path = Path(path)
    try:
        codec = codecs.lookup(encoding)
    except LookupError:
        raise DataError(f"unknown text encoding {encoding!r}; try utf-8 or latin-1") from None
    if not path.exists():
        raise DataFileNotFoundError("no such file", path=path)
    if path.is_dir():
        raise DataError("is a directory, expected a text file", path=path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read file ({exc.strerror or exc})", path=path) from None
    if not data:
        raise DataError("is empty, expected text", path=path)
    try:
        text = data.decode(codec.name)
    except UnicodeDecodeError as exc:
        bad = data[exc.start : max(exc.end, exc.start + 1)][:4]
        line = data.count(b"\n", 0, exc.start) + 1
        suggestion = "latin-1" if codec.name != "latin-1" else "utf-8"
        raise DataError(
            f"{_describe_bytes(bad)} at offset {exc.start} (line {line}) is not valid "
            f"{encoding}; pass --encoding {suggestion} if the file uses another encoding",
            path=path,
        ) from None
    if codec.name in ("utf-8", "utf-8-sig") and text.startswith("\ufeff"):
        logger.debug("%s: dropping the UTF-8 byte-order mark", path)
        text = text[1:]
    return text


def split_text(text: str, valid_fraction: float = 0.1) -> tuple[str, str]:
    """Split a corpus into ``(train, valid)`` by position: the first part trains, the rest
    validates.

    ``train = text[:int((1 - valid_fraction) * len(text))]``, ``valid`` is the remainder. With the
    default this is the standard Tiny Shakespeare split (first 90% / last 10%). Works for any
    sliceable sequence (a string, a list of tokens, a 1-D tensor).
    """
    if not 0.0 <= valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must be in [0, 1), got {valid_fraction}")
    cut = int((1.0 - valid_fraction) * len(text))
    return text[:cut], text[cut:]
