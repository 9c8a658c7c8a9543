"""Vocabularies: the mapping between symbols (characters or words) and integer ids.

A :class:`Vocab` owns its tokenizer (``level="char"`` splits into characters, ``level="word"``
splits on whitespace), the special symbols (padding, unknown, begin/end of sequence), and a JSON
form that is saved next to the weights so a trained model always decodes with the vocabulary it
was trained with.
"""

from __future__ import annotations

import json
import logging
import operator
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rnnkit.data.readers import read_text
from rnnkit.errors import DataError
from rnnkit.fileio import PathLike, atomic_write_text

__all__ = ["BOS", "EOS", "PAD", "SPECIALS", "UNK", "SpecialIds", "Vocab"]

logger = logging.getLogger(__name__)

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
#: The default special symbols, which take ids 0, 1, 2, 3 in this order.
SPECIALS: tuple[str, ...] = (PAD, UNK, BOS, EOS)

LEVELS = ("char", "word")
UNKNOWN_MODES = ("unk", "error", "drop")
_MAX_LISTED = 10  # unknown symbols quoted in an error message before "and N more"


def _special_id_property(symbol: str) -> property:
    return property(
        lambda self: self._special_id(symbol),
        doc=f"The id of ``{symbol}``, or ``None`` when it is not one of the specials.",
    )


class SpecialIds:
    """``pad_id``, ``unk_id``, ``bos_id`` and ``eos_id``: the id of ``<pad>``, ``<unk>``, ``<bos>``
    and ``<eos>`` when the symbol is one of the vocabulary's specials, else ``None``.

    A vocabulary gets them by defining ``_special_id(symbol) -> int | None``.
    """

    def _special_id(self, symbol: str) -> int | None:
        raise NotImplementedError

    pad_id = _special_id_property(PAD)
    unk_id = _special_id_property(UNK)
    bos_id = _special_id_property(BOS)
    eos_id = _special_id_property(EOS)


class Vocab(SpecialIds):
    """An ordered set of tokens with ids ``0 .. len(vocab) - 1``; specials come first.

    Args:
        tokens: the ordinary symbols, in id order. Single characters when ``level="char"``.
            Entries equal to a special are skipped (so ``Vocab(v.itos, v.specials, v.level)``
            rebuilds ``v``); any other duplicate is an error.
        specials: special symbols, given ids ``0, 1, ...`` in this order. The ``pad_id``,
            ``unk_id``, ``bos_id`` and ``eos_id`` properties find ``<pad>``, ``<unk>``, ``<bos>``
            and ``<eos>`` among them (``None`` when absent). Pass ``()`` for none.
        level: ``"char"`` or ``"word"``; decides :meth:`tokenize` and how :meth:`decode` joins.

    Example::

        >>> v = Vocab.build("hello world")
        >>> v.decode(v.encode("hello"))
        'hello'
    """

    def __init__(
        self,
        tokens: Iterable[str],
        specials: Sequence[str] = SPECIALS,
        level: str = "char",
    ) -> None:
        if level not in LEVELS:
            raise ValueError(f"level must be 'char' or 'word', got {level!r}")
        specials = tuple(specials)
        for s in specials:
            if not isinstance(s, str) or not s:
                raise ValueError(f"special symbols must be non-empty strings, got {s!r}")
        if len(set(specials)) != len(specials):
            raise ValueError(f"duplicate special symbols in {specials!r}")
        itos = list(specials)
        special_set = set(specials)
        stoi = {s: i for i, s in enumerate(itos)}
        for tok in tokens:
            if not isinstance(tok, str):
                raise ValueError(f"tokens must be strings, got {tok!r}")
            if tok in special_set:
                continue
            if tok in stoi:
                raise ValueError(f"duplicate token {tok!r} in vocabulary")
            if level == "char" and len(tok) != 1:
                raise ValueError(f"a char-level vocabulary holds single characters, got {tok!r}")
            if level == "word" and not tok:
                raise ValueError("a word-level vocabulary cannot hold the empty string")
            stoi[tok] = len(itos)
            itos.append(tok)
        self._level = level
        self._specials = specials
        self._itos = itos
        self._stoi = stoi

    # construction -----------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        text_or_tokens: str | Iterable[str] | Iterable[Iterable[str]],
        level: str = "char",
        specials: Sequence[str] = SPECIALS,
        max_size: int | None = None,
        min_freq: int = 1,
    ) -> Vocab:
        """Build a vocabulary from a corpus.

        Args:
            text_or_tokens: a string (tokenized at ``level``); or an iterable whose items are
                tokens (word level) or strings whose characters are counted (char level); or an
                iterable of such token lists (e.g. sentences).
            level: ``"char"`` or ``"word"``.
            specials: special symbols, ids ``0, 1, ...``.
            max_size: cap on ``len(vocab)``, specials included; the most frequent tokens are
                kept (ties broken alphabetically).
            min_freq: drop tokens seen fewer times than this.

        Char level orders the kept characters by code point (the classic char-rnn vocabulary);
        word level orders them by frequency, most frequent first, then alphabetically.
        """
        if level not in LEVELS:
            raise ValueError(f"level must be 'char' or 'word', got {level!r}")
        if min_freq < 1:
            raise ValueError(f"min_freq must be >= 1, got {min_freq}")
        specials = tuple(specials)
        if max_size is not None and max_size < len(specials):
            raise ValueError(
                f"max_size={max_size} leaves no room for the {len(specials)} special symbols"
            )
        counts: Counter[str] = Counter()

        def add(item: str) -> None:
            if level == "char":
                counts.update(item)
            else:
                counts[item] += 1

        if isinstance(text_or_tokens, str):
            counts.update(_tokenize(text_or_tokens, level))
        else:
            for item in text_or_tokens:
                if isinstance(item, str):
                    add(item)
                else:
                    for tok in item:
                        add(tok)
        for s in specials:
            counts.pop(s, None)
        ranked = sorted(
            (tok for tok, n in counts.items() if n >= min_freq), key=lambda t: (-counts[t], t)
        )
        if max_size is not None:
            dropped = len(ranked) - (max_size - len(specials))
            if dropped > 0:
                logger.debug("vocabulary capped at %d: %d rare tokens dropped", max_size, dropped)
            ranked = ranked[: max_size - len(specials)]
        if level == "char":
            ranked.sort()
        return cls(ranked, specials=specials, level=level)

    # properties -------------------------------------------------------------------------------
    @property
    def level(self) -> str:
        return self._level

    @property
    def specials(self) -> tuple[str, ...]:
        return self._specials

    @property
    def itos(self) -> list[str]:
        """Id -> token. Treat as read-only."""
        return self._itos

    @property
    def stoi(self) -> dict[str, int]:
        """Token -> id. Treat as read-only."""
        return self._stoi

    def _special_id(self, symbol: str) -> int | None:
        return self._stoi[symbol] if symbol in self._specials else None

    def __len__(self) -> int:
        return len(self._itos)

    def __contains__(self, token: object) -> bool:
        return token in self._stoi

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Vocab):
            return NotImplemented
        return (self._level, self._specials, self._itos) == (
            other._level,
            other._specials,
            other._itos,
        )

    __hash__ = None  # mutable-looking container semantics; equality is by content

    def __repr__(self) -> str:
        return f"Vocab(level={self._level!r}, size={len(self)}, specials={self._specials!r})"

    # tokens <-> ids ---------------------------------------------------------------------------
    def tokenize(self, text: str) -> list[str]:
        """``list(text)`` at char level, ``text.split()`` (any whitespace) at word level."""
        return _tokenize(text, self._level)

    def encode(self, text_or_tokens: str | Iterable[str], unknown: str = "unk") -> list[int]:
        """Map text (tokenized at this vocabulary's level) or a token list to ids.

        Args:
            unknown: what to do with symbols not in the vocabulary: ``"unk"`` maps them to
                ``<unk>`` (a :class:`DataError` if the vocabulary has none), ``"error"`` raises a
                :class:`DataError` listing them, ``"drop"`` leaves them out.
        """
        if unknown not in UNKNOWN_MODES:
            raise ValueError(f"unknown must be one of {UNKNOWN_MODES}, got {unknown!r}")
        tokens = (
            self.tokenize(text_or_tokens) if isinstance(text_or_tokens, str) else text_or_tokens
        )
        if not isinstance(tokens, Sequence):
            tokens = list(tokens)
        stoi = self._stoi
        try:
            return [stoi[t] for t in tokens]  # fast path: everything known
        except KeyError:
            pass
        missing = list(dict.fromkeys(t for t in tokens if t not in stoi))
        if unknown == "drop":
            return [stoi[t] for t in tokens if t in stoi]
        if unknown == "unk" and self.unk_id is not None:
            unk = self.unk_id
            return [stoi.get(t, unk) for t in tokens]
        kind = "characters" if self._level == "char" else "words"
        listed = ", ".join(repr(t) for t in missing[:_MAX_LISTED])
        if len(missing) > _MAX_LISTED:
            listed += f" and {len(missing) - _MAX_LISTED} more"
        if unknown == "unk":
            raise DataError(f"{kind} not in the vocabulary, which has no {UNK} symbol: {listed}")
        raise DataError(f"{kind} not in the vocabulary: {listed}")

    def decode(self, ids: Iterable[int], keep_specials: bool = False) -> str:
        """Map ids back to text: joined with ``""`` at char level, ``" "`` at word level.

        ``ids`` may be a list of ints or a 1-D tensor / array. Special symbols are left out unless
        ``keep_specials``.
        """
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        itos = self._itos
        n = len(itos)
        skip = range(len(self._specials)) if not keep_specials else range(0)
        out = []
        for i in ids:
            try:
                i = operator.index(i)  # ints, NumPy integers
            except TypeError:
                raise ValueError(f"decode expects integer ids, got {i!r}") from None
            if not 0 <= i < n:
                raise ValueError(f"id {i} is out of range for a vocabulary of size {n}")
            if i in skip:
                continue
            out.append(itos[i])
        return ("" if self._level == "char" else " ").join(out)

    # serialisation ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: ``{"level", "specials", "tokens"}`` (tokens exclude specials)."""
        return {
            "level": self._level,
            "specials": list(self._specials),
            "tokens": self._itos[len(self._specials) :],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Vocab:
        """Inverse of :meth:`to_dict`; a malformed dict is a :class:`DataError`."""
        if not isinstance(data, Mapping):
            raise DataError(f"expected a vocabulary object, found {type(data).__name__}")
        missing = [k for k in ("level", "specials", "tokens") if k not in data]
        if missing:
            raise DataError(f"vocabulary is missing key(s) {', '.join(map(repr, missing))}")
        if not isinstance(data["specials"], list) or not isinstance(data["tokens"], list):
            raise DataError("vocabulary 'specials' and 'tokens' must be lists of strings")
        try:
            return cls(data["tokens"], specials=data["specials"], level=data["level"])
        except ValueError as exc:
            raise DataError(f"invalid vocabulary: {exc}") from None

    def save(self, path: PathLike) -> None:
        """Write the vocabulary as JSON, atomically."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, path: PathLike) -> Vocab:
        """Read a vocabulary written by :meth:`save`.

        Raises:
            DataError: missing file (a ``FileNotFoundError`` too), invalid JSON (with the line)
                or not a vocabulary; the message names the file.
        """
        text = read_text(path)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"not valid JSON: {exc.msg} (column {exc.colno})", path=path, line=exc.lineno
            ) from None
        try:
            return cls.from_dict(data)
        except DataError as exc:
            raise DataError(exc.message, path=path) from None


def _tokenize(text: str, level: str) -> list[str]:
    return list(text) if level == "char" else text.split()
