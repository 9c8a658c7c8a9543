"""Verbs of the other tasks: ``classify``, ``tag``, ``forecast``, ``caption`` and ``translate``.

Each loads a run of its own task (or fails with a usage error naming the run), runs the task's
inference over the inputs and prints one result per input (JSON with ``--json``).
"""

from __future__ import annotations

import argparse
import json

from rnnkit.cli.common import (
    ENSEMBLE_HELP,
    UsageError,
    add_run_options,
    load_ensemble,
    load_run_as,
    print_results,
    read_inputs,
)


def cmd_forecast(args: argparse.Namespace) -> int:
    from rnnkit.tasks.forecaster import Forecaster, forecast_report, format_report

    model = load_run_as(args, Forecaster, "forecast")
    report = forecast_report(
        model,
        data=args.data,
        horizon=args.horizon,
        origin=args.origin,
        series=args.series,
        level=args.level,
        samples=args.samples,
        seed=args.seed,
        plot=args.plot,
        evaluate=args.evaluate,
    )
    print(json.dumps(report) if args.json else format_report(report))
    return 0


def cmd_classify(args: argparse.Namespace) -> int:
    from rnnkit.tasks.classifier import Classifier, format_prediction

    model = load_run_as(args, Classifier, "classify")
    results = model.predict(read_inputs(args), ensemble=load_ensemble(args, model))
    print_results(results, args.json, format_prediction)
    return 0


def cmd_tag(args: argparse.Namespace) -> int:
    from rnnkit.tasks.tagger import Tagger

    model = load_run_as(args, Tagger, "tag")
    print_results(model.tag(read_inputs(args)), args.json, model.format_tagged)
    return 0


def _check_beam(args: argparse.Namespace) -> None:
    if args.beam < 1:
        raise UsageError("--beam must be >= 1")


def cmd_caption(args: argparse.Namespace) -> int:
    from rnnkit.tasks.captioner import Captioner, format_caption

    _check_beam(args)
    model = load_run_as(args, Captioner, "caption")
    results = model.caption(
        args.images, beam_size=args.beam, max_len=args.max_len, attention_png=args.attention_png
    )
    print_results(results, args.json, format_caption)
    return 0


def cmd_translate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rnnkit.tasks.seq2seq import Seq2Seq, format_translation

    _check_beam(args)
    if args.max_len is not None and args.max_len < 1:
        raise UsageError("--max-len must be >= 1")
    model = load_run_as(args, Seq2Seq, "translate")
    texts = read_inputs(args)
    results = model.translate(
        texts,
        beam_size=args.beam,
        max_len=args.max_len,
        length_penalty=args.length_penalty,
        attention=bool(args.attention_png),
    )
    for i, r in enumerate(results):
        if args.attention_png:
            png = Path(args.attention_png)
            if len(results) > 1:  # one picture per input: a.png -> a-1.png, a-2.png, ...
                png = png.with_name(f"{png.stem}-{i + 1}{png.suffix}")
            model.plot_attention(r, png)
            r["attention_png"] = str(png)
            r.pop("attention")
        print(json.dumps(r, ensure_ascii=False) if args.json else format_translation(r))
    return 0


def _text_inputs(p: argparse.ArgumentParser, metavar: str, help: str, file_help: str) -> None:
    p.add_argument("text", nargs="*", metavar=metavar, help=help)
    p.add_argument("--file", help=file_help)


def register(verbs) -> None:
    """Add ``classify``, ``tag``, ``forecast``, ``caption`` and ``translate`` to ``verbs``."""
    k = verbs.add_parser("classify", help="class probabilities of texts (or rows of numbers)")
    add_run_options(k)
    _text_inputs(k, "TEXT", "inputs to classify", "classify every non-empty line of this file")
    k.add_argument("--ensemble", nargs="+", metavar="RUN", help=ENSEMBLE_HELP)
    k.set_defaults(func=cmd_classify)

    t = verbs.add_parser("tag", help="tag every token of whitespace-tokenised sentences")
    add_run_options(t)
    _text_inputs(
        t, "SENTENCE", "sentences, tokens split by spaces", "tag every non-empty line of this file"
    )
    t.set_defaults(func=cmd_tag)

    f = verbs.add_parser("forecast", help="forecast a numeric series with a forecast run")
    add_run_options(f)
    f.add_argument(
        "--data", help="CSV/TSV file with the run's columns, or 'ball' (default: the run's data)"
    )
    f.add_argument("--horizon", type=int, default=None, help="steps ahead (default: the run's)")
    f.add_argument(
        "--origin", help="forecast after this row number or date (default: the last row)"
    )
    f.add_argument("--series", type=int, default=0, help="ball: which test trajectory")
    f.add_argument("--level", type=float, default=0.8, help="central interval (default 0.8)")
    f.add_argument("--samples", type=int, default=200, help="Monte-Carlo paths for intervals")
    f.add_argument("--seed", type=int, default=0, help="seed of the sample paths")
    f.add_argument("--plot", metavar="PNG", help="draw history, forecast, interval and truth")
    f.add_argument(
        "--evaluate", action="store_true", help="also compare with the baselines on the test part"
    )
    f.set_defaults(func=cmd_forecast)

    cap = verbs.add_parser("caption", help="describe images with a caption run")
    add_run_options(cap)
    cap.add_argument(
        "images", nargs="+", metavar="IMAGE", help="image files, or ARCHIVE.tar:MEMBER names"
    )
    cap.add_argument("--beam", type=int, default=1, help="beam size (default 1: greedy)")
    cap.add_argument("--max-len", type=int, default=None, help="longest caption in words")
    cap.add_argument(
        "--attention-png",
        metavar="PNG",
        help="attention runs: draw the image with each word's attention map here",
    )
    cap.set_defaults(func=cmd_caption)

    tr = verbs.add_parser("translate", help="translate sentences with a translate run")
    add_run_options(tr)
    _text_inputs(
        tr, "SENTENCE", "sentences to translate", "translate every non-empty line of this file"
    )
    tr.add_argument("--beam", type=int, default=5, help="beam size (default 5; 1 = greedy)")
    tr.add_argument(
        "--max-len", type=int, default=None, help="longest output in words (default 2·S + 10)"
    )
    tr.add_argument(
        "--length-penalty",
        type=float,
        default=1.0,
        help="beam score = log p / length^this (default 1.0; 0 = raw log-probability)",
    )
    tr.add_argument(
        "--attention-png", metavar="PNG", help="attention runs: draw the attention matrix here"
    )
    tr.set_defaults(func=cmd_translate)
