"""Tunes in ABC notation → a checked score → MIDI → WAV, and a piano-roll PNG.

What this module owns:

* :func:`validate_tune` — the verdict on one tune: does it *parse* (the rnnkit ABC lexer finds no
  error in the body, and music21's ABC reader reads it without raising or warning and finds at
  least one note), does it *convert to MIDI* (music21 writes a MIDI file with at least one
  note), is its bar structure consistent with its meter (:func:`rnnkit.data.abc.check_bars`),
  and — when the ``abc2midi`` program is installed — which errors abc2midi reports (a second,
  independent parser; reported, not counted in ``parses``, so the verdict is the same on every
  machine);
* :func:`abc_to_midi`, :func:`tune_notes`, :func:`read_midi_notes` — MIDI export (repeats played
  out by default) and the notes it holds;
* :func:`midi_to_wav` — audio through a software synthesizer found on the system: FluidSynth
  with a General MIDI soundfont, else TiMidity++ (its own configuration, else freepats). Without
  one, :class:`SynthesizerNotFound` says what to install; ABC and MIDI never need it;
* :func:`piano_roll` — pitch against time, bar lines marked.

music21 is an optional dependency (``pip install 'rnnkit[music]'``) imported on first use.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import subprocess
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rnnkit.data.abc import BarCheck, body_and_header, check_bars, parse_fields, scan_body

__all__ = [
    "INSTALL_AUDIO",
    "AbcParseError",
    "SynthesizerNotFound",
    "TuneReport",
    "abc2midi_errors",
    "abc_to_midi",
    "find_synthesizer",
    "midi_bytes",
    "midi_to_wav",
    "parse_abc",
    "piano_roll",
    "read_midi_notes",
    "tune_notes",
    "validate_tune",
]

log = logging.getLogger(__name__)

INSTALL_AUDIO = (
    "WAV needs a software synthesizer, and none was found. Install one once with "
    "`sudo apt-get install timidity freepats` (Debian/Ubuntu; or `fluidsynth fluid-soundfont-gm`, "
    "or `brew install fluid-synth` plus a .sf2 soundfont named by $RNNKIT_SOUNDFONT); "
    "the ABC and MIDI files do not need it"
)
_SOUNDFONTS = (
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/sounds/sf2/default-GM.sf2",
    "/usr/share/soundfonts/default.sf2",
    "/usr/share/soundfonts/FluidR3_GM.sf2",
    "/usr/local/share/soundfonts/default.sf2",
    "/opt/homebrew/share/soundfonts/default.sf2",
)
_TIMIDITY_CONFIGS = (
    None,  # the system's own timidity.cfg
    "/etc/timidity/freepats.cfg",
    "/etc/timidity/fluidr3_gm.cfg",
    "/usr/share/timidity/freepats/freepats.cfg",
)


class AbcParseError(ValueError):
    """music21 could not read a tune (or read it with warnings, or found no notes)."""


class SynthesizerNotFound(RuntimeError):
    """No FluidSynth + soundfont and no working TiMidity++: the message says what to install."""


def _music21():
    try:
        import music21
    except ImportError:
        raise ImportError(
            "reading ABC into a score and writing MIDI need music21: "
            "pip install 'rnnkit[music]' (or pip install music21)"
        ) from None
    return music21


# ---------------------------------------------------------------------------------------------
# parsing and validation
# ---------------------------------------------------------------------------------------------
def parse_abc(text: str):
    """One tune → a music21 ``Score``. Raises :class:`AbcParseError` when music21 raises, prints
    a warning (it does so for characters it skips) or finds no note."""
    music21 = _music21()
    printed = io.StringIO()
    try:
        with contextlib.redirect_stderr(printed), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            score = music21.converter.parse(text + "\n", format="abc", forceSource=True)
    except Exception as e:  # music21 raises many kinds (ABCHandlerException, ValueError, ...)
        raise AbcParseError(f"music21: {type(e).__name__}: {' '.join(str(e).split())}") from None
    said = [" ".join(printed.getvalue().split())] if printed.getvalue().strip() else []
    said += [str(w.message) for w in caught if not issubclass(w.category, DeprecationWarning)]
    if said:
        raise AbcParseError(f"music21 warned: {said[0][:200]}")
    if hasattr(score, "scores"):  # an Opus: the text held more than one tune
        raise AbcParseError("music21 read more than one tune")
    if not len(score.flatten().notes):
        raise AbcParseError("music21 found no notes")
    return score


@dataclass
class TuneReport:
    """The verdict on one tune (see :func:`validate_tune`)."""

    title: str | None
    meter: str | None
    key: str | None
    parses: bool
    midi: bool
    bars: BarCheck
    errors: list[str] = field(default_factory=list)
    notes: int = 0
    abc2midi: list[str] | None = None  # None: abc2midi is not installed

    @property
    def meter_consistent(self) -> bool:
        return self.bars.consistent

    def as_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "meter": self.meter,
            "key": self.key,
            "parses": self.parses,
            "midi": self.midi,
            "meter_consistent": self.bars.consistent,
            "full_bars": self.bars.full_bars,
            "bars": len(self.bars.bars),
            "notes": self.notes,
            "errors": self.errors,
            "bar_problems": self.bars.problems,
            "abc2midi_errors": self.abc2midi,
        }


def validate_tune(text: str, midi: bool = True, use_abc2midi: bool = True) -> TuneReport:
    """Check one tune: lexer, header, music21 parse, MIDI conversion, bars against the meter.

    ``errors`` lists everything that stops the tune from parsing (``line L, column C: ...`` for
    the lexer, ``music21: ...`` for the parser, ``header: ...``); bar problems are in
    ``bars.problems``. ``midi=False`` skips the (slow) MIDI conversion.
    """
    fields = parse_fields(text)
    errors: list[str] = []
    header, body, first = body_and_header(text)
    if not text.startswith("X:"):
        errors.append("header: the tune does not start with X:")
    if "K" not in fields:
        errors.append("header: no K: (key) field ends the header")
    _, lex_errors = scan_body("\n".join(body), first)
    errors += lex_errors
    score, notes, midi_ok = None, 0, False
    try:
        score = parse_abc(text)
        notes = len(score.flatten().notes)
    except AbcParseError as e:
        errors.append(str(e))
    except ImportError:
        raise
    if score is not None and midi:
        try:
            midi_ok = bool(read_midi_notes(midi_bytes(score)))
        except Exception as e:  # conversion failures of any kind are a verdict, not a crash
            errors.append(f"MIDI: {type(e).__name__}: {e}")
    return TuneReport(
        title=fields.get("T"),
        meter=fields.get("M"),
        key=fields.get("K"),
        parses=not errors and score is not None,
        midi=midi_ok,
        bars=check_bars(text),
        errors=errors,
        notes=notes,
        abc2midi=abc2midi_errors(text) if use_abc2midi else None,
    )


def abc2midi_errors(text: str) -> list[str] | None:
    """The ``Error`` lines the ``abc2midi`` program prints for a tune; ``None`` when abc2midi is
    not installed (``apt-get install abcmidi``)."""
    exe = shutil.which("abc2midi")
    if exe is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "tune.abc"
        src.write_text(text + "\n", encoding="utf-8")
        done = subprocess.run(
            [exe, str(src), "-o", str(Path(tmp) / "tune.mid"), "-quiet", "-silent"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    out = (done.stdout + done.stderr).splitlines()
    return [ln.strip() for ln in out if ln.startswith("Error")]


# ---------------------------------------------------------------------------------------------
# MIDI
# ---------------------------------------------------------------------------------------------
def _without_repeats(score):
    """A copy of ``score`` with repeat bar lines and first/second-ending brackets removed, so it
    plays once as written (music21 expands repeats whenever it writes MIDI)."""
    from music21 import bar

    score = score.__deepcopy__()
    for m in score.recurse().getElementsByClass("Measure"):
        if isinstance(m.leftBarline, bar.Repeat):
            m.leftBarline = bar.Barline("regular")
        if isinstance(m.rightBarline, bar.Repeat):
            m.rightBarline = bar.Barline("regular")
    for part in score.parts:
        for bracket in list(part.spanners.getElementsByClass("RepeatBracket")):
            part.remove(bracket)
    return score


def _with_repeat_starts(score):
    """A copy of ``score`` where every end repeat without a start repeat gets one, placed as ABC
    reads it: at the start of the tune or right after the previous end repeat (and its second
    ending). music21 would otherwise jump back to the start of the tune every time, so the
    usual ``A-part :| B-part :|`` would play A A A B A A B instead of A A B B."""
    from music21 import bar

    score = score.__deepcopy__()
    for part in score.parts:
        measures = list(part.getElementsByClass("Measure"))
        in_ending = {
            id(m)
            for bracket in part.spanners.getElementsByClass("RepeatBracket")
            for m in bracket.getSpannedElements()
        }
        start, has_start = 0, False
        for i, m in enumerate(measures):
            if isinstance(m.leftBarline, bar.Repeat) and m.leftBarline.direction == "start":
                has_start = True
            if isinstance(m.rightBarline, bar.Repeat) and m.rightBarline.direction == "end":
                if not has_start and start < len(measures):
                    measures[start].leftBarline = bar.Repeat(direction="start")
                start, has_start = i + 1, False
                while start < len(measures) and id(measures[start]) in in_ending:
                    start += 1  # the next section begins after the second ending
    return score


def midi_bytes(score, expand_repeats: bool = True, tempo: float | None = None) -> bytes:
    """MIDI of a score: repeats played out when ``expand_repeats`` and they are well formed,
    else the tune once as written."""
    music21 = _music21()
    if tempo is not None:
        score = score.__deepcopy__()
        for old in list(score.recurse().getElementsByClass("MetronomeMark")):
            old.activeSite.remove(old)
        score.parts[0].insert(0, music21.tempo.MetronomeMark(number=tempo))
    score = _with_repeat_starts(score) if expand_repeats else _without_repeats(score)
    try:
        midi = music21.midi.translate.music21ObjectToMidiFile(score)
    except music21.repeat.ExpanderException as e:  # e.g. a :| with no matching start
        log.debug("repeats not played out (%s); the tune is played once as written", e)
        midi = music21.midi.translate.music21ObjectToMidiFile(_without_repeats(score))
    return midi.writestr()


def abc_to_midi(
    text: str, path: str | os.PathLike, expand_repeats: bool = True, tempo: float | None = None
) -> Path:
    """Write a tune as a MIDI file (piano). Repeats and first/second endings are played out
    unless ``expand_repeats=False``; ``tempo`` in quarter notes per minute overrides ``Q:``
    (music21's default is 120). Raises :class:`AbcParseError` for a tune that does not parse."""
    data = midi_bytes(parse_abc(text), expand_repeats, tempo)
    path = Path(path)
    path.write_bytes(data)
    return path


def tune_notes(text_or_score) -> list[tuple[float, float, int]]:
    """The notes of a tune as written (repeats not played out), tied notes merged:
    ``(start, duration, MIDI pitch)`` with times in quarter notes, chords giving one entry per
    pitch, sorted by start then pitch."""
    score = parse_abc(text_or_score) if isinstance(text_or_score, str) else text_or_score
    out = []
    for n in score.stripTies().flatten().notes:
        for p in getattr(n, "pitches", ()):
            out.append((float(n.offset), float(n.quarterLength), int(p.midi)))
    return sorted(out, key=lambda e: (e[0], e[2]))


def read_midi_notes(data: bytes | str | os.PathLike) -> list[tuple[float, float, int]]:
    """Read the notes back from MIDI bytes or a file: ``(start, duration, pitch)`` with times in
    quarter notes (ticks / ticks-per-quarter), from note-on/note-off pairs of every track."""
    music21 = _music21()
    if not isinstance(data, bytes):
        data = Path(data).read_bytes()
    mf = music21.midi.MidiFile()
    mf.readstr(data)
    tpq = mf.ticksPerQuarterNote
    notes = []
    for track in mf.tracks:
        tick, sounding = 0, {}
        for ev in track.events:
            if ev.isDeltaTime():
                tick += ev.time
            elif ev.isNoteOn():
                sounding.setdefault((ev.channel, ev.pitch), []).append(tick)
            elif ev.isNoteOff():
                starts = sounding.get((ev.channel, ev.pitch))
                if starts:
                    start = starts.pop(0)
                    notes.append((start / tpq, (tick - start) / tpq, ev.pitch))
    return sorted(notes, key=lambda e: (e[0], e[2]))


# ---------------------------------------------------------------------------------------------
# WAV
# ---------------------------------------------------------------------------------------------
def _soundfont() -> str | None:
    env = os.environ.get("RNNKIT_SOUNDFONT")
    if env:
        return env if Path(env).is_file() else None
    return next((sf for sf in _SOUNDFONTS if Path(sf).is_file()), None)


def find_synthesizer() -> str | None:
    """``"fluidsynth"`` (with a soundfont), ``"timidity"``, or ``None`` when neither is there."""
    if shutil.which("fluidsynth") and _soundfont():
        return "fluidsynth"
    if shutil.which("timidity"):
        return "timidity"
    return None


def midi_to_wav(
    midi_path: str | os.PathLike, wav_path: str | os.PathLike, sample_rate: int = 44100
) -> Path:
    """Render a MIDI file to WAV (16-bit PCM) with FluidSynth + a General MIDI soundfont
    (``$RNNKIT_SOUNDFONT`` or the usual system paths) or TiMidity++ (its configuration, else the
    freepats one). Raises :class:`SynthesizerNotFound` when there is neither, ``RuntimeError``
    with the synthesizer's message when rendering fails."""
    midi_path, wav_path = Path(midi_path), Path(wav_path)
    attempts: list[list[str]] = []
    soundfont = _soundfont()
    if shutil.which("fluidsynth") and soundfont:
        attempts.append(
            ["fluidsynth", "-ni", "-F", str(wav_path), "-r", str(sample_rate)]
            + [soundfont, str(midi_path)]
        )
    if shutil.which("timidity"):
        for cfg in _TIMIDITY_CONFIGS:
            if cfg is None or Path(cfg).is_file():
                option = ["-c", cfg] if cfg else []
                attempts.append(
                    ["timidity", *option, "-Ow", "-s", str(sample_rate), "-o", str(wav_path)]
                    + [str(midi_path)]
                )
    if not attempts:
        raise SynthesizerNotFound(INSTALL_AUDIO)
    said = ""
    for cmd in attempts:
        wav_path.unlink(missing_ok=True)
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if done.returncode == 0 and wav_path.is_file() and wav_path.stat().st_size > 44:
            return wav_path
        said = " ".join((done.stderr or done.stdout).split())[:300]
    raise RuntimeError(f"the synthesizer could not render {midi_path}: {said}")


# ---------------------------------------------------------------------------------------------
# piano roll
# ---------------------------------------------------------------------------------------------
def piano_roll(text: str, path: str | os.PathLike, title: str | None = None) -> Path:
    """Draw a tune as written: one bar per note (pitch against time in quarter notes), dotted
    lines at the bar lines music21 found, pitch names on the vertical axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    score = parse_abc(text)
    notes = tune_notes(score)
    fields = parse_fields(text)
    fig, ax = plt.subplots(figsize=(max(6.0, min(24.0, notes[-1][0] / 4 + 2)), 3.6))
    for start, dur, pitch in notes:
        ax.add_patch(
            matplotlib.patches.Rectangle(
                (start, pitch - 0.4), dur * 0.95, 0.8, color="tab:blue", alpha=0.85
            )
        )
    part = score.parts[0] if hasattr(score, "parts") and score.parts else score
    for m in part.getElementsByClass("Measure"):
        ax.axvline(float(m.offset), color="0.6", lw=0.6, ls=":")
    low = min(p for _, _, p in notes) - 2
    high = max(p for _, _, p in notes) + 2
    names = "C C# D D# E F F# G G# A A# B".split()
    ticks = [p for p in range(low, high + 1) if p % 12 in (0, 4, 7)]
    ax.set_yticks(ticks, [f"{names[p % 12]}{p // 12 - 1}" for p in ticks])
    ax.set_ylim(low, high)
    ax.set_xlim(0, max(s + d for s, d, _ in notes))
    ax.set_xlabel("time (quarter notes)")
    label = title or fields.get("T") or "tune"
    ax.set_title(f"{label}  ({fields.get('M', '?')}, {fields.get('K', '?')})", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
