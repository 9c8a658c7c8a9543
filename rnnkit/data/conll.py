"""Readers for token-level annotation: CoNLL-U treebanks and two-column CoNLL (token, tag).

* :func:`read_conllu` reads Universal Dependencies files: ten tab-separated fields per word,
  ``#`` comments, a blank line after each sentence. The tagged units are the *syntactic words*
  (integer IDs 1, 2, 3 …): a multi-word token line (``n-m``, e.g. English "don't" → "do" + "n't")
  only carries the surface form and is skipped, and an empty node (``n.k``, an elided predicate
  of the enhanced graph) is not part of the word sequence and is skipped too, exactly as the
  CoNLL-U specification defines the basic tree's words. IDs are checked to run 1, 2, 3 … and
  every range to cover the words that follow it.
* :func:`read_conll` reads ``token<TAB>tag`` lines (named entities in BIO): a sentence ends at a
  line that is empty *after stripping whitespace* (WNUT-17's training file separates most of its
  sentences with a line holding a single tab); ``-DOCSTART-`` lines are skipped; zero-width
  spaces, word joiners and byte-order marks inside a token (two WNUT-17 dev tokens carry them,
  and ``str.strip`` leaves them) are removed.

Every problem becomes a :class:`~rnnkit.errors.DataError` naming ``file:line``; with
``skip_bad_lines=True`` the sentence holding a malformed line is reported and left out.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from rnnkit.data.readers import read_text
from rnnkit.data.tabular import BadLines, chosen_format, iter_lines
from rnnkit.fileio import PathLike

__all__ = [
    "CONLLU_COLUMNS",
    "INVISIBLE",
    "TAGGED_FORMATS",
    "TaggedSentence",
    "clean_token",
    "read_conll",
    "read_conllu",
    "read_tagged",
]

log = logging.getLogger(__name__)

#: The ten CoNLL-U fields, in order.
CONLLU_COLUMNS = ("id", "form", "lemma", "upos", "xpos", "feats", "head", "deprel", "deps", "misc")
#: Formats :func:`read_tagged` knows; ``auto`` means ``conllu`` for ``*.conllu`` files.
TAGGED_FORMATS = ("auto", "conllu", "conll")
#: Characters that render as nothing and that ``str.strip``/``split`` keep: zero-width space,
#: word joiner, zero-width no-break space (BOM). ZWJ/ZWNJ are left alone: they shape emoji and
#: several scripts.
INVISIBLE = "\u200b\u2060\ufeff"
_INVISIBLE_RE = re.compile(f"[{INVISIBLE}]")
_WORD_ID = re.compile(r"[1-9][0-9]*\Z")
_RANGE_ID = re.compile(r"([1-9][0-9]*)-([1-9][0-9]*)\Z")
_EMPTY_ID = re.compile(r"(0|[1-9][0-9]*)\.([1-9][0-9]*)\Z")


@dataclass(frozen=True)
class TaggedSentence:
    """A sentence's ``tokens`` and their ``tags`` (equal lengths), and the 1-based ``line`` of
    its first token."""

    tokens: tuple[str, ...]
    tags: tuple[str, ...]
    line: int


def clean_token(token: str) -> str:
    """``token`` without the :data:`INVISIBLE` characters (unchanged if nothing else is left)."""
    cleaned = _INVISIBLE_RE.sub("", token)
    return cleaned if cleaned else token


class _Sentence:
    """Lines gathered for the sentence being read, and whether one of them was malformed."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.tokens: list[str] = []
        self.tags: list[str] = []
        self.first = 0
        self.broken = False
        self.next_id = 1  # CoNLL-U: the ID the next word must have
        self.range_end = 0  # CoNLL-U: last word covered by the open multi-word token

    def add(self, token: str, tag: str, number: int) -> None:
        if not self.tokens:
            self.first = number
        self.tokens.append(token)
        self.tags.append(tag)


def _flush(sentence: _Sentence, out: list[TaggedSentence], bad: BadLines, number: int) -> None:
    if sentence.range_end >= sentence.next_id and not sentence.broken:
        bad(
            f"the multi-word token ends at word {sentence.range_end} but the sentence ends "
            f"after word {sentence.next_id - 1}",
            number,
        )
        sentence.broken = True
    if sentence.tokens and not sentence.broken:
        out.append(TaggedSentence(tuple(sentence.tokens), tuple(sentence.tags), sentence.first))
    sentence.reset()


def read_conllu(
    path: PathLike,
    column: str = "upos",
    encoding: str = "utf-8",
    skip_bad_lines: bool = False,
) -> list[TaggedSentence]:
    """Sentences of a CoNLL-U file: the FORM of each syntactic word, tagged with ``column``
    (``upos`` by default; any of :data:`CONLLU_COLUMNS`)."""
    if column not in CONLLU_COLUMNS or column in ("id", "form"):
        raise ValueError(f"column must be one of {CONLLU_COLUMNS[2:]}; got {column!r}")
    ci = CONLLU_COLUMNS.index(column)
    bad = BadLines(path, skip_bad_lines)
    out: list[TaggedSentence] = []
    sentence = _Sentence()
    number = 0

    def fail(message: str) -> None:
        if not sentence.broken:
            sentence.broken = True
            bad(message, number)

    for number, line in iter_lines(read_text(path, encoding)):
        if not line.strip():
            _flush(sentence, out, bad, number)
            continue
        if line.startswith("#"):
            continue
        if sentence.broken:
            continue  # skipping the rest of a malformed sentence
        fields = line.split("\t")
        if len(fields) != 10:
            fail(f"expected 10 tab-separated CoNLL-U fields, found {len(fields)}")
            continue
        wid = fields[0]
        if _EMPTY_ID.match(wid):  # empty node n.k: after word n, not a word of the sentence
            if int(wid.split(".")[0]) != sentence.next_id - 1:
                fail(f"empty node {wid} is out of place after word {sentence.next_id - 1}")
            continue
        m = _RANGE_ID.match(wid)
        if m:  # multi-word token n-m: the words n..m follow on their own lines
            lo, hi = int(m.group(1)), int(m.group(2))
            if lo != sentence.next_id or hi <= lo:
                fail(
                    f"multi-word token {wid}: expected a range {sentence.next_id}-m with "
                    f"m > {sentence.next_id}"
                )
            elif sentence.range_end >= lo:
                fail(f"multi-word token {wid} overlaps the one before it")
            sentence.range_end = hi
            continue
        if not _WORD_ID.match(wid):
            fail(
                f"expected a word ID (1, 2, …), a range (1-2) or an empty node (1.1); found {wid!r}"
            )
            continue
        if int(wid) != sentence.next_id:
            fail(f"expected word ID {sentence.next_id}, found {wid}")
            continue
        form, tag = fields[1], fields[ci].strip()
        if not form:
            fail("the FORM field is empty")
            continue
        if not tag or tag == "_":
            fail(f"the {column.upper()} field is empty ({tag!r})")
            continue
        sentence.add(form, tag, number)
        sentence.next_id += 1
    _flush(sentence, out, bad, number)
    bad.finish(len(out), "sentences", number)
    return out


def read_conll(
    path: PathLike,
    token_column: int = 0,
    tag_column: int = -1,
    encoding: str = "utf-8",
    skip_bad_lines: bool = False,
    clean: bool = True,
) -> list[TaggedSentence]:
    """Sentences of a column file: one ``token<TAB>tag`` line per token (fields split on tabs
    when the line has one, else on whitespace), a whitespace-only line between sentences.

    ``clean`` removes :data:`INVISIBLE` characters from tokens (see :func:`clean_token`).
    """
    bad = BadLines(path, skip_bad_lines)
    out: list[TaggedSentence] = []
    sentence = _Sentence()
    number = 0
    cleaned = 0
    for number, line in iter_lines(read_text(path, encoding)):
        if not line.strip():
            _flush(sentence, out, bad, number)
            continue
        if sentence.broken:
            continue
        fields = line.split("\t") if "\t" in line else line.split()
        fields = [f.strip() for f in fields]
        if fields[0].startswith("-DOCSTART-"):
            continue
        if len(fields) < 2:
            sentence.broken = True
            bad(f"expected 'token<TAB>tag', found one field {fields[0][:40]!r}", number)
            continue
        try:
            token, tag = fields[token_column], fields[tag_column]
        except IndexError:
            sentence.broken = True
            bad(
                f"expected a token in column {token_column} and a tag in column {tag_column}, "
                f"found {len(fields)} fields",
                number,
            )
            continue
        if not token or not tag:
            sentence.broken = True
            bad(f"the {'token' if not token else 'tag'} field is empty", number)
            continue
        if clean:
            new = clean_token(token)
            cleaned += new != token
            token = new
        sentence.add(token, tag, number)
    _flush(sentence, out, bad, number)
    if cleaned:
        log.info("%s: removed invisible characters from %d tokens", path, cleaned)
    bad.finish(len(out), "sentences", number)
    return out


def _tagged_format(path: PathLike) -> str:
    """``conllu`` for a ``*.conllu`` file, else ``conll``."""
    return "conllu" if Path(path).name.lower().endswith(".conllu") else "conll"


def read_tagged(
    path: PathLike,
    format: str = "auto",
    column: str = "upos",
    encoding: str = "utf-8",
    skip_bad_lines: bool = False,
) -> list[TaggedSentence]:
    """CoNLL-U (``column`` tagged) or two-column CoNLL, by ``format`` or by the file name."""
    if chosen_format(format, TAGGED_FORMATS, _tagged_format, path) == "conllu":
        return read_conllu(path, column, encoding, skip_bad_lines)
    return read_conll(path, encoding=encoding, skip_bad_lines=skip_bad_lines)
