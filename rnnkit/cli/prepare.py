"""The ``rnnkit prepare`` verb: ``prepare lm INPUT... --out DIR`` tokenizes a corpus into a
prepared folder; ``prepare --verify DIR`` checks one against its ``meta.json``.

A thin front over :mod:`rnnkit.data.prepared`; :func:`register` adds the verb to the parser.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

__all__ = ["register", "cmd_prepare"]


def cmd_prepare(args: argparse.Namespace) -> int:
    from rnnkit.data.prepared import prepare_lm, verify
    from rnnkit.runtime import retain_freed_memory

    retain_freed_memory(256 << 20)  # reuse each chunk's freed buffers (see rnnkit.runtime)

    if args.verify:
        if args.kind or args.inputs:
            raise ValueError("--verify DIR takes no other arguments")
        meta = verify(args.verify)
        summary = {"verified": args.verify, **_summary(meta)}
        print(json.dumps(summary) if args.json else f"{args.verify}: ok ({_line(meta)})")
        return 0
    if args.kind != "lm" or not args.inputs:
        raise ValueError("usage: rnnkit prepare lm INPUT... --out DIR (or --verify DIR)")
    if not args.out:
        raise ValueError("--out DIR is required")
    if args.valid and args.valid_fraction is not None:
        raise ValueError("give --valid FILE or --valid-fraction F, not both")
    start = time.monotonic()
    meta = prepare_lm(
        args.inputs,
        args.out,
        level=args.level,
        vocab_size=args.vocab_size,
        valid=args.valid,
        valid_fraction=0.1 if args.valid_fraction is None else args.valid_fraction,
        encoding=args.encoding,
        min_freq=args.min_freq,
        dtype=args.dtype,
        progress=not args.no_progress,
        **({} if args.bpe_sample_mb is None else {"bpe_sample_mb": args.bpe_sample_mb}),
    )
    seconds = time.monotonic() - start
    size = sum(s["bytes"] for s in meta["sources"] + meta["valid_sources"])
    summary = {
        "out": args.out,
        **_summary(meta),
        "seconds": seconds,
        "mb_per_s": size / 1e6 / seconds,
    }
    print(json.dumps(summary) if args.json else f"{args.out}: {_line(meta)}", file=sys.stdout)
    return 0


def _summary(meta) -> dict:
    s = meta["splits"]
    return {
        "level": meta["level"],
        "vocab_size": meta["vocab_size"],
        "dtype": meta["dtype"],
        "train_tokens": s["train"]["tokens"],
        "valid_tokens": s["valid"]["tokens"],
        "sources": len(meta["sources"]),
    }


def _line(meta) -> str:
    s = meta["splits"]
    return (
        f"{s['train']['tokens']:,} train + {s['valid']['tokens']:,} valid {meta['level']} tokens, "
        f"vocabulary {meta['vocab_size']:,}, {meta['dtype']}"
    )


def register(verbs) -> None:
    """Add ``prepare`` to the CLI's sub-parsers."""
    p = verbs.add_parser(
        "prepare",
        help="tokenize a corpus once into memory-mappable id files (rnnkit train lm --data DIR)",
        description="rnnkit prepare lm INPUT... --out DIR | rnnkit prepare --verify DIR",
    )
    p.add_argument("kind", nargs="?", choices=("lm",), help="what to prepare: lm")
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="files, folders or globs (.gz ok)")
    p.add_argument("--out", metavar="DIR", help="the prepared folder to write")
    p.add_argument("--level", default="char", choices=("char", "word", "bpe"), help="tokens")
    p.add_argument(
        "--vocab-size", type=int, default=None, help="bpe: vocabulary to train (8000); word: cap"
    )
    p.add_argument(
        "--bpe-sample-mb",
        type=float,
        default=None,
        help="bpe: train the tokenizer on the first this many MB of the training text (4)",
    )
    p.add_argument("--valid", nargs="+", metavar="FILE", help="validation files")
    p.add_argument(
        "--valid-fraction", type=float, default=None, help="hold out this last share (0.1)"
    )
    p.add_argument("--encoding", default="utf-8", help="text encoding of the inputs")
    p.add_argument("--min-freq", type=int, default=1, help="word: drop rarer words")
    p.add_argument("--dtype", default="auto", choices=("auto", "uint16", "uint32"))
    p.add_argument("--verify", metavar="DIR", help="check a prepared folder's sizes and hashes")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(func=cmd_prepare)
