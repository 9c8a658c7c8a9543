"""ABC music notation as text: files split into tunes, header fields, a strict body lexer, and the
bar/meter checker.

Pure Python (no torch, no music21), so the language model's data preparation and the checks on
generated tunes run anywhere. What this module owns:

* :func:`split_tunes` — a file → :class:`Tune` objects. A tune starts at its ``X:`` line and a
  blank line ends it. Comment lines (``%`` ...; ``%%`` directives too) neither start nor end a tune
  and are removed, as are end-of-line ``% comments``; a line ending in ``\\`` continues on the
  next line (the two are joined, and a blank line right after it does not end the tune); a
  ``+:`` line continues the previous field. A paragraph with a ``K:`` line but no ``X:`` (a tune
  whose ``X:`` was forgotten) is kept and given ``X:<n>``; other text between tunes (the file
  header, free text) is skipped.
* :func:`scan_body` — the tune body (the lines after ``K:``) → tokens (notes, rests, chords, bar
  lines, tuplets, broken rhythm, ties, slurs, decorations, grace notes, chord symbols, inline
  fields), with an error (``line:column: what``) for every character that is not ABC 2.1.
* :func:`check_bars` — durations counted per bar against the meter (the rules are in its
  docstring).
* :func:`normalize_key`, :func:`parse_meter`, :func:`parse_length` — the header values.

Durations are :class:`fractions.Fraction` of a whole note: with ``L:1/8``, ``A2`` lasts 1/4.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fractions import Fraction

__all__ = [
    "Bar",
    "BarCheck",
    "Token",
    "Tune",
    "body_and_header",
    "check_bars",
    "default_unit",
    "normalize_key",
    "normalize_meter",
    "parse_fields",
    "parse_length",
    "parse_meter",
    "scan_body",
    "split_tunes",
]

_FIELD_LINE = re.compile(r"^([A-Za-z+]):(.*)$")


# ---------------------------------------------------------------------------------------------
# splitting a file into tunes
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Tune:
    """One tune: ``text`` is its logical lines joined by ``\\n`` (comments removed, continuation
    lines joined, trailing spaces stripped, no trailing newline); ``line`` the 1-based line of the
    source where it starts; ``number`` its ``X:`` value (``None`` when the source had no ``X:``
    line and one was added)."""

    text: str
    line: int = 1
    number: int | None = None

    @property
    def fields(self) -> dict[str, str]:
        """The first value of every header field (the lines up to and including ``K:``)."""
        return parse_fields(self.text)

    @property
    def title(self) -> str | None:
        return self.fields.get("T")


def _strip_comment(line: str) -> str:
    r"""Remove a ``% comment`` (an escaped ``\%`` is text, not a comment)."""
    m = re.search(r"(?<!\\)%", line)
    return line[: m.start()] if m else line


def split_tunes(text: str) -> list[Tune]:
    """Split the text of an ABC file into tunes (rules in the module docstring).

    >>> [t.number for t in split_tunes("X:1\\nK:G\\nGAB|\\n\\nX:2\\nK:D\\nDEF|\\n")]
    [1, 2]
    """
    tunes: list[Tune] = []
    block: list[str] = []  # the logical lines of the paragraph being read
    start = 0
    continuing = False  # the previous physical line ended with a backslash

    def close() -> None:
        nonlocal block
        lines = [ln for ln in block if ln.strip()]
        block = []
        if not lines:
            return
        head = _FIELD_LINE.match(lines[0])
        if head and head.group(1) == "X":
            number = _int_or_none(head.group(2))
            tunes.append(Tune("\n".join(lines), start, number))
        elif any((m := _FIELD_LINE.match(ln)) and m.group(1) == "K" for ln in lines):
            # a tune without its X: line: number it after the tune before it
            previous = tunes[-1].number if tunes and tunes[-1].number is not None else len(tunes)
            tunes.append(Tune("\n".join([f"X:{previous + 1}", *lines]), start, None))
        # else: the file header or free text between tunes

    for lineno, physical in enumerate(text.splitlines(), 1):
        if physical.lstrip().startswith("%"):
            continue  # comment line or %% directive: invisible to the tune structure
        line = _strip_comment(physical).rstrip()
        if continuing:
            continuing = line.endswith("\\")
            block[-1] += line[:-1] if continuing else line
            continue
        if not line.strip():
            close()
            continue
        continuing = line.endswith("\\")
        if continuing:
            line = line[:-1].rstrip()
        if line.startswith("X:"):
            close()  # a new tune begins even without a blank line before it
        if not block:
            start = lineno
        if line.startswith("+:") and block:
            block[-1] += " " + line[2:].strip()  # field continuation (ABC 2.1 §3.2)
        else:
            block.append(line)
    close()
    return tunes


def _int_or_none(value: str) -> int | None:
    value = value.strip()
    return int(value) if value.isdigit() else None


def body_and_header(text: str) -> tuple[list[str], list[str], int]:
    """(header lines, body lines, 1-based line number of the first body line) of a tune: the
    header runs up to and including the first ``K:`` line (the ABC rule); without a ``K:`` it is
    the leading field lines."""
    lines = text.split("\n")
    for i, ln in enumerate(lines):
        m = _FIELD_LINE.match(ln)
        if m and m.group(1) == "K":
            return lines[: i + 1], lines[i + 1 :], i + 2
        if not m:
            return lines[:i], lines[i:], i + 1
    return lines, [], len(lines) + 1


def parse_fields(text: str) -> dict[str, str]:
    """The first value of each header field, e.g. ``{"X": "1", "T": "...", "M": "6/8", ...}``."""
    header, _, _ = body_and_header(text)
    out: dict[str, str] = {}
    for ln in header:
        m = _FIELD_LINE.match(ln)
        if m:
            out.setdefault(m.group(1), m.group(2).strip())
    return out


# ---------------------------------------------------------------------------------------------
# header values
# ---------------------------------------------------------------------------------------------
def parse_meter(value: str) -> Fraction | None:
    """Length of one bar as a fraction of a whole note; ``None`` for free meter.

    ``C`` = 4/4, ``C|`` = 2/2, ``6/8`` = 3/4, ``2+3+2/8`` = 7/8, ``none`` (or empty) = free.
    Raises ``ValueError`` for anything else.
    """
    v = value.strip()
    if v.lower() in ("", "none"):
        return None
    if v == "C":
        return Fraction(1)
    if v == "C|":
        return Fraction(1)
    m = re.fullmatch(r"\(?(\d+(?:\+\d+)*)\)?/(\d+)", v)
    if not m:
        raise ValueError(f"not a meter: {value!r} (expected e.g. 6/8, 3/4, C or C|)")
    num = sum(int(p) for p in m.group(1).split("+"))
    den = int(m.group(2))
    if num == 0 or den == 0:
        raise ValueError(f"not a meter: {value!r} (zero beats or zero note value)")
    return Fraction(num, den)


def normalize_meter(value: str) -> str:
    """Check a meter given by a user and return it as written in ABC (``6/8``, ``C|``)."""
    v = value.strip()
    if parse_meter(v) is None:
        raise ValueError(f"a meter is needed, got {value!r} (e.g. 6/8, 3/4, C or C|)")
    return v


def default_unit(meter: Fraction | None) -> Fraction:
    """The ABC default unit note length when there is no ``L:``: 1/16 for meters below 3/4
    (as a decimal), else 1/8."""
    return Fraction(1, 16) if meter is not None and meter < Fraction(3, 4) else Fraction(1, 8)


def parse_length(value: str) -> Fraction:
    """The ``L:`` field as a fraction of a whole note (``1/8``, ``1/4``, ``1``)."""
    m = re.fullmatch(r"\s*(\d+)(?:/(\d+))?\s*", value)
    if not m or int(m.group(1)) == 0 or (m.group(2) is not None and int(m.group(2)) == 0):
        raise ValueError(f"not a unit note length: {value!r} (expected e.g. 1/8)")
    return Fraction(int(m.group(1)), int(m.group(2) or 1))


_MODES = {
    "": "Major",
    "maj": "Major",
    "major": "Major",
    "ion": "Major",
    "ionian": "Major",
    "m": "Minor",
    "min": "Minor",
    "minor": "Minor",
    "aeo": "Minor",
    "aeolian": "Minor",
    "dor": "Dorian",
    "dorian": "Dorian",
    "mix": "Mixolydian",
    "mixolydian": "Mixolydian",
    "phr": "Phrygian",
    "phrygian": "Phrygian",
    "lyd": "Lydian",
    "lydian": "Lydian",
    "loc": "Locrian",
    "locrian": "Locrian",
}


def normalize_key(value: str) -> str:
    """A key as the bundled tunes write it: tonic (with ``#``/``b``) and the mode's full name.

    ``D`` → ``D Major``, ``Em``/``E minor`` → ``E Minor``, ``Ador`` → ``A Dorian``,
    ``Dmix`` → ``D Mixolydian``, ``F#m`` → ``F# Minor``. Raises ``ValueError`` otherwise.
    """
    m = re.fullmatch(r"\s*([A-Ga-g])([#b]?)\s*([A-Za-z]*)\s*", value)
    mode = _MODES.get(m.group(3).lower()) if m else None
    if mode is None:
        raise ValueError(
            f"not a key: {value!r} (expected a tonic A-G with an optional # or b and a mode, "
            "e.g. D, Em, A Dorian, G Mixolydian)"
        )
    return f"{m.group(1).upper()}{m.group(2)} {mode}"


# ---------------------------------------------------------------------------------------------
# the body lexer
# ---------------------------------------------------------------------------------------------
_LEN = r"\d*/*\d*"
_PITCH = r"(?:\^\^|\^|__|_|=)?[A-Ga-g][',]*"
_TOKEN = re.compile(
    rf"""
     (?P<eol>\n)
    |(?P<space>[ \t]+)
    |(?P<field>\[[A-Za-z]:[^\]\n]*\])
    |(?P<bar>(?:\.?:*(?:\[\|\]|\[\||\|\||\|\]|\|)+:*|::+)(?:\[?\d+(?:[,-]\d+)*)?)
    |(?P<ending>\[\d+(?:[,-]\d+)*)
    |(?P<chord>\[(?:{_PITCH}{_LEN}-?|[ \t])*{_PITCH}{_LEN}-?(?:{_PITCH}{_LEN}-?|[ \t])*\]{_LEN})
    |(?P<grace>\{{/?(?:{_PITCH}{_LEN}|[ \t])+\}})
    |(?P<annotation>"[^"\n]*")
    |(?P<decoration>![A-Za-z0-9<>+.()/^_=-]+!|\+[A-Za-z0-9<>.()/-]+\+|[.~HLMOPSTuv])
    |(?P<linebreak>[!$])
    |(?P<tuplet>\(\d+(?::\d*)?(?::\d*)?)
    |(?P<slur>\.?[()])
    |(?P<note>{_PITCH}{_LEN})
    |(?P<rest>[zx]{_LEN})
    |(?P<measure_rest>[ZX]\d*)
    |(?P<broken><{{1,3}}|>{{1,3}})
    |(?P<tie>\.?-)
    |(?P<spacer>[y`])
    """,
    re.VERBOSE,
)
_LENGTH = re.compile(r"(\d*)(/*)(\d*)$")


@dataclass(frozen=True)
class Token:
    """A piece of a tune body: ``kind`` is a group name of the lexer (``note``, ``rest``,
    ``chord``, ``bar``, ``tuplet``, ``broken``, ...), ``text`` the characters, ``line``/``column``
    1-based positions in the tune."""

    kind: str
    text: str
    line: int
    column: int


def _length(suffix: str) -> Fraction:
    """The multiplier written after a note: ``2`` → 2, ``3/2`` → 3/2, ``/`` → 1/2, ``//`` → 1/4,
    ``/3`` → 1/3; empty → 1."""
    m = _LENGTH.match(suffix)
    num, slashes, den = m.group(1), m.group(2), m.group(3)
    n = int(num) if num else 1
    if not slashes:
        return Fraction(n)
    d = int(den) if den else 2 ** len(slashes)
    if d == 0 or n == 0:
        raise ValueError(f"a note length of zero: {suffix!r}")
    return Fraction(n, d)


def _note_length(text: str) -> Fraction:
    """Length multiplier of a note or rest token (``^f2`` → 2, ``z/`` → 1/2)."""
    return _length(re.sub(r"^[\^_=]*[A-Ga-gzx][',]*", "", text))


def _chord_length(text: str) -> Fraction:
    """A chord lasts as long as its first note, times the length written after ``]``."""
    inner, outer = text[1:].split("]", 1)
    first = re.search(rf"{_PITCH}({_LEN})", inner)
    return _length(first.group(1)) * _length(outer)


def scan_body(body: str, first_line: int = 1) -> tuple[list[Token], list[str]]:
    """Tokenise a tune body. Returns ``(tokens, errors)``; every error reads
    ``line L, column C: ...`` (lines counted in the tune, the body starting at ``first_line``).

    Field lines inside the body (``K:``, ``M:``, ``L:``, ``P:``, ``w:`` ...) become ``field``
    tokens; ``%`` comments are skipped; a character that starts no ABC element is an error, as
    is a zero length (``A0``, ``A/0``), a tuplet of fewer than 2 or more than 9 notes, or a tuplet
    or broken rhythm that is not followed by enough notes.
    """
    tokens: list[Token] = []
    errors: list[str] = []
    for offset, raw in enumerate(body.split("\n")):
        lineno = first_line + offset
        line = _strip_comment(raw)
        m = _FIELD_LINE.match(line)
        if m:
            tokens.append(Token("field", line, lineno, 1))
            tokens.append(Token("eol", "\n", lineno, len(line) + 1))
            continue
        pos = 0
        while pos < len(line):
            t = _TOKEN.match(line, pos)
            if t is None:
                errors.append(f"line {lineno}, column {pos + 1}: unexpected {line[pos]!r}")
                pos += 1
                continue
            kind, text = t.lastgroup, t.group()
            if kind in ("note", "rest", "chord"):
                try:
                    _chord_length(text) if kind == "chord" else _note_length(text)
                except ValueError as e:
                    errors.append(f"line {lineno}, column {pos + 1}: {e}")
            elif kind == "tuplet":
                p = int(re.match(r"\((\d+)", text).group(1))
                if not 2 <= p <= 9:
                    errors.append(f"line {lineno}, column {pos + 1}: a tuplet of {p} notes")
            tokens.append(Token(kind, text, lineno, pos + 1))
            pos = t.end()
        tokens.append(Token("eol", "\n", lineno, len(line) + 1))
    errors += _check_sequencing(tokens)
    return tokens, errors


def _check_sequencing(tokens: list[Token]) -> list[str]:
    """Tuplets must be followed by their notes, broken rhythm must sit between two notes."""
    errors = []
    sounding = ("note", "rest", "chord")
    for i, tok in enumerate(tokens):
        if tok.kind == "tuplet":
            p, _, r = _tuplet_numbers(tok.text, None)
            following = 0
            for nxt in tokens[i + 1 :]:
                if nxt.kind in sounding:
                    following += 1
                    if following == r:
                        break
                elif nxt.kind in ("bar", "tuplet", "field"):
                    break
            if following < r:
                errors.append(
                    f"line {tok.line}, column {tok.column}: tuplet {tok.text!r} needs {r} notes, "
                    f"found {following}"
                )
        elif tok.kind == "broken":
            before = next((t for t in reversed(tokens[:i]) if t.kind != "space"), None)
            after = next((t for t in tokens[i + 1 :] if t.kind != "space"), None)
            if not (before and before.kind in sounding and after and after.kind in sounding):
                errors.append(
                    f"line {tok.line}, column {tok.column}: broken rhythm {tok.text!r} "
                    "must stand between two notes"
                )
    return errors


def _tuplet_numbers(text: str, meter: Fraction | None) -> tuple[int, int, int]:
    """``(p:q:r``: p notes in the time of q, for the next r notes (ABC 2.1 §4.13). When q is
    not written it is 3 for p ∈ {2, 4, 8}, 2 for p ∈ {3, 6}, and for p ∈ {5, 7, 9} 3 in compound
    meters (6/8, 9/8, 12/8) else 2; r defaults to p."""
    parts = text[1:].split(":")
    p = int(parts[0])
    q = int(parts[1]) if len(parts) > 1 and parts[1] else None
    r = int(parts[2]) if len(parts) > 2 and parts[2] else p
    if q is None:
        compound = meter is not None and meter.denominator == 8 and meter.numerator % 3 == 0
        q = 3 if p in (2, 4, 8) else 2 if p in (3, 6) else (3 if compound else 2)
    return p, q, r


# ---------------------------------------------------------------------------------------------
# bars against the meter
# ---------------------------------------------------------------------------------------------
@dataclass
class Bar:
    """One bar: its summed ``duration`` and the ``expected`` bar length (whole notes; ``None`` in
    free meter), the bar lines ``left`` and ``right`` of it (``""`` at the start or end of the
    tune), its first line, and ``verdict``: ``full``, ``edge`` (a shorter bar allowed at a
    section edge), ``short``, ``long``, or ``free``."""

    duration: Fraction
    expected: Fraction | None
    left: str
    right: str
    line: int
    verdict: str = ""
    measures: int = 1  # a multi-measure rest Zn stands for n bars


@dataclass
class BarCheck:
    """The result of :func:`check_bars`: ``consistent`` tells whether every bar fits the meter."""

    consistent: bool
    bars: list[Bar] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def full_bars(self) -> int:
        return sum(b.measures for b in self.bars if b.verdict == "full")


def _is_section_mark(bar_text: str) -> bool:
    """Repeats, double bars, end bars and numbered endings delimit sections."""
    return any(s in bar_text for s in (":", "||", "[|", "|]")) or bool(re.search(r"\d", bar_text))


def check_bars(text: str, min_full_bars: int = 2) -> BarCheck:
    """Count note durations per bar and compare each bar with the meter.

    How durations are counted (all in fractions of a whole note):

    * a note or rest lasts L × its multiplier (``A`` = L, ``A2`` = 2L, ``A3/2``, ``A/`` = L/2,
      ``A//`` = L/4), with L from ``L:`` or the ABC default (:func:`default_unit`);
    * a chord ``[CEG]2`` lasts as long as its first note times the length after ``]``;
    * a tuplet ``(p:q:r`` scales the next r notes, rests or chords by q/p (q as in ABC 2.1);
    * broken rhythm ``a>b`` makes a 3/2 and b 1/2 of their lengths (``>>``: 7/4 and 1/4,
      ``<`` the reverse), so the pair keeps its total;
    * grace notes, decorations, chord symbols, ties, slurs and spaces take no time; ``Zn``/``Xn``
      rests stand for n whole bars;
    * ``M:``/``L:`` fields in the body (own line or inline ``[M:3/4]``) apply from there on.

    A bar is the music between two bar lines (``|``, ``||``, ``[|``, ``|]``, ``|:``, ``:|``,
    ``::``, with or without ending numbers ``|1``, ``:|2``, ``[2``); line breaks do not end bars,
    and text after the last bar line is a final bar. Bars that take no time (``|:`` at the start
    of a line after a line-ending ``|``) are ignored.

    A bar is ``full`` when its duration equals the meter exactly. It may be shorter (``edge``)
    only at a section edge: the first or last bar of the tune, or a bar next to a repeat, double
    bar, end bar or numbered ending (the anacrusis of a section and the bar that completes it).
    Any other shorter bar, and any longer bar, is a problem. The tune is ``consistent`` when
    there is no problem and at least ``min_full_bars`` full bars; free meter (``M:none``) or a
    meter that cannot be read is inconsistent only through its problems.
    """
    fields = parse_fields(text)
    problems: list[str] = []
    header, body, first = body_and_header(text)
    try:
        meter = parse_meter(fields["M"]) if "M" in fields else None
    except ValueError as e:
        meter = None
        problems.append(f"header: {e}")
    try:
        unit = parse_length(fields["L"]) if "L" in fields else default_unit(meter)
    except ValueError as e:
        unit = default_unit(meter)
        problems.append(f"header: {e}")
    if "M" not in fields:
        problems.append("header: no M: (meter) field")
    tokens, errors = scan_body("\n".join(body), first)
    problems += errors

    bars: list[Bar] = []
    durations: list[Fraction] = []  # the notes of the bar being read, for broken rhythm
    left = ""
    bar_line = first
    tuplet_left, tuplet_factor = 0, Fraction(1)
    next_factor = Fraction(1)  # the second note of a broken-rhythm pair

    def finish(right: str, line: int) -> None:
        nonlocal durations, left, bar_line
        bars.append(Bar(sum(durations, Fraction(0)), meter, left, right, bar_line))
        durations, left, bar_line = [], right, line

    for tok in tokens:
        kind = tok.kind
        if kind in ("note", "rest", "chord"):
            try:
                mult = _chord_length(tok.text) if kind == "chord" else _note_length(tok.text)
            except ValueError:
                continue  # already reported by the lexer
            if not durations:
                bar_line = tok.line
            d = unit * mult * next_factor
            next_factor = Fraction(1)
            if tuplet_left:
                d *= tuplet_factor
                tuplet_left -= 1
            durations.append(d)
        elif kind == "tuplet":
            p, q, r = _tuplet_numbers(tok.text, meter)
            tuplet_left, tuplet_factor = r, Fraction(q, p)
        elif kind == "broken" and durations:
            n = len(tok.text)
            short = Fraction(1, 2**n)
            first_factor, next_factor = (
                (2 - short, short) if tok.text[0] == ">" else (short, 2 - short)
            )
            durations[-1] *= first_factor
        elif kind == "measure_rest":
            count = int(tok.text[1:] or 1)
            if durations:
                finish(tok.text, tok.line)
            bars.append(Bar(meter or Fraction(0), meter, left, "", tok.line, measures=count))
            bars[-1].verdict = "full" if meter else "free"
        elif kind == "bar":
            finish(tok.text, tok.line)
        elif kind == "ending" and not durations and bars:
            bars[-1].right += tok.text  # "|\n[2 ..." : the bars on both sides meet an ending
            left += tok.text
        elif kind == "field":
            inner = tok.text.strip("[]")
            name, value = inner[0], inner[2:]
            try:
                if name == "M":
                    meter = parse_meter(value)
                elif name == "L":
                    unit = parse_length(value)
            except ValueError as e:
                problems.append(f"line {tok.line}: {e}")
    if durations:
        finish("", bar_line)

    sounding = [b for b in bars if b.duration > 0 or b.measures > 1 or b.verdict]
    for i, b in enumerate(sounding):
        if b.verdict:
            continue
        edge = (
            i == 0
            or i == len(sounding) - 1
            or _is_section_mark(b.left)
            or _is_section_mark(b.right)
        )
        if b.expected is None:
            b.verdict = "free"
        elif b.duration == b.expected:
            b.verdict = "full"
        elif b.duration < b.expected:
            b.verdict = "edge" if edge else "short"
        else:
            b.verdict = "long"
        if b.verdict in ("short", "long"):
            problems.append(
                f"line {b.line}: bar {i + 1} lasts {b.duration} of a whole note, "
                f"the meter asks for {b.expected}"
            )
    result = BarCheck(False, sounding, problems)
    if result.full_bars < min_full_bars and meter is not None:
        problems.append(f"only {result.full_bars} full bars (at least {min_full_bars} expected)")
    result.consistent = not problems
    return result
