"""Language-model verbs: ``generate``, ``score``, ``complete`` and ``evaluate``.

``generate`` on a music run (or with ``--tunes``) writes whole tunes (:mod:`rnnkit.cli.music`);
``evaluate`` also serves classify and tag runs (their metrics on labelled data).
"""

from __future__ import annotations

import argparse
import json
import sys

from rnnkit.cli.common import (
    ENSEMBLE_HELP,
    SAMPLING_FLAGS,
    add_run_options,
    flag_values,
    load_ensemble,
    load_run,
    make_request,
    print_results,
    read_inputs,
    unknown_policy,
)
from rnnkit.cli.music import add_generate_flags, generate_tunes
from rnnkit.inference import CompleteRequest, EvaluateRequest, GenerateRequest, ScoreRequest
from rnnkit.tasks.music import MusicModel


def cmd_generate(args: argparse.Namespace) -> int:
    model = load_run(args)
    if args.temperature is None:
        args.temperature = getattr(model, "default_temperature", 0.8)
    if isinstance(model, MusicModel) or args.tunes is not None:
        return generate_tunes(model, args)  # whole tunes: ABC, MIDI, WAV (cli/music.py)
    request = make_request(
        GenerateRequest,
        {"max_tokens": "--length"},
        prompt=args.prompt,
        max_tokens=args.length,
        **flag_values(args, *SAMPLING_FLAGS),
        unknown=unknown_policy(args),
    )
    stream = None if args.json else (lambda piece: (sys.stdout.write(piece), sys.stdout.flush()))
    if stream:
        sys.stdout.write(args.prompt)
    result = model.infer(request, on_text=stream)
    if args.json:
        print(json.dumps(result.to_json()))
    else:
        sys.stdout.write("\n")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    model = load_run(args)
    result = model.infer(ScoreRequest(read_inputs(args), unknown=unknown_policy(args)))
    if args.json:
        print_results(result.lines(), True, str)
        return 0
    print(f"{'rank':>4}  {'log p (nats)':>12}  {'nats/tok':>8}  {'bits/tok':>8}  {'ppl':>8}  text")
    for r in sorted(result.lines(), key=lambda r: r["rank"]):
        print(
            f"{r['rank']:>4}  {r['log_prob']:>12.3f}  {r['nats_per_token']:>8.3f}  "
            f"{r['bits_per_token']:>8.3f}  {r['perplexity']:>8.2f}  {r['text']}"
        )
    return 0


def cmd_complete(args: argparse.Namespace) -> int:
    model = load_run(args)
    request = make_request(CompleteRequest, text=args.text, k=args.k, unknown=unknown_policy(args))
    result = model.infer(request)
    if args.json:
        print(json.dumps(result.to_json()))
        return 0
    for r in result.completions:
        print(f"{r['probability']:8.4f}  {r.get('word', '')}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    model = load_run(args)
    ensemble = load_ensemble(args, model)
    if ensemble:  # several classify runs whose probabilities are averaged: not one model's answer
        result = model.evaluate_file(
            args.data, confusion=args.confusion, encoding=args.encoding, ensemble=ensemble
        )
    else:
        request = EvaluateRequest(args.data, args.encoding, args.confusion)
        result = model.infer(request).to_json()
    if args.json:
        print(json.dumps(result))
    elif hasattr(model, "format_evaluation"):  # classification, tagging: labelled data
        print(model.format_evaluation(result))
    else:
        unit = "char" if model.vocab.level == "char" else "token"
        print(
            f"{result['data']}: {result['tokens']:,} {unit}s, loss {result['loss']:.4f} "
            f"nats/{unit}, {result['bits']:.4f} bits/{unit}, "
            f"perplexity {result['perplexity']:.3f}"
        )
    return 0


def _drop_unknown_flag(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--drop-unknown", action="store_true", help=help)


def register(verbs) -> None:
    """Add ``generate``, ``score``, ``complete`` and ``evaluate`` to ``verbs``."""
    g = verbs.add_parser("generate", help="sample text from a language model")
    add_run_options(g)
    g.add_argument("--prompt", default="", help="text to continue (default: a line start)")
    g.add_argument("--length", type=int, default=500, help="tokens to sample (default 500)")
    g.add_argument(
        "--temperature",
        type=float,
        default=None,
        help="0 = greedy (default: the model's own, 0.8 for text, 0.6 for tunes)",
    )
    g.add_argument("--top-k", type=int, default=None, help="sample among the k most likely")
    g.add_argument("--top-p", type=float, default=None, help="nucleus sampling threshold")
    g.add_argument("--seed", type=int, default=None, help="seed for reproducible samples")
    _drop_unknown_flag(g, "drop prompt characters outside the vocabulary")
    add_generate_flags(g)  # music runs: --tunes --out --midi --wav --png --key --meter --title
    g.set_defaults(func=cmd_generate)

    s = verbs.add_parser("score", help="log-probability, bits per token and perplexity of texts")
    add_run_options(s)
    s.add_argument("text", nargs="*", metavar="TEXT", help="texts to score (ranked when several)")
    s.add_argument("--file", help="score every non-empty line of this file")
    _drop_unknown_flag(s, "drop characters outside the vocabulary")
    s.set_defaults(func=cmd_score)

    c = verbs.add_parser("complete", help="most likely completions of the word being typed")
    add_run_options(c)
    c.add_argument("text", metavar="TEXT", help="text typed so far")
    c.add_argument("--k", type=int, default=5, help="number of completions (default 5)")
    _drop_unknown_flag(c, "drop characters outside the vocabulary")
    c.set_defaults(func=cmd_complete)

    e = verbs.add_parser("evaluate", help="loss, bits per token and perplexity on a file")
    add_run_options(e)
    e.add_argument(
        "--data",
        help="text file, read in order with the state carried "
        "(default: the run's validation split)",
    )
    e.add_argument("--encoding", default="utf-8", help="text encoding of --data")
    e.add_argument(
        "--confusion", metavar="PNG", help="classify/tag runs: draw the confusion matrix here"
    )
    e.add_argument("--ensemble", nargs="+", metavar="RUN", help=ENSEMBLE_HELP)
    e.set_defaults(func=cmd_evaluate)
