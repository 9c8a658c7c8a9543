"""``prepare_lm``: a text corpus of any size → token ids on disk, once, for memory-mapped training.

A prepared folder holds ``train.bin`` and ``valid.bin`` (the ids, little-endian ``uint16``, or
``uint32`` when the vocabulary has more than 65,535 entries), the tokenizer (``vocab.json`` for
char/word, ``tokenizer.json`` for BPE) and ``meta.json``: level, tokenizer file, vocabulary size,
dtype, per split the token count, byte size and sha256, the source files with their sizes and
mtimes, and the options. Text is read in chunks (see :mod:`.sources`), never whole.

The passes: with ``valid_fraction`` one decoding pass counts the characters, so the split falls on
the same character as :func:`~rnnkit.data.readers.split_text` on the whole text; then the
vocabulary is counted over the training part (char: a histogram of code points; word: a counter
of words; BPE: ``tokenizers`` trains on the first ``bpe_sample_mb`` MB of it from an iterator);
then a last pass encodes and writes both splits, hashing as it writes. Two passes instead of one
with a growing vocabulary remapped afterwards: the ids are written once, in their final form, and
nothing but the vocabulary is kept in memory. The ids equal those of the in-memory path
(``Vocab.build`` on the training text, ``<unk>`` for what it lacks), so training on the folder sees
exactly the batches that training on the text file would.

Everything is written into a hidden temporary folder beside ``out_dir`` and renamed into place at
the end (swapped atomically with an earlier version where the OS allows), so an interrupted prepare
leaves no half dataset and never damages an earlier one. Rerunning on unchanged inputs (same files,
sizes, mtimes and options) does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import json
import logging
import os
import secrets
import shutil
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rnnkit.data.prepared.sources import CHUNK_BYTES, Source, expand_inputs, iter_text
from rnnkit.data.prepared.tokenizer import VocabTokenizer, train_bpe, vocab_from_counts
from rnnkit.data.vocab import EOS
from rnnkit.errors import DataError

__all__ = ["LEVELS", "META", "prepare_lm", "verify", "read_meta", "UINT16_MAX_VOCAB"]

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]
LEVELS = ("char", "word", "bpe")
META = "meta.json"
FORMAT = "rnnkit.prepared-lm"
VERSION = 1
#: the largest vocabulary whose ids are stored as uint16; a larger one is stored as uint32
UINT16_MAX_VOCAB = 65_535
DEFAULT_BPE_VOCAB = 8_000
#: BPE trains on this much of the training text. On the 100 MB corpus of benchmarks/scale.py an
#: 8,000-id tokenizer trained on 4 MB gives 0.3762 tokens per character against 0.3750 from
#: 16 MB (+0.3%) for a quarter of the training time; ``--bpe-sample-mb`` takes more
DEFAULT_BPE_SAMPLE_MB = 4.0


def _bar(total: int, desc: str, progress: bool):
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        desc=desc,
        unit="B",
        unit_scale=True,
        unit_divisor=1000,  # MB/s, as the figures are quoted
        disable=not progress,
        dynamic_ncols=True,
        mininterval=0.5,
        leave=False,
    )


def _splits(pieces: Iterator[str], cut: int | None) -> Iterator[tuple[str, str]]:
    """``("train", piece)`` for the first ``cut`` characters, ``("valid", piece)`` after."""
    if cut is None:
        for piece in pieces:
            yield "train", piece
        return
    seen = 0
    for piece in pieces:
        if seen >= cut:
            yield "valid", piece
        elif seen + len(piece) <= cut:
            yield "train", piece
        else:
            k = cut - seen
            if k:
                yield "train", piece[:k]
            yield "valid", piece[k:]
        seen += len(piece)


@dataclass(frozen=True)
class _Job:
    """What one ``prepare_lm`` call reads and how: its sources and its (checked) settings."""

    sources: list[Source]
    valid_sources: list[Source] | None
    level: str
    vocab_size: int | None
    min_freq: int
    valid_fraction: float
    encoding: str
    dtype: str
    bpe_sample_mb: float
    chunk_bytes: int
    progress: bool

    def options(self) -> dict[str, Any]:
        """The settings that decide the output (``meta.json``'s ``options``; a rerun with the
        same options and sources does nothing). Settings the level does not use are null."""
        return {
            "level": self.level,
            "vocab_size": self.vocab_size,
            "min_freq": self.min_freq if self.level == "word" else None,
            "valid_fraction": None if self.valid_sources is not None else self.valid_fraction,
            "encoding": self.encoding,
            "dtype": self.dtype,
            "bpe_sample_mb": self.bpe_sample_mb if self.level == "bpe" else None,
        }


class _Pass:
    """One pass over a corpus's text (train and valid parts) with a progress bar."""

    def __init__(self, job: _Job, cut: int | None, desc: str):
        self.job, self.cut = job, cut
        total = sum(s.bytes for s in job.sources) + sum(s.bytes for s in job.valid_sources or ())
        self.bar = _bar(total, desc, job.progress)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        job = self.job
        with self.bar:
            text = iter_text(job.sources, job.encoding, job.chunk_bytes, self.bar.update)
            yield from _splits(text, self.cut)
            if job.valid_sources:
                for piece in iter_text(
                    job.valid_sources, job.encoding, job.chunk_bytes, self.bar.update
                ):
                    yield "valid", piece


def _count_vocabulary(passage: _Pass, level: str, max_vocab, min_freq) -> VocabTokenizer:
    """Char: a histogram of code points; word: a word counter, ``<eos>`` for each line break."""
    if level == "char":
        hist = np.zeros(128, dtype=np.int64)
        for split, piece in passage:
            if split != "train":
                break
            cps = np.frombuffer(piece.encode("utf-32-le"), dtype="<u4")
            counts = np.bincount(cps)
            if counts.size > hist.size:
                hist = np.concatenate([hist, np.zeros(counts.size - hist.size, np.int64)])
            hist[: counts.size] += counts
        counter = {chr(cp): int(hist[cp]) for cp in np.flatnonzero(hist)}
    else:
        from rnnkit.data.prepared.tokenizer import _WORDS

        words: Counter[str] = Counter()
        for split, piece in _buffered_words(passage):
            if split != "train":
                break
            words.update(_WORDS.findall(piece))
        words[EOS] += words.pop("\n", 0)
        counter = words
    if not counter:
        raise DataError("the training text is empty (no characters or words to learn)")
    return VocabTokenizer(vocab_from_counts(counter, level, max_size=max_vocab, min_freq=min_freq))


def _buffered_words(passage) -> Iterator[tuple[str, str]]:
    """Pieces cut after whitespace, so no word straddles two pieces of the same split."""
    buf, current = "", None
    for split, piece in passage:
        if split != current:
            if buf:
                yield current, buf
            buf, current = "", split
        buf += piece
        i = len(buf)
        while i > 0 and not buf[i - 1].isspace():
            i -= 1
        if i:
            yield split, buf[:i]
            buf = buf[i:]
    if buf:
        yield current, buf


def _bpe_sample(passage, sample_bytes: int) -> Iterator[str]:
    taken = 0
    for split, piece in passage:
        if split != "train" or taken >= sample_bytes:
            break
        yield piece
        taken += len(piece)  # characters: close enough to bytes for a sample size


class _Writer:
    """Ids of one split to ``NAME.bin``, little-endian, hashed as they are written."""

    def __init__(self, path: Path, dtype: np.dtype) -> None:
        self.path, self.dtype = path, dtype
        self.file = open(path, "wb")  # noqa: SIM115 - closed in close()
        self.sha = hashlib.sha256()
        self.tokens = 0
        self.characters = 0

    def write(self, ids: np.ndarray) -> None:
        data = ids.astype(self.dtype, copy=False).tobytes()
        self.file.write(data)
        self.sha.update(data)
        self.tokens += ids.size

    def close(self) -> dict[str, Any]:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        return {
            "file": self.path.name,
            "tokens": self.tokens,
            "bytes": self.tokens * self.dtype.itemsize,
            "characters": self.characters,
            "sha256": self.sha.hexdigest(),
        }


def _write_ids(passage, tokenizer, dtype, folder: Path) -> dict[str, dict]:
    writers = {name: _Writer(folder / f"{name}.bin", dtype) for name in ("train", "valid")}
    vmax = len(tokenizer)
    buf, current = "", None
    try:

        def emit(split, text):
            ids = tokenizer.encode_array(text)
            if ids.size and int(ids.max()) >= vmax:  # a tokenizer bug would corrupt the data
                raise RuntimeError(f"id {int(ids.max())} outside the vocabulary of {vmax}")
            writers[split].write(ids)

        for split, piece in passage:
            writers[split].characters += len(piece)
            if split != current:
                if buf:
                    emit(current, buf)
                buf, current = "", split
            buf += piece
            k = tokenizer.safe_cut(buf)
            if k:
                emit(split, buf[:k])
                buf = buf[k:]
        if buf:
            emit(current, buf)
    finally:
        splits = {name: w.close() for name, w in writers.items()}
    return splits


def read_meta(folder: PathLike) -> dict[str, Any]:
    """``meta.json`` of a prepared folder (a :class:`DataError` naming the file if unusable)."""
    path = Path(folder) / META
    if not path.is_file():
        raise DataError(f"not a prepared corpus folder: no {META}", path=folder)
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"unreadable {META} ({exc})", path=path) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DataError(f"not a prepared language-model corpus (format {FORMAT!r})", path=path)
    if meta.get("version") != VERSION:
        raise DataError(
            f"written by another version of the format ({meta.get('version')}); prepare again",
            path=path,
        )
    return meta


def _up_to_date(out: Path, job: _Job) -> dict[str, Any] | None:
    try:
        meta = read_meta(out)
    except DataError:
        return None
    same = (
        meta.get("options") == job.options()
        and meta.get("sources") == [s.to_dict() for s in job.sources]
        and meta.get("valid_sources") == [s.to_dict() for s in job.valid_sources or ()]
    )
    if not same:
        return None
    for split in meta["splits"].values():
        f = out / split["file"]
        if not f.is_file() or f.stat().st_size != split["bytes"]:
            return None
    return meta


def _remove_stale_temporaries(out: Path) -> None:
    """Temporary folders of prepares that were killed (their process is gone)."""
    for tmp in out.parent.glob(f".{out.name}.tmp-*"):
        try:
            pid = int(tmp.name.rsplit(".tmp-", 1)[1].split("-")[0])
            os.kill(pid, 0)
            alive = pid != os.getpid()
        except (ValueError, ProcessLookupError):
            alive = False
        except PermissionError:
            alive = True
        if not alive:
            shutil.rmtree(tmp, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``); False if the
    system cannot."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    rc = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    return rc == 0


def _into_place(tmp: Path, out: Path) -> None:
    if not out.exists():
        os.rename(tmp, out)
        return
    if _exchange(tmp, out):
        shutil.rmtree(tmp)  # now the earlier version
        return
    old = out.parent / f".{out.name}.old-{secrets.token_hex(4)}"
    os.rename(out, old)
    os.rename(tmp, out)
    shutil.rmtree(old)


def prepare_lm(
    inputs: Sequence[PathLike] | PathLike,
    out_dir: PathLike,
    level: str = "char",
    vocab_size: int | None = None,
    valid: Sequence[PathLike] | PathLike | None = None,
    valid_fraction: float = 0.1,
    encoding: str = "utf-8",
    *,
    min_freq: int = 1,
    dtype: str = "auto",
    bpe_sample_mb: float = DEFAULT_BPE_SAMPLE_MB,
    chunk_bytes: int = CHUNK_BYTES,
    progress: bool = True,
) -> dict[str, Any]:
    """Tokenize a corpus into ``out_dir`` (see the module docstring); returns its ``meta.json``.

    Args:
        inputs: files, folders or glob patterns; ``.gz`` files are decompressed on the fly.
        level: ``"char"``, ``"word"`` or ``"bpe"``.
        vocab_size: BPE: the vocabulary to train (default 8,000); word: keep the most frequent
            words (specials included); char: not used.
        valid: validation files (folders, patterns); otherwise the last ``valid_fraction`` of the
            text (by characters, as ``split_text`` cuts) is held out.
        min_freq: word level: drop words seen fewer times in the training text.
        dtype: ``"auto"`` (uint16 up to 65,535 ids, else uint32), ``"uint16"`` or ``"uint32"``.
        bpe_sample_mb: BPE is trained on the first this many MB of the training text
            (default :data:`DEFAULT_BPE_SAMPLE_MB`).

    Raises:
        DataError: missing or undecodable inputs (file, offset, line), an empty corpus, a
            validation part too short, or a vocabulary too large for ``dtype``.
    """
    if level not in LEVELS:
        raise DataError(f"level must be one of {', '.join(LEVELS)}; got {level!r}")
    if dtype not in ("auto", "uint16", "uint32"):
        raise DataError(f"dtype must be auto, uint16 or uint32; got {dtype!r}")
    if valid is None and not 0.0 < valid_fraction < 1.0:
        raise DataError(
            f"valid_fraction must be in (0, 1) without a --valid file; got {valid_fraction}"
        )
    if level == "bpe" and vocab_size is None:
        vocab_size = DEFAULT_BPE_VOCAB
    if level == "char" and vocab_size is not None:
        log.info("--vocab-size is not used at char level (every character is kept)")
        vocab_size = None
    job = _Job(
        sources=expand_inputs(inputs),
        valid_sources=expand_inputs(valid, "validation") if valid is not None else None,
        level=level,
        vocab_size=vocab_size,
        min_freq=min_freq,
        valid_fraction=valid_fraction,
        encoding=encoding,
        dtype=dtype,
        bpe_sample_mb=bpe_sample_mb,
        chunk_bytes=chunk_bytes,
        progress=progress,
    )
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DataError("exists and is not a folder", path=out)
    if out.is_dir() and any(out.iterdir()) and not (out / META).is_file():
        raise DataError(
            "exists, is not empty and is not a prepared corpus; not replacing it", path=out
        )
    meta = _up_to_date(out, job)
    if meta is not None:
        log.info(
            "%s is up to date with its %d source file(s): nothing to do", out, len(job.sources)
        )
        return meta

    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(out)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        meta = _prepare_into(tmp, job)
        _fsync_tree(tmp)
        _into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info(
        "prepared %s: %s train + %s valid %s tokens, vocabulary %d, %s",
        out,
        f"{meta['splits']['train']['tokens']:,}",
        f"{meta['splits']['valid']['tokens']:,}",
        level,
        meta["vocab_size"],
        meta["dtype"],
    )
    return meta


def _prepare_into(tmp: Path, job: _Job) -> dict[str, Any]:
    """The passes of the module docstring, written into ``tmp``; returns the meta."""
    cut = None
    if job.valid_sources is None:
        total = 0
        with _bar(sum(s.bytes for s in job.sources), "prepare: count", job.progress) as bar:
            for piece in iter_text(job.sources, job.encoding, job.chunk_bytes, bar.update):
                total += len(piece)
        if total == 0:
            raise DataError("the corpus is empty (no characters in the input files)")
        cut = int((1.0 - job.valid_fraction) * total)
        if total - cut < 2:
            raise DataError(
                f"the validation part is too short ({total - cut} characters of {total}); "
                "raise --valid-fraction or pass --valid FILE"
            )

    def passage(desc):
        return _Pass(job, cut, desc)

    level, dtype = job.level, job.dtype
    if level == "bpe":
        tokenizer = train_bpe(
            _bpe_sample(passage("prepare: bpe"), int(job.bpe_sample_mb * 1e6)), job.vocab_size
        )
        tok_file = "tokenizer.json"
    else:
        tokenizer = _count_vocabulary(
            passage("prepare: vocab"), level, job.vocab_size, job.min_freq
        )
        tok_file = "vocab.json"
    n = len(tokenizer)
    fits16 = n <= UINT16_MAX_VOCAB
    if dtype == "uint16" and not fits16:
        raise DataError(
            f"a vocabulary of {n:,} ids does not fit uint16 (at most {UINT16_MAX_VOCAB:,}); "
            "use dtype uint32 (or auto), or a smaller --vocab-size"
        )
    chosen = dtype if dtype != "auto" else ("uint16" if fits16 else "uint32")
    np_dtype = np.dtype(chosen).newbyteorder("<")
    tokenizer.save(tmp / tok_file)
    splits = _write_ids(passage("prepare: write"), tokenizer, np_dtype, tmp)
    if splits["train"]["tokens"] == 0:
        raise DataError("the training text has no tokens")
    if splits["valid"]["tokens"] < 2:
        raise DataError(
            f"the validation text has {splits['valid']['tokens']} token(s); need at least 2"
        )
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "level": level,
        "tokenizer": tok_file,
        "vocab_size": n,
        "dtype": chosen,
        "byteorder": "little",
        "splits": splits,
        "sources": [s.to_dict() for s in job.sources],
        "valid_sources": [s.to_dict() for s in job.valid_sources or ()],
        "options": job.options(),
    }
    from rnnkit.fileio import atomic_write_json
    from rnnkit.version import __version__

    meta["rnnkit_version"] = __version__
    atomic_write_json(tmp / META, meta)
    return meta


def _fsync_tree(folder: Path) -> None:
    for f in folder.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(path: Path, block: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def check_sizes(folder: PathLike, meta: dict[str, Any]) -> None:
    """Every ``.bin`` exists with the size ``meta.json`` records (what opening checks)."""
    folder = Path(folder)
    for name, split in meta["splits"].items():
        path = folder / split["file"]
        if not path.is_file():
            raise DataError(f"the {name} ids are missing; prepare the corpus again", path=path)
        size = path.stat().st_size
        if size != split["bytes"]:
            raise DataError(
                f"is {size:,} bytes but meta.json records {split['bytes']:,} "
                f"({split['tokens']:,} {meta['dtype']} ids): truncated or replaced; prepare again",
                path=path,
            )


def verify(folder: PathLike) -> dict[str, Any]:
    """Check a prepared folder: sizes, then the sha256 of each ``.bin`` against ``meta.json``.

    Returns the meta on success; raises :class:`DataError` naming the first file that disagrees.
    """
    meta = read_meta(folder)
    check_sizes(folder, meta)
    for name, split in meta["splits"].items():
        path = Path(folder) / split["file"]
        digest = _sha256(path)
        if digest != split["sha256"]:
            raise DataError(
                f"sha256 {digest[:12]}… does not match meta.json ({split['sha256'][:12]}…): the "
                f"{name} ids were changed after prepare; prepare the corpus again",
                path=path,
            )
    tok = Path(folder) / meta["tokenizer"]
    if not tok.is_file():
        raise DataError("the tokenizer file is missing; prepare the corpus again", path=tok)
    return meta
