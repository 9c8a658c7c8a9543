"""Images for captioning: read them straight out of a tar (or a folder), decode them with Pillow,
read caption files, and cache per-image arrays on disk under a hash of the image's bytes.

* :func:`open_images` gives an :class:`ImageTar` (members read on demand with :mod:`tarfile`;
  nothing is extracted to disk) or an :class:`ImageFolder`, both with ``names``, ``read(name)``
  and ``where(name)`` (``archive.tar:member.jpg``, the name used in error messages).
* :func:`decode_image` turns bytes into a ``(size, size, 3)`` uint8 RGB array. A file Pillow cannot
  decode (not an image, truncated, corrupt) is a one-line :class:`~rnnkit.errors.DataError`
  naming it. Images are resized to a square without keeping the aspect ratio, which is how the
  bundled Flickr8k copy was prepared, so a user's photo goes through the same transformation.
* :func:`read_captions` reads ``<image>[#k]<TAB><caption>`` lines (the Flickr8k token format).
* :class:`FeatureCache` stores one ``.npy`` array per image under ``sha256(bytes)`` (never pickle:
  loaded with ``allow_pickle=False``), written atomically; :func:`cached_arrays` fills it in
  batches with a progress bar and returns the arrays in the order asked. Since the key is the
  content, an edited image is a new key (the stale entry is simply never read again), and two
  byte-identical files share one entry.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from rnnkit.errors import DataError, DataFileNotFoundError
from rnnkit.fileio import PathLike, atomic_write_bytes

__all__ = [
    "Captions",
    "FeatureCache",
    "ImageFolder",
    "ImageTar",
    "cached_arrays",
    "content_key",
    "decode_image",
    "default_cache_dir",
    "open_images",
    "read_captions",
]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


# ---------------------------------------------------------------------------------------------
# Image sources
# ---------------------------------------------------------------------------------------------
_Source = TypeVar("_Source", bound="_NamedImages")


class _NamedImages:
    """Images addressed by name: ``names`` (in order), ``in``, ``len()``, and a ``with`` block
    that ends in :meth:`close`. A source fills ``_entries`` (name → what its ``read`` needs) and
    defines ``read(name) -> bytes`` and ``where(name)`` (the place named in errors)."""

    _entries: dict[str, Any]

    @property
    def names(self) -> list[str]:
        """Image names in the source's order."""
        return list(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def close(self) -> None:
        pass

    def __enter__(self: _Source) -> _Source:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ImageTar(_NamedImages):
    """The regular files of a tar archive, addressed by their base name (``dir/x.jpg`` → ``x.jpg``).

    Members are read lazily through :meth:`tarfile.TarFile.extractfile`; the archive stays open
    until :meth:`close` (or the end of a ``with`` block).
    """

    def __init__(self, path: PathLike):
        self.path = Path(path)
        if not self.path.exists():
            raise DataFileNotFoundError("no such image archive", self.path)
        try:
            self._tar = tarfile.open(self.path, "r:*")
            members = self._tar.getmembers()
        except (tarfile.TarError, OSError, EOFError) as e:
            raise DataError(f"not a readable tar archive ({e})", self.path) from None
        self._entries: dict[str, tarfile.TarInfo] = {}
        for m in members:
            if m.isfile():
                self._entries.setdefault(os.path.basename(m.name), m)

    def where(self, name: str) -> str:
        return f"{self.path}:{name}"

    def read(self, name: str) -> bytes:
        if name not in self._entries:
            raise DataError(f"no member {name!r} in the archive", self.path)
        try:
            f = self._tar.extractfile(self._entries[name])
            return f.read() if f is not None else b""
        except (tarfile.TarError, OSError, EOFError) as e:
            raise DataError(f"cannot read this member ({e})", self.where(name)) from None

    def close(self) -> None:
        self._tar.close()


class ImageFolder(_NamedImages):
    """Image files directly inside a directory, with the same interface as :class:`ImageTar`."""

    def __init__(self, path: PathLike):
        self.path = Path(path)
        if not self.path.is_dir():
            raise DataFileNotFoundError("no such image folder", self.path)
        self._entries: dict[str, Path] = {
            p.name: p
            for p in sorted(self.path.iterdir())
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        }

    def where(self, name: str) -> str:
        return str(self.path / name)

    def read(self, name: str) -> bytes:
        if name not in self._entries:
            raise DataFileNotFoundError("no such image", self.path / name)
        return self._entries[name].read_bytes()


def open_images(path: PathLike) -> ImageTar | ImageFolder:
    """A tar archive (any compression :mod:`tarfile` reads) or a folder of image files."""
    p = Path(path)
    if p.is_dir():
        return ImageFolder(p)
    return ImageTar(p)


# ---------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------
def decode_image(data: bytes, where: str, size: int | None = 224) -> np.ndarray:
    """Decode image bytes into a ``(size, size, 3)`` uint8 RGB array (``size=None``: keep the
    original size). Greyscale, palette and RGBA images are converted to RGB; a bilinear resize
    makes the image square (aspect ratio not kept).

    Raises:
        DataError: ``where: not a readable image (…)`` for anything Pillow cannot fully decode.
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise DataError("not a readable image (the file is empty)", where)
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()  # decode now, so a truncated or corrupt file fails here and not later
            rgb = img.convert("RGB")
        if size is not None and rgb.size != (size, size):
            rgb = rgb.resize((size, size), Image.BILINEAR)
        return np.asarray(rgb, dtype=np.uint8)
    except UnidentifiedImageError:
        raise DataError(
            "not a readable image (Pillow does not recognise the format)", where
        ) from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        reason = " ".join(str(e).split()) or type(e).__name__
        raise DataError(f"not a readable image ({reason})", where) from None


# ---------------------------------------------------------------------------------------------
# Captions
# ---------------------------------------------------------------------------------------------
@dataclass
class Captions:
    """Captions per image, in file order: ``images[i]`` has ``captions[i]`` (a list of strings);
    ``lines[i]`` is the line of its first caption (for error messages)."""

    path: str
    images: list[str] = field(default_factory=list)
    captions: list[list[str]] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_captions(self) -> int:
        return sum(len(c) for c in self.captions)

    def head(self, n: int | None) -> Captions:
        """The first ``n`` images (all of them for ``None``)."""
        if n is None or n >= len(self.images):
            return self
        return Captions(self.path, self.images[:n], self.captions[:n], self.lines[:n])


def read_captions(path: PathLike, encoding: str = "utf-8") -> Captions:
    """Read ``<image>#<k><TAB><caption>`` lines (``#k`` optional; blank lines skipped).

    Raises:
        DataError: naming ``file:line`` for a line without a tab, an empty image name or an
            empty caption; a missing file is a :class:`DataFileNotFoundError`.
    """
    p = Path(path)
    if not p.is_file():
        raise DataFileNotFoundError("no such caption file", p)
    out = Captions(str(p))
    index: dict[str, int] = {}
    try:
        text = p.read_text(encoding=encoding)
    except UnicodeDecodeError as e:
        raise DataError(f"not {encoding} text ({e.reason} at byte {e.start})", p) from None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if "\t" not in line:
            raise DataError("expected '<image>#<k><TAB><caption>', found no tab", p, number)
        name, caption = line.split("\t", 1)
        name = name.strip().rsplit("#", 1)[0] if "#" in name else name.strip()
        caption = caption.strip()
        if not name:
            raise DataError("empty image name before the tab", p, number)
        if not caption:
            raise DataError(f"empty caption for {name}", p, number)
        if name not in index:
            index[name] = len(out.images)
            out.images.append(name)
            out.captions.append([])
            out.lines.append(number)
        out.captions[index[name]].append(caption)
    if not out.images:
        raise DataError("no captions in the file", p)
    return out


# ---------------------------------------------------------------------------------------------
# Content-addressed cache
# ---------------------------------------------------------------------------------------------
def default_cache_dir() -> Path:
    """``$RNNKIT_CACHE/features``, else ``$XDG_CACHE_HOME/rnnkit/features``, else
    ``~/.cache/rnnkit/features``."""
    if os.environ.get("RNNKIT_CACHE"):
        return Path(os.environ["RNNKIT_CACHE"]) / "features"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rnnkit" / "features"


def content_key(data: bytes) -> str:
    """The cache key of an image: the hex SHA-256 of its bytes."""
    return hashlib.sha256(data).hexdigest()


class FeatureCache:
    """Arrays on disk at ``root/namespace/<key[:2]>/<key>.npy``.

    ``namespace`` names what was computed (encoder, weights, input size, dtype), so changing any
    of them starts a fresh set of entries instead of reading stale ones. Files are written to a
    temporary name and renamed, so a killed extraction never leaves a half-written entry; a
    corrupt or unreadable entry is treated as missing and recomputed.
    """

    def __init__(self, root: PathLike, namespace: str):
        self.root = Path(root)
        self.namespace = namespace
        self.dir = self.root / namespace

    def path(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.npy"

    def get(self, key: str) -> np.ndarray | None:
        p = self.path(key)
        if not p.exists():
            return None
        try:
            return np.load(p, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            log.warning("%s: unreadable cache entry, recomputing (%s)", p, e)
            return None

    def put(self, key: str, array: np.ndarray) -> None:
        p = self.path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
        atomic_write_bytes(p, buf.getvalue())


def cached_arrays(
    source: ImageTar | ImageFolder,
    names: Sequence[str],
    cache: FeatureCache | None,
    compute: Callable[[np.ndarray], np.ndarray],
    image_size: int,
    batch_size: int = 32,
    desc: str = "images",
    progress: bool = True,
) -> np.ndarray:
    """``compute(pixels (n, S, S, 3) uint8) -> (n, …)`` for every image in ``names``, through the
    cache: each image's bytes are hashed, hits are loaded, misses are decoded and computed in
    batches of ``batch_size`` (with a progress bar) and stored. Returns ``(len(names), …)`` in
    the order of ``names``; the values are always the stored ones (a first call and a cache hit
    give identical arrays)."""
    from tqdm.auto import tqdm

    positions: dict[str, list[int]] = {}  # key -> where its array goes in the output
    first_name: dict[str, str] = {}
    for i, name in enumerate(names):
        key = content_key(source.read(name))
        positions.setdefault(key, []).append(i)
        first_name.setdefault(key, name)
    out: np.ndarray | None = None

    def place(key: str, arr: np.ndarray) -> None:
        nonlocal out
        if out is None:
            out = np.empty((len(names), *arr.shape), dtype=arr.dtype)
        out[positions[key]] = arr

    todo: list[tuple[str, str]] = []  # (key, name) of each distinct image not in the cache
    for key, name in first_name.items():
        hit = cache.get(key) if cache is not None else None
        if hit is not None:
            place(key, hit)
        else:
            todo.append((key, name))
    if todo:
        log.info(
            "%s: computing %d of %d distinct images (%d cached)",
            desc,
            len(todo),
            len(first_name),
            len(first_name) - len(todo),
        )
    with tqdm(
        total=len(todo), desc=desc, unit="img", disable=not (progress and todo), dynamic_ncols=True
    ) as bar:
        for s in range(0, len(todo), batch_size):
            chunk = todo[s : s + batch_size]
            pixels = np.stack(
                [decode_image(source.read(n), source.where(n), image_size) for _, n in chunk]
            )  # (n, S, S, 3)
            for (key, _), arr in zip(chunk, compute(pixels)):
                arr = np.ascontiguousarray(arr)  # .npy round-trips it exactly
                if cache is not None:
                    cache.put(key, arr)
                place(key, arr)
            bar.update(len(chunk))
    if out is None:
        raise DataError("no images to read")
    return out
