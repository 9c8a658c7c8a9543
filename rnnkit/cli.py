"""The ``rnnkit`` command: a thin argparse front over the library.

Verbs: ``train <task>``, ``generate``, ``score``, ``complete``, ``evaluate``, ``forecast``,
``classify``, ``tag``, ``caption``, ``translate``, ``diagnose``, ``bench``. Settings resolve as defaults → ``--config FILE`` (TOML) → flags; the
resolved config is printed and saved in the run.
Every inference verb takes ``--json`` and then prints one JSON object per input.

Exit codes: 0 success, 2 bad input or usage (one line on stderr, no traceback), 1 anything else
(training stopped on a non-finite loss, or an internal error), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

__all__ = ["main", "build_parser"]

log = logging.getLogger("rnnkit")


class UsageError(Exception):
    """Bad command-line usage: printed as one line, exit status 2."""


# ---------------------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------------------
def _train_sections(task) -> dict[str, type]:
    from rnnkit.train import TrainConfig

    return {**task.sections, "train": TrainConfig}


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from rnnkit.checkpoint import RunDir, default_run_dir
    from rnnkit.config import from_dict, resolve, to_dict
    from rnnkit.data.prepared import load_vocabulary
    from rnnkit.distributed import init_from_env
    from rnnkit.tasks import get_task
    from rnnkit.train import TrainConfig, fit, seed_everything, select_device

    task = get_task(args.task)
    sections = _train_sections(task)
    if args.resume:
        run = RunDir(args.resume)
        run.validate()
        if not run.trainer_path.exists():
            raise UsageError(f"{run.trainer_path}: no trainer state to resume from")
        saved = run.load_config()
        if saved.get("task") != task.name:
            raise UsageError(f"{run.path} is a {saved.get('task')!r} run, not {task.name!r}")
        overrides = {k.split(".", 1)[1]: v for k, v in vars(args).items() if k.startswith("train.")}
        train_cfg = from_dict(TrainConfig, {**saved["train"], **overrides})
        other = [k for k in vars(args) if "." in k and not k.startswith("train.")]
        if other:
            raise UsageError(f"--resume keeps the run's model and data; cannot change {other[0]}")
        group, device = init_from_env(select_device(train_cfg.device))
        vocab = load_vocabulary(run.vocab_path) if run.vocab_path.exists() else None
        model, training = task.restore(saved, vocab, device, train_cfg, with_data=True)
        saved["train"] = to_dict(train_cfg)
        if group.is_main:
            run.save_config(saved)
        log.info("resuming %s", run.path)
        resume = True
    else:
        configs = resolve(args, sections, args.config, getattr(task, "defaults", None))
        train_cfg = configs["train"]
        if train_cfg.threads:
            torch.set_num_threads(train_cfg.threads)
        group, device = init_from_env(select_device(train_cfg.device))
        seed_everything(train_cfg.seed)  # the initial weights depend on the seed too
        model, training = task.build(configs, train_cfg, device)
        out = group.broadcast(str(args.out or default_run_dir(task.name)))  # one name for all
        saved = {"task": task.name, **{name: to_dict(cfg) for name, cfg in configs.items()}}
        if group.is_main:
            run = RunDir.create(out, exist_ok=False)
            vocab = getattr(model, "vocab", None)
            if vocab is not None:
                vocab.save(run.vocab_path)
            run.save_config(saved)
        group.barrier()
        run = RunDir(out)
        resume = False
    n_params = sum(p.numel() for p in model.parameters())
    if group.is_main:
        shown = {k: _elide_lists(v) for k, v in saved.items() if k != "rnnkit_version"}
        log.info(json.dumps(shown, indent=2, ensure_ascii=False))
    log.info("run directory: %s | %s parameters | device %s", run.path, f"{n_params:,}", device)
    if group.enabled and group.is_main:
        log.info(
            "global batch %d = %d processes × %d sequences",
            train_cfg.batch_size,
            group.world,
            train_cfg.batch_size // group.world,
        )
    try:
        summary = fit(model, training, train_cfg, run, resume=resume)
    finally:
        group.close()
    if not group.is_main:
        return 0
    last = summary["last"]
    line = (
        f"done: {summary['steps']} steps in {summary['seconds']:.0f} s ({summary['stop_reason']}); "
        f"validation loss {last['loss']:.4f}"
    )
    if "bits" in last:
        line += f" nats/{training.tokens_name} = {last['bits']:.4f} bits"
    print(line + f"; best {summary['best_val_loss']:.4f}; saved in {run.path}", file=sys.stderr)
    return 0


def _elide_lists(value, keep: int = 8):
    """The config as printed: long lists (e.g. vocabularies saved in config.json) shortened."""
    if isinstance(value, dict):
        return {k: _elide_lists(v, keep) for k, v in value.items()}
    if isinstance(value, list) and len(value) > keep:
        return [*value[:keep], f"... {len(value) - keep} more"]
    return value


# ---------------------------------------------------------------------------------------------
# inference verbs
# ---------------------------------------------------------------------------------------------
def _load(args):
    from rnnkit.api import load

    return load(args.run, tag=args.tag, device=args.device)


ENSEMBLE_HELP = (
    "classify runs: more runs (same classes) whose class probabilities are averaged with RUN's"
)


def _ensemble(args, model) -> list:
    """The classify runs of ``--ensemble``, loaded like the main run."""
    from rnnkit.api import load
    from rnnkit.tasks.classifier import Classifier

    runs = getattr(args, "ensemble", None) or []
    if runs and not isinstance(model, Classifier):
        raise UsageError(f"--ensemble averages classify runs; {args.run} is not one")
    return [load(run, tag=args.tag, device=args.device) for run in runs]


def _unknown(args) -> str:
    return "drop" if getattr(args, "drop_unknown", False) else "error"


def cmd_generate(args: argparse.Namespace) -> int:
    model = _load(args)
    from rnnkit.tasks.music import MusicModel, generate_command

    if args.temperature is None:
        args.temperature = getattr(model, "default_temperature", 0.8)
    if isinstance(model, MusicModel) or args.tunes is not None:
        return generate_command(model, args)  # whole tunes: ABC, MIDI, WAV (tasks/music.py)
    if args.length < 0:
        raise UsageError("--length must be >= 0")
    stream = None if args.json else (lambda piece: (sys.stdout.write(piece), sys.stdout.flush()))
    if stream:
        sys.stdout.write(args.prompt)
    text = model.generate(
        args.prompt,
        args.length,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
        on_text=stream,
        unknown=_unknown(args),
    )
    if args.json:
        print(
            json.dumps(
                {
                    "prompt": args.prompt,
                    "text": text,
                    "temperature": args.temperature,
                    "top_k": args.top_k,
                    "top_p": args.top_p,
                    "seed": args.seed,
                }
            )
        )
    else:
        sys.stdout.write("\n")
    return 0


def _texts(args) -> list[str]:
    from rnnkit.data.readers import read_text

    texts = list(args.text or [])
    if args.file:
        texts += [line for line in read_text(args.file).splitlines() if line.strip()]
    if not texts:
        raise UsageError("give one or more TEXT arguments or --file FILE")
    return texts


def cmd_score(args: argparse.Namespace) -> int:
    model = _load(args)
    results = [model.score(t, unknown=_unknown(args)) for t in _texts(args)]
    ranked = sorted(results, key=lambda r: -r["log_prob"])
    for rank, r in enumerate(ranked, 1):
        r["rank"] = rank
    if args.json:
        for r in results:
            print(json.dumps(r))
        return 0
    print(f"{'rank':>4}  {'log p (nats)':>12}  {'nats/tok':>8}  {'bits/tok':>8}  {'ppl':>8}  text")
    for r in ranked:
        print(
            f"{r['rank']:>4}  {r['log_prob']:>12.3f}  {r['nats_per_token']:>8.3f}  "
            f"{r['bits_per_token']:>8.3f}  {r['perplexity']:>8.2f}  {r['text']}"
        )
    return 0


def cmd_complete(args: argparse.Namespace) -> int:
    model = _load(args)
    if args.k < 1:
        raise UsageError("--k must be >= 1")
    if getattr(model.vocab, "level", "char") == "word" and hasattr(model, "next_words"):
        results = model.next_words(args.text, k=args.k)
    else:
        results = model.complete(args.text, k=args.k, unknown=_unknown(args))
    if args.json:
        print(json.dumps({"text": args.text, "completions": results}))
        return 0
    for r in results:
        print(f"{r['probability']:8.4f}  {r.get('word', '')}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from rnnkit.data.readers import read_text

    model = _load(args)
    ensemble = _ensemble(args, model)
    if ensemble:
        result = model.evaluate_file(
            args.data, confusion=args.confusion, encoding=args.encoding, ensemble=ensemble
        )
        print(json.dumps(result) if args.json else model.format_evaluation(result))
        return 0
    if hasattr(model, "evaluate_file"):  # classification, tagging: metrics on labelled data
        result = model.evaluate_file(args.data, confusion=args.confusion, encoding=args.encoding)
        print(json.dumps(result) if args.json else model.format_evaluation(result))
        return 0
    if args.data:
        text, where = read_text(args.data, args.encoding), args.data
        m = model.evaluate_text(text)
    else:
        from rnnkit.checkpoint import RunDir
        from rnnkit.config import from_dict
        from rnnkit.tasks.language_model import LanguageModelData, read_corpus
        from rnnkit.tasks.prepared_lm import open_prepared

        data_cfg = from_dict(LanguageModelData, RunDir(args.run).load_config()["data"])
        prepared = open_prepared(data_cfg, progress=False)
        if prepared is not None:  # the memory-mapped validation ids
            m, where = model.evaluate_ids(prepared.valid), f"validation split of {prepared.path}"
        else:
            _, text, where = read_corpus(data_cfg)
            where = f"validation split of {where}"
            m = model.evaluate_text(text)
    result = {
        "data": str(where),
        "tokens": m["tokens"],
        "loss": m["loss"],
        "bits": m["bits"],
        "perplexity": m["perplexity"],
    }
    if args.json:
        print(json.dumps(result))
    else:
        unit = "char" if model.vocab.level == "char" else "token"
        print(
            f"{where}: {m['tokens']:,} {unit}s, loss {m['loss']:.4f} nats/{unit}, "
            f"{m['bits']:.4f} bits/{unit}, perplexity {m['perplexity']:.3f}"
        )
    return 0


def cmd_forecast(args: argparse.Namespace) -> int:
    from rnnkit.tasks.forecaster import Forecaster, forecast_report, format_report

    model = _load(args)
    if not isinstance(model, Forecaster):
        raise UsageError(f"{args.run} is not a forecast run")
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

    model = _load(args)
    if not isinstance(model, Classifier):
        raise UsageError(f"{args.run} is not a classify run")
    for r in model.predict(_texts(args), ensemble=_ensemble(args, model)):
        print(json.dumps(r) if args.json else format_prediction(r))
    return 0


def cmd_tag(args: argparse.Namespace) -> int:
    from rnnkit.tasks.tagger import Tagger

    model = _load(args)
    if not isinstance(model, Tagger):
        raise UsageError(f"{args.run} is not a tag run")
    for r in model.tag(_texts(args)):
        print(json.dumps(r) if args.json else model.format_tagged(r))
    return 0


def cmd_caption(args: argparse.Namespace) -> int:
    from rnnkit.tasks.captioner import Captioner, format_caption

    if args.beam < 1:
        raise UsageError("--beam must be >= 1")
    model = _load(args)
    if not isinstance(model, Captioner):
        raise UsageError(f"{args.run} is not a caption run")
    results = model.caption(
        args.images, beam_size=args.beam, max_len=args.max_len, attention_png=args.attention_png
    )
    for r in results:
        print(json.dumps(r) if args.json else format_caption(r))
    return 0


def cmd_translate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rnnkit.tasks.seq2seq import Seq2Seq, format_translation

    if args.beam < 1:
        raise UsageError("--beam must be >= 1")
    if args.max_len is not None and args.max_len < 1:
        raise UsageError("--max-len must be >= 1")
    model = _load(args)
    if not isinstance(model, Seq2Seq):
        raise UsageError(f"{args.run} is not a translate run")
    texts = _texts(args)
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


# ---------------------------------------------------------------------------------------------
# parser
# ---------------------------------------------------------------------------------------------
def _run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN", help="run directory written by `rnnkit train`")
    p.add_argument(
        "--tag",
        default="best",
        choices=("best", "last"),
        help="which weights: best validation loss (default) or the last checkpoint",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda, ... (default: cpu)")
    p.add_argument("--json", action="store_true", help="print JSON (one object per input)")


def build_parser() -> argparse.ArgumentParser:
    from rnnkit import __version__
    from rnnkit.config import add_dataclass_flags
    from rnnkit.tasks import TASK_MODULES, get_task

    parser = argparse.ArgumentParser(
        prog="rnnkit",
        description="Recurrent neural networks for sequence modeling.",
        epilog="Example: rnnkit train lm --minutes 5 --out runs/shakespeare && "
        "rnnkit generate runs/shakespeare --prompt 'ROMEO:' --length 300",
    )
    parser.add_argument("--version", action="version", version=f"rnnkit {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")
    verbs.required = True

    train = verbs.add_parser(
        "train",
        help="train a model for a task",
        description="Train a model; defaults ← --config FILE ← flags.",
    )
    tasks = train.add_subparsers(dest="task", metavar="TASK")
    tasks.required = True
    for name in TASK_MODULES:
        task = get_task(name)
        tp = tasks.add_parser(
            name, help=(task.__doc__ or "").strip().splitlines()[0] if task.__doc__ else None
        )
        tp.add_argument(
            "--config", metavar="FILE", help="TOML file with [model]/[data]/[train] settings"
        )
        tp.add_argument("--out", metavar="DIR", help="run directory (default: runs/<task>-<time>)")
        tp.add_argument(
            "--resume", metavar="RUN", help="continue the run in RUN from its last checkpoint"
        )
        for section, cls in _train_sections(task).items():
            add_dataclass_flags(tp, cls, section)
        tp.set_defaults(func=cmd_train)

    g = verbs.add_parser("generate", help="sample text from a language model")
    _run_options(g)
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
    g.add_argument(
        "--drop-unknown", action="store_true", help="drop prompt characters outside the vocabulary"
    )
    from rnnkit.tasks.music import add_generate_flags

    add_generate_flags(g)  # music runs: --tunes --out --midi --wav --png --key --meter --title
    g.set_defaults(func=cmd_generate)

    s = verbs.add_parser("score", help="log-probability, bits per token and perplexity of texts")
    _run_options(s)
    s.add_argument("text", nargs="*", metavar="TEXT", help="texts to score (ranked when several)")
    s.add_argument("--file", help="score every non-empty line of this file")
    s.add_argument(
        "--drop-unknown", action="store_true", help="drop characters outside the vocabulary"
    )
    s.set_defaults(func=cmd_score)

    c = verbs.add_parser("complete", help="most likely completions of the word being typed")
    _run_options(c)
    c.add_argument("text", metavar="TEXT", help="text typed so far")
    c.add_argument("--k", type=int, default=5, help="number of completions (default 5)")
    c.add_argument(
        "--drop-unknown", action="store_true", help="drop characters outside the vocabulary"
    )
    c.set_defaults(func=cmd_complete)

    e = verbs.add_parser("evaluate", help="loss, bits per token and perplexity on a file")
    _run_options(e)
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

    k = verbs.add_parser("classify", help="class probabilities of texts (or rows of numbers)")
    _run_options(k)
    k.add_argument("text", nargs="*", metavar="TEXT", help="inputs to classify")
    k.add_argument("--file", help="classify every non-empty line of this file")
    k.add_argument("--ensemble", nargs="+", metavar="RUN", help=ENSEMBLE_HELP)
    k.set_defaults(func=cmd_classify)

    t = verbs.add_parser("tag", help="tag every token of whitespace-tokenised sentences")
    _run_options(t)
    t.add_argument("text", nargs="*", metavar="SENTENCE", help="sentences, tokens split by spaces")
    t.add_argument("--file", help="tag every non-empty line of this file")
    t.set_defaults(func=cmd_tag)

    f = verbs.add_parser("forecast", help="forecast a numeric series with a forecast run")
    _run_options(f)
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
    _run_options(cap)
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
    _run_options(tr)
    tr.add_argument("text", nargs="*", metavar="SENTENCE", help="sentences to translate")
    tr.add_argument("--file", help="translate every non-empty line of this file")
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

    from rnnkit.diagnostics import add_diagnostic_verbs

    add_diagnostic_verbs(verbs)  # diagnose gradients, bench memory
    from rnnkit.cli_prepare import register as add_prepare_verb

    add_prepare_verb(verbs)  # prepare lm INPUT... --out DIR, prepare --verify DIR
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(logging.WARNING if args.quiet else logging.INFO)
    from rnnkit.train import TrainingError

    try:
        return args.func(args) or 0
    except (UsageError, ValueError) as e:  # DataError and CheckpointError are ValueErrors
        print(f"rnnkit {args.verb}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except FileNotFoundError as e:
        print(f"rnnkit {args.verb}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except TrainingError as e:
        print(f"rnnkit {args.verb}: {_one_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"rnnkit {args.verb}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


def _configure_logging(level: int) -> None:
    """rnnkit's messages go to stderr as plain lines; the CLI owns this one handler."""
    logger = logging.getLogger("rnnkit")
    for h in list(logger.handlers):
        if getattr(h, "_rnnkit_cli", False):
            logger.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler._rnnkit_cli = True
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split("\n")).strip() or type(e).__name__


def _entry() -> None:  # console script
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    _entry()
