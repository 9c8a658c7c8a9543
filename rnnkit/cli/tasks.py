"""Verbs of the other tasks: ``classify``, ``tag``, ``forecast``, ``caption`` and ``translate``.

Each loads a run of its own task (or fails with a usage error naming the run), runs the task's
inference over the inputs and prints one result per input (JSON with ``--json``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rnnkit.cli.common import (
    ENSEMBLE_HELP,
    add_run_options,
    load_ensemble,
    load_run_as,
    make_request,
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
    from rnnkit.inference import ClassifyRequest
    from rnnkit.tasks.classifier import Classifier, format_prediction

    model = load_run_as(args, Classifier, "classify")
    texts, ensemble = read_inputs(args), load_ensemble(args, model)
    if ensemble:  # probabilities averaged over several runs: not one model's answer
        results = model.predict(texts, ensemble=ensemble)
    else:
        results = model.infer(ClassifyRequest(texts)).lines()
    print_results(results, args.json, format_prediction)
    return 0


def cmd_tag(args: argparse.Namespace) -> int:
    from rnnkit.inference import TagRequest
    from rnnkit.tasks.tagger import Tagger

    model = load_run_as(args, Tagger, "tag")
    result = model.infer(TagRequest(read_inputs(args)))
    print_results(result.lines(), args.json, model.format_tagged)
    return 0


def _draw_attention(model, results: list[dict], path: str | None, number_first: bool) -> None:
    """With ``--attention-png``: one picture per result (``model.plot_attention``), its path
    recorded in the result instead of the weights. Several results are numbered ``a-2.png``,
    ``a-3.png`` … after ``a.png``, or from ``a-1.png`` on with ``number_first``."""
    for i, r in enumerate(results if path else ()):
        png = Path(path)
        if i or (number_first and len(results) > 1):
            png = png.with_name(f"{png.stem}-{i + 1}{png.suffix}")
        model.plot_attention(r, png)
        r["attention_png"] = str(png)
        r.pop("attention")


def cmd_caption(args: argparse.Namespace) -> int:
    from rnnkit.inference import CaptionRequest
    from rnnkit.tasks.captioner import Captioner, format_caption

    model = load_run_as(args, Captioner, "caption")
    fields = {"beam_size": args.beam, "max_len": args.max_len}
    request = make_request(
        CaptionRequest, FLAGS, images=args.images, **fields, attention=bool(args.attention_png)
    )
    results = model.infer(request).lines()
    _draw_attention(model, results, args.attention_png, number_first=False)
    print_results(results, args.json, format_caption)
    return 0


def cmd_translate(args: argparse.Namespace) -> int:
    from rnnkit.inference import TranslateRequest
    from rnnkit.tasks.seq2seq import Seq2Seq, format_translation

    model = load_run_as(args, Seq2Seq, "translate")
    request = make_request(
        TranslateRequest,
        FLAGS,
        texts=read_inputs(args),
        beam_size=args.beam,
        max_len=args.max_len,
        length_penalty=args.length_penalty,
        attention=bool(args.attention_png),
    )
    results = model.infer(request).lines()
    _draw_attention(model, results, args.attention_png, number_first=True)
    for r in results:
        print(json.dumps(r, ensure_ascii=False) if args.json else format_translation(r))
    return 0


#: request field → the flag that sets it (for usage errors)
FLAGS = {"beam_size": "--beam", "max_len": "--max-len"}


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
