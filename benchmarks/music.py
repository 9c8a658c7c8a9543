"""Music benchmark: train the default `rnnkit train music` model, write 100 tunes, check them.

Trains the default configuration (the language model's defaults: a 1-layer LSTM of 512 units on
the bundled Irish tunes, tune-level 10% validation split, ≤ 12 minutes) unless `--run` names a
finished run, then samples `--tunes` whole tunes (temperature 0.6, the one the README
recommends for tunes; `--temperature 0.8` is the `rnnkit generate` default) and prints:

* validation bits/char of the checkpoint used (best validation loss);
* the share of tunes that *parse* (rnnkit's ABC lexer finds no error and music21 reads the tune
  without an error or warning, with at least one note), that parse *and* convert to MIDI, whose
  bar structure is consistent with their meter (`rnnkit.data.abc.check_bars`: every bar lasts
  exactly the meter, except shorter ones at section edges — pickups, bars before/after repeats,
  double bars and numbered endings, the first and last bar — and at least 2 full bars), that the
  model ended itself (`<eos>`), and that abc2midi reads without an error (when installed);
* the same bar check on the bundled training tunes, as the reference, and how much of the
  generated music is copied: tunes whose whole body (the lines after ``K:``) is a bundled tune's,
  and the share of body lines (10 characters or more) found verbatim in the bundled tunes;
* the WAV of the first tune that parses, when a synthesizer is installed.

    python benchmarks/music.py                       # train (≤ 12 min) then evaluate
    python benchmarks/music.py --run runs/music      # evaluate an existing run
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch

from rnnkit import music_export as mx
from rnnkit.api import load
from rnnkit.checkpoint import RunDir
from rnnkit.config import from_dict, to_dict
from rnnkit.data.abc import body_and_header, check_bars
from rnnkit.data.readers import IRISH_TUNES, bundled_path
from rnnkit.tasks.language_model import LanguageModelConfig
from rnnkit.tasks.music import TASK, MusicData, read_tunes
from rnnkit.train import TrainConfig, fit, seed_everything


def _body(text: str) -> str:
    """The music of a tune: its lines after the header."""
    return "\n".join(body_and_header(text)[1]).strip()


def train(out: Path, minutes: float, threads: int) -> dict:
    train_cfg = from_dict(
        TrainConfig, {**TASK.defaults["train"], "minutes": minutes, "progress": False}
    )
    model_cfg = from_dict(LanguageModelConfig, TASK.defaults["model"])
    configs = {"model": model_cfg, "data": MusicData(), "train": train_cfg}
    seed_everything(train_cfg.seed)
    model, task = TASK.build(configs, train_cfg, torch.device("cpu"))
    run = RunDir.create(out, exist_ok=True)
    model.vocab.save(run.vocab_path)
    run.save_config({"task": TASK.name, **{k: to_dict(v) for k, v in configs.items()}})
    n_params = sum(p.numel() for p in model.parameters())
    print(f"training {n_params:,} parameters for ≤ {minutes} min on {threads} thread(s) → {out}")
    start = time.monotonic()
    summary = fit(model, task, train_cfg, run)
    rows = [r for r in run.read_metrics() if r["kind"] == "train" and r["step"] > 1]
    rate = statistics.median(r["tokens_per_s"] for r in rows) if rows else float("nan")
    print(
        f"trained {summary['steps']} steps ({summary['steps'] / task.batches_per_epoch():.1f} "
        f"epochs) in {time.monotonic() - start:.0f} s, median {rate:,.0f} chars/s, "
        f"stopped by {summary['stop_reason']}"
    )
    return summary


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--run", help="evaluate this finished music run instead of training one")
    p.add_argument("--out", help="run directory for training (default: a temporary one)")
    p.add_argument("--minutes", type=float, default=12.0, help="training budget (default 12)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--tunes", type=int, default=100, help="tunes to generate (default 100)")
    p.add_argument(
        "--temperature", type=float, default=0.6, help="sampling temperature (default 0.6)"
    )
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--samples", help="write the generated tunes and their report here (a dir)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    if args.run:
        run_dir = Path(args.run)
    else:
        run_dir = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="music-"))
        train(run_dir, args.minutes, args.threads)
    evals = [r for r in RunDir(run_dir).read_metrics() if r["kind"] == "eval"]
    best = min(evals, key=lambda r: r["val_loss"])
    model = load(run_dir, tag="best")

    start = time.monotonic()
    tunes = model.generate_tunes(args.tunes, seed=args.seed, temperature=args.temperature)
    gen_s = time.monotonic() - start
    start = time.monotonic()
    reports = [mx.validate_tune(t.text) for t in tunes]
    check_s = time.monotonic() - start

    n = len(tunes)

    def share(flags) -> str:
        k = sum(bool(f) for f in flags)
        return f"{k}/{n} = {100 * k / n:.0f}%"

    print(f"\nrun: {run_dir}  (best checkpoint: step {best['step']})")
    print(f"validation: {best['val_loss']:.4f} nats/char = {best['val_bits']:.4f} bits/char")
    print(
        f"generated {n} tunes in {gen_s:.0f} s (temperature {args.temperature}, seed "
        f"{args.seed}), checked in {check_s:.0f} s; mean length "
        f"{statistics.mean(len(t.text) for t in tunes):.0f} characters"
    )
    print(f"  ended by the model (<eos>)          {share(t.ended == 'eos' for t in tunes)}")
    print(f"  parse (rnnkit lexer + music21)      {share(r.parses for r in reports)}")
    print(f"  parse and convert to MIDI           {share(r.parses and r.midi for r in reports)}")
    print(f"  bar structure consistent with meter {share(r.meter_consistent for r in reports)}")
    if all(r.abc2midi is not None for r in reports):
        print(f"  abc2midi reports no error           {share(not r.abc2midi for r in reports)}")
    meters = Counter(r.meter for r in reports)
    print("  meters: " + ", ".join(f"{m} ×{c}" for m, c in meters.most_common()))
    errors = Counter(e.split(":")[0] if e.startswith("music21") else "lexer" for r in reports
                     for e in r.errors[:1])  # fmt: skip
    if errors:
        print("  first error of the tunes that do not parse: " + ", ".join(
            f"{k} ×{v}" for k, v in errors.most_common()))  # fmt: skip
    bundled = read_tunes(bundled_path(IRISH_TUNES))
    ok = sum(check_bars(t.text).consistent for t in bundled)
    print(
        f"reference: {ok}/{len(bundled)} = {100 * ok / len(bundled):.1f}% of the bundled tunes "
        "pass the same bar check"
    )
    known_bodies = {_body(t.text) for t in bundled}
    known_lines = {ln for t in bundled for ln in _body(t.text).split("\n")}
    lines = [ln for t in tunes for ln in _body(t.text).split("\n") if len(ln) >= 10]
    print(
        f"copying: {sum(_body(t.text) in known_bodies for t in tunes)}/{n} tunes repeat a bundled "
        f"tune's body; {sum(ln in known_lines for ln in lines)}/{len(lines)} generated lines are "
        "verbatim lines of the bundled tunes"
    )

    out = Path(args.samples) if args.samples else run_dir / "samples"
    out.mkdir(parents=True, exist_ok=True)
    (out / "tunes.abc").write_text("\n\n".join(t.text for t in tunes) + "\n", encoding="utf-8")
    with open(out / "report.jsonl", "w", encoding="utf-8") as f:
        for t, r in zip(tunes, reports):
            f.write(json.dumps({"number": t.number, "ended": t.ended, **r.as_dict()}) + "\n")
    first = next((t for t, r in zip(tunes, reports) if r.parses and r.meter_consistent), None)
    if first is None:
        print("no tune parses: no WAV")
    elif mx.find_synthesizer() is None:
        print(mx.INSTALL_AUDIO)
    else:
        midi = mx.abc_to_midi(first.text, out / f"tune_{first.number:03d}.mid")
        wav = mx.midi_to_wav(midi, midi.with_suffix(".wav"))
        mx.piano_roll(first.text, midi.with_suffix(".png"))
        print(f"WAV of tune {first.number} ({mx.find_synthesizer()}): {wav}")
    print(f"tunes and per-tune report: {out}")


if __name__ == "__main__":
    main()
