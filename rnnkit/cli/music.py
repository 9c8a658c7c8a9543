"""``rnnkit generate`` for music runs: whole tunes in ABC notation, checked and exported.

``rnnkit generate RUN --tunes N --out DIR --midi --wav --png`` samples tunes with
:class:`~rnnkit.inference.MusicRequest` (the music model's ``infer``) (header fields the user fixes: ``--key``,
``--meter``, ``--title``, ``--unit-length``), writes them to stdout or to ``DIR`` (``tunes.abc``
and ``tune_NNN.abc``), parses each and checks its bars (``--check``, implied by ``--out``), and
exports MIDI, WAV and piano rolls with :mod:`rnnkit.music_export`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from rnnkit.cli.common import SAMPLING_FLAGS, flag_values
from rnnkit.inference import MusicRequest
from rnnkit.tasks.music import GeneratedTune, MusicModel

log = logging.getLogger(__name__)


def add_generate_flags(parser: argparse.ArgumentParser) -> None:
    """The ``rnnkit generate`` options for music runs."""
    g = parser.add_argument_group("music runs (whole tunes in ABC notation)")
    g.add_argument("--tunes", type=int, default=None, help="number of tunes to write (default 1)")
    g.add_argument("--out", metavar="DIR", help="write tune_NNN.abc (and .mid/.wav/.png) here")
    g.add_argument("--midi", action="store_true", help="also write a MIDI file per tune")
    g.add_argument(
        "--wav", action="store_true", help="also write a WAV per tune (needs timidity/fluidsynth)"
    )
    g.add_argument("--png", action="store_true", help="also draw a piano roll per tune")
    g.add_argument("--key", help="fix the key, e.g. D, Em, A Dorian")
    g.add_argument("--meter", help="fix the meter, e.g. 6/8, 3/4, C|")
    g.add_argument("--title", help="fix the title (T:)")
    g.add_argument("--unit-length", help="fix the unit note length (L:), e.g. 1/8")
    g.add_argument(
        "--max-chars", type=int, default=2000, help="cut a tune off after this many characters"
    )
    g.add_argument(
        "--check", action="store_true", help="parse each tune and check its bars (implied by --out)"
    )


def _music21_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("music21") is not None


def generate_tunes(model, args: argparse.Namespace) -> int:
    """``rnnkit generate`` for a music run: whole tunes to stdout, or files in ``--out``."""
    from rnnkit import music_export as mx

    if not isinstance(model, MusicModel):
        raise ValueError(f"--tunes needs a music run (rnnkit train music); {args.run} is not one")
    n = 1 if args.tunes is None else args.tunes
    if n < 1 or args.max_chars < 1:
        raise ValueError("--tunes and --max-chars must be at least 1")
    exporting = args.midi or args.wav or args.png
    if exporting and not args.out:
        raise ValueError("--midi/--wav/--png write files: give --out DIR")
    check = args.check or bool(args.out)
    if (exporting or check) and not _music21_available():
        if exporting:
            raise ValueError("MIDI, WAV and piano rolls need music21: pip install 'rnnkit[music]'")
        log.warning("music21 is not installed: tunes are not parsed (pip install 'rnnkit[music]')")
        check = False
    request = MusicRequest(
        tunes=n,
        unit=args.unit_length,
        **flag_values(args, "prompt", "key", "meter", "title", "max_chars", *SAMPLING_FLAGS),
    )
    tunes = [GeneratedTune(t["number"], t["abc"], t["ended"]) for t in model.infer(request).tunes]
    out = Path(args.out) if args.out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
        (out / "tunes.abc").write_text("\n\n".join(t.text for t in tunes) + "\n", encoding="utf-8")
    warned_audio = False
    for tune in tunes:
        record: dict[str, Any] = {"number": tune.number, "text": tune.text, "ended": tune.ended}
        report = mx.validate_tune(tune.text, midi=False) if check else None
        if report is not None:
            record["check"] = report.as_dict()
        if out:
            stem = out / f"tune_{tune.number:03d}"
            files = [stem.with_suffix(".abc")]
            files[0].write_text(tune.text + "\n", encoding="utf-8")
            if exporting and not report.parses:
                record["skipped"] = f"not exported: {report.errors[0]}"
            elif exporting:
                try:
                    if args.midi or args.wav:
                        files.append(mx.abc_to_midi(tune.text, stem.with_suffix(".mid")))
                    if args.wav and not warned_audio:
                        try:
                            files.append(mx.midi_to_wav(files[-1], stem.with_suffix(".wav")))
                        except mx.SynthesizerNotFound as e:
                            log.warning("%s", e)
                            warned_audio = True
                    if args.png:
                        files.append(mx.piano_roll(tune.text, stem.with_suffix(".png")))
                except (mx.AbcParseError, RuntimeError) as e:
                    record["skipped"] = f"export failed: {e}"
            record["files"] = [str(f) for f in files]
        if args.json:
            print(json.dumps(record))
        elif out:
            print(_summary_line(tune, report, record))
        else:
            sys.stdout.write(tune.text + "\n\n")
            if report is not None:
                print("% " + _summary_line(tune, report, record), file=sys.stderr)
    return 0


def _summary_line(tune: GeneratedTune, report, record: dict[str, Any]) -> str:
    title = (report.title if report else None) or "?"
    parts = [f"X:{tune.number}", f"{title!r}", f"M:{report.meter}" if report else ""]
    if report is not None:
        parts.append("parses" if report.parses else f"does not parse ({report.errors[0]})")
        b = report.bars
        parts.append(
            f"bars {b.full_bars} full, {'consistent' if b.consistent else 'inconsistent'} "
            "with the meter"
        )
    if tune.ended == "max_chars":
        parts.append("cut off at --max-chars")
    if record.get("skipped"):
        parts.append(record["skipped"])
    if record.get("files"):
        parts.append("→ " + " ".join(Path(f).name for f in record["files"]))
    return "  ".join(p for p in parts if p)
