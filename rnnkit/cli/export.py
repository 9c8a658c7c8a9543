"""The ``export`` verb: ``rnnkit export RUN --format onnx --out DIR``.

Writes the run's graphs, config, vocabularies and the torch-free ``runner.py`` into ``DIR``
(:func:`rnnkit.export.export_run`); the inference verbs then accept ``DIR`` in place of ``RUN``
and run it on onnxruntime.
"""

from __future__ import annotations

import argparse
import json

from rnnkit.cli.common import UsageError, add_tag_option


def cmd_export(args: argparse.Namespace) -> int:
    from rnnkit.export import FORMATS, export_run

    if args.format not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}; got {args.format!r}")
    out = export_run(args.run, args.out, format=args.format, tag=args.tag)
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    summary = {
        "run": str(args.run),
        "out": str(out),
        "task": config["task"],
        "graphs": config["graphs"],
        "fused_operators": config["fused_operators"],
        "opset": config["opset"],
    }
    if args.json:
        print(json.dumps(summary))
    else:
        graphs = ", ".join(config["graphs"].values())
        print(f"{args.run} ({config['task']}) → {out}: {graphs}, config.json, runner.py")
    return 0


def register(verbs) -> None:
    """Add ``export`` to ``verbs``."""
    e = verbs.add_parser(
        "export", help="write a run as ONNX graphs with a torch-free runner (rnnkit[onnx])"
    )
    e.add_argument("run", metavar="RUN", help="run directory written by `rnnkit train`")
    e.add_argument("--format", default="onnx", help="export format (default and only: onnx)")
    e.add_argument("--out", required=True, metavar="DIR", help="folder to write")
    add_tag_option(e)
    e.add_argument("--json", action="store_true", help="print a JSON summary")
    e.set_defaults(func=cmd_export)
