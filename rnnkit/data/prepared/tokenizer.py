"""One small tokenizer interface for language-model corpora: characters, words and byte-level BPE.

Every tokenizer has ``level``, ``len()``, ``specials``, ``encode(text) -> list[int]``,
``decode(ids) -> str``, ``to_dict()`` and ``save(path)`` / :func:`load_tokenizer` as JSON:

* :class:`VocabTokenizer` (``level="char"`` or ``"word"``) wraps a :class:`~rnnkit.data.vocab.Vocab`
  and tokenizes as the language model always has: every character; or words split on whitespace
  with ``<eos>`` at each line break (the PTB convention), decoded with single spaces and line breaks.
  Its JSON is the vocabulary's own (``vocab.json``).
* :class:`BPETokenizer` (``level="bpe"``) is a Hugging Face ``tokenizers`` byte-level BPE: the text
  is read as UTF-8 bytes, so every string is encodable without ``<unk>`` and
  ``decode(encode(text)) == text`` exactly, spaces, tabs, CR/LF, empty lines and any Unicode
  included. Its JSON is ``tokenizer.json``. Ids ``0..3`` are the usual specials.

Encoding a large corpus goes through :meth:`encode_array` / :meth:`safe_cut`: the corpus is cut
only where the tokenization of the parts equals that of the whole, and BPE caches the ids of each
whitespace-led piece (``"  word"``), which on natural text is most of the work.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from rnnkit.data.vocab import EOS, SPECIALS, SpecialIds, Vocab
from rnnkit.errors import DataError

__all__ = [
    "Tokenizer",
    "VocabTokenizer",
    "BPETokenizer",
    "load_tokenizer",
    "load_vocabulary",
    "as_tokenizer",
    "vocab_from_counts",
    "train_bpe",
]

PathLike = str | os.PathLike[str]

# Word level: a token is a run of non-whitespace, and each "\n" stands for <eos>. Python's \s is
# str.isspace, the set str.split() uses, so this is tokenize_text's split exactly.
_WORDS = re.compile(r"\S+|\n")
# BPE pieces: a whitespace run (possibly empty) and the non-whitespace run after it. Byte-level BPE
# pre-tokenizes with GPT-2's pattern, which has a boundary wherever non-whitespace is followed by
# whitespace, so encoding piece by piece equals encoding the whole. Whitespace here is Unicode's
# White_Space property (what the Rust regex means by \s), not Python's wider str.isspace.
_WS = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_PIECES = re.compile(f"[{_WS}]*[^{_WS}]+|[{_WS}]+")
_LAST_BOUNDARY = re.compile(f"[^{_WS}](?=[{_WS}])")


class Tokenizer(Protocol):
    """What a prepared corpus and a language model need from a tokenizer."""

    level: str

    def __len__(self) -> int: ...

    @property
    def specials(self) -> tuple[str, ...]: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Iterable[int]) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...

    def save(self, path: PathLike) -> None: ...


def vocab_from_counts(
    counts: Mapping[str, int],
    level: str,
    max_size: int | None = None,
    min_freq: int = 1,
    specials: Sequence[str] = SPECIALS,
) -> Vocab:
    """The :class:`Vocab` that ``Vocab.build`` makes from a corpus with these token counts.

    Same rule: specials first; tokens rarer than ``min_freq`` dropped; the ``max_size`` most
    frequent kept (ties alphabetical); char level then in code-point order, word level by
    frequency. It lets a corpus be counted in chunks instead of as one list of tokens.
    """
    specials = tuple(specials)
    if max_size is not None and max_size < len(specials):
        raise ValueError(f"max_size={max_size} leaves no room for the {len(specials)} specials")
    ranked = sorted(
        (t for t, n in counts.items() if n >= min_freq and t not in specials),
        key=lambda t: (-counts[t], t),
    )
    if max_size is not None:
        ranked = ranked[: max_size - len(specials)]
    if level == "char":
        ranked.sort()
    return Vocab(ranked, specials=specials, level=level)


class VocabTokenizer:
    """Characters or words over a :class:`Vocab` (out-of-vocabulary symbols read as ``<unk>``)."""

    def __init__(self, vocab: Vocab) -> None:
        self.vocab = vocab
        self.level = vocab.level
        self._lut: np.ndarray | None = None  # char level: code point -> id

    def __len__(self) -> int:
        return len(self.vocab)

    @property
    def specials(self) -> tuple[str, ...]:
        return self.vocab.specials

    def tokens(self, text: str) -> list[str]:
        """Characters, or words with ``<eos>`` for each line break."""
        if self.level == "char":
            return list(text)
        return [EOS if t == "\n" else t for t in _WORDS.findall(text)]

    def encode(self, text: str) -> list[int]:
        return self.encode_array(text).tolist()

    def encode_array(self, text: str) -> np.ndarray:
        """``encode`` as an integer array (int32 at char level, int64 otherwise); char level is
        one table lookup per code point, vectorised."""
        unk = self.vocab.unk_id if self.vocab.unk_id is not None else 0
        if self.level == "char":
            cps = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
            return self._char_table()[cps]
        stoi = self.vocab.stoi
        lookup = dict(stoi)
        lookup["\n"] = stoi[EOS] if EOS in stoi else unk
        get = lookup.get
        return np.fromiter((get(t, unk) for t in _WORDS.findall(text)), dtype=np.int64)

    def _char_table(self) -> np.ndarray:
        if self._lut is None:
            unk = self.vocab.unk_id if self.vocab.unk_id is not None else 0
            singles = [(ord(t), i) for i, t in enumerate(self.vocab.itos) if len(t) == 1]
            # every code point has an entry (4.4 MB), so encoding needs no range check
            lut = np.full(0x110000, unk, dtype=np.int32)
            for cp, i in singles:
                if i >= len(self.vocab.specials):
                    lut[cp] = i
            self._lut = lut
        return self._lut

    def safe_cut(self, text: str) -> int:
        """Length of the longest prefix of ``text`` whose tokens do not depend on what follows."""
        if self.level == "char":
            return len(text)
        i = len(text)
        while i > 0 and not text[i - 1].isspace():
            i -= 1
        return i

    def decode(self, ids: Iterable[int]) -> str:
        """Characters joined; words joined by single spaces, ``<eos>`` as a line break."""
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        itos, n = self.vocab.itos, len(self.vocab)
        for i in ids:
            if not 0 <= i < n:
                raise ValueError(f"id {i} is out of range for a vocabulary of size {n}")
        if self.level == "char":
            return "".join(itos[i] for i in ids)
        eos = self.vocab.eos_id
        lines, line = [], []
        for i in ids:
            if i == eos:
                lines.append(" ".join(line))
                line = []
            else:
                line.append(itos[i])
        lines.append(" ".join(line))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return self.vocab.to_dict()

    def save(self, path: PathLike) -> None:
        self.vocab.save(path)


class BPETokenizer(SpecialIds):
    """Byte-level BPE over Hugging Face ``tokenizers``: lossless, no ``<unk>`` ever needed."""

    level = "bpe"

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self._reset_cache()
        self._specials = tuple(
            t.content for _, t in sorted(tokenizer.get_added_tokens_decoder().items()) if t.special
        )

    def __len__(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    @property
    def specials(self) -> tuple[str, ...]:
        return self._specials

    # the parts of Vocab's interface a language model reads (ids of specials, token strings)
    @property
    def itos(self) -> list[str]:
        """Id -> token string (byte-level symbols, e.g. ``"Ġthe"`` for ``" the"``)."""
        if not hasattr(self, "_itos"):
            self._itos = [self.tokenizer.id_to_token(i) for i in range(len(self))]
        return self._itos

    def __contains__(self, token: object) -> bool:
        return isinstance(token, str) and self.tokenizer.token_to_id(token) is not None

    def _special_id(self, symbol: str) -> int | None:
        return self.tokenizer.token_to_id(symbol) if symbol in self._specials else None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BPETokenizer):
            return NotImplemented
        return self.tokenizer.to_str() == other.tokenizer.to_str()

    __hash__ = None

    def __repr__(self) -> str:
        return f"BPETokenizer(size={len(self)}, specials={self._specials!r})"

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def encode_array(self, text: str) -> np.ndarray:
        """``encode`` for long text: piece by piece through a cache of each piece's ids.

        The cache numbers the distinct pieces and keeps their ids in one flat table (``start``
        and ``length`` per piece number), so the text's ids are gathered in one vectorised step:
        output position t of piece j reads ``flat[start_j + t − c_j]``, c_j being where piece j
        begins in the output (a running sum of the lengths)."""
        pieces = _PIECES.findall(text)
        if not pieces:
            return np.zeros(0, dtype=np.int64)
        if len(self._cache) > 2_000_000:  # bound the memory a huge corpus can take
            self._reset_cache()
        number = self._cache
        # one pass numbers every piece; a piece not seen before gets the next number on the spot
        # (_PieceNumbers.__missing__) and waits in number.new for its ids
        which = np.fromiter(map(number.__getitem__, pieces), dtype=np.int64, count=len(pieces))
        if number.new:
            encoded = self.tokenizer.encode_batch_fast(number.new, add_special_tokens=False)
            for e in encoded:
                self._starts.append(len(self._flat))
                self._lengths.append(len(e.ids))
                self._flat.extend(e.ids)
            number.new = []
            self._tables = None
        if self._tables is None:
            self._tables = (np.asarray(self._flat, dtype=np.int64),
                            np.asarray(self._starts, dtype=np.int64),
                            np.asarray(self._lengths, dtype=np.int64))  # fmt: skip
        flat, starts, lengths = self._tables
        n = lengths[which]
        begins = np.cumsum(n) - n  # c_j
        positions = np.arange(int(n.sum())) + np.repeat(starts[which] - begins, n)
        return flat[positions]

    def _reset_cache(self) -> None:
        self._cache = _PieceNumbers()  # piece → its number in the tables
        self._flat: list[int] = []
        self._starts: list[int] = []
        self._lengths: list[int] = []
        self._tables: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def safe_cut(self, text: str) -> int:
        """The end of the last non-whitespace run that whitespace follows (a pre-token edge)."""
        for window in (4096, 1 << 16, len(text)):
            start = max(0, len(text) - window)
            last = None
            for match in _LAST_BOUNDARY.finditer(text, start):
                last = match
            if last is not None:
                return last.end()
            if start == 0:
                break
        return 0

    def decode(self, ids: Iterable[int]) -> str:
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(self.tokenizer.to_str())

    def save(self, path: PathLike) -> None:
        from rnnkit.fileio import atomic_write_text

        atomic_write_text(path, self.tokenizer.to_str(pretty=True) + "\n")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BPETokenizer:
        from tokenizers import Tokenizer as HFTokenizer

        try:
            return cls(HFTokenizer.from_str(json.dumps(data)))
        except Exception as exc:  # the Rust side raises its own exception type
            raise DataError(f"not a tokenizers tokenizer: {str(exc).splitlines()[0]}") from None


class _PieceNumbers(dict):
    """Piece → number, numbering a missing piece on lookup (the next free number) and keeping
    the pieces so numbered, in order, in ``new`` until their ids are added to the tables."""

    def __init__(self) -> None:
        super().__init__()
        self.new: list[str] = []

    def __missing__(self, piece: str) -> int:
        self[piece] = n = len(self)
        self.new.append(piece)
        return n


def train_bpe(texts: Iterator[str], vocab_size: int, specials: Sequence[str] = SPECIALS):
    """Train a byte-level BPE with ``vocab_size`` ids (specials and the 256 bytes included) from
    an iterator of texts (``tokenizers``' trainer counts the pre-tokens as they stream by)."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    floor = len(specials) + 256
    if vocab_size < floor:
        raise DataError(
            f"a byte-level BPE needs vocab_size >= {floor} ({len(specials)} specials + 256 "
            f"bytes); got {vocab_size}"
        )
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(specials),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return BPETokenizer(tok)


def tokenizer_from_dict(data: Mapping[str, Any]) -> Tokenizer:
    """A tokenizer from its JSON: a ``tokenizers`` file (has ``"model"``) or a vocabulary."""
    if isinstance(data, Mapping) and "model" in data and "tokens" not in data:
        return BPETokenizer.from_dict(data)
    return VocabTokenizer(Vocab.from_dict(data))


def load_vocabulary(path: PathLike) -> Vocab | BPETokenizer:
    """What a run's ``vocab.json`` holds: a :class:`Vocab` (char/word) or a byte-level BPE."""
    tok = load_tokenizer(path)
    return tok.vocab if isinstance(tok, VocabTokenizer) else tok


def as_tokenizer(vocab: Vocab | BPETokenizer) -> Tokenizer:
    """The tokenizer interface over a model's vocabulary."""
    return VocabTokenizer(vocab) if isinstance(vocab, Vocab) else vocab


def load_tokenizer(path: PathLike) -> Tokenizer:
    """Read ``vocab.json`` (char/word) or ``tokenizer.json`` (BPE); errors name the file."""
    from rnnkit.data.readers import read_text

    text = read_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"not valid JSON: {exc.msg}", path=path, line=exc.lineno) from None
    try:
        return tokenizer_from_dict(data)
    except DataError as exc:
        raise DataError(exc.message, path=Path(path)) from None
