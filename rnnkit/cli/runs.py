"""``rnnkit runs`` and ``rnnkit plot``: the commands over :mod:`rnnkit.runs`.

``runs [DIR ...]`` prints a table of the run folders found at or below each DIR (default
``runs``): task, cell, size, parameters, steps, training time, the best validation figure and
its metric, the path; ``--sort COL`` (``--reverse``) orders it, ``--json`` prints the rows as one
JSON array instead. ``plot RUN [RUN ...] --out PNG`` overlays the runs' loss curves in one image.
"""

from __future__ import annotations

import argparse
import sys

from rnnkit.cli.common import UsageError

__all__ = ["cmd_runs", "cmd_plot", "register"]


def cmd_runs(args: argparse.Namespace) -> int:
    """Print the table (or JSON) of the run folders under ``args.dirs``."""
    from rnnkit.runs import format_table, runs_to_json, scan_runs, sort_runs

    rows = sort_runs(scan_runs(args.dirs or ["runs"]), args.sort, reverse=args.reverse)
    if args.json:
        print(runs_to_json(rows))
    elif rows:
        print(format_table(rows))
    else:
        print("no run folders (a folder with a config.json) found", file=sys.stderr)
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    """Overlay the loss curves of ``args.runs`` in ``args.out``."""
    from rnnkit.checkpoint import RunDir
    from rnnkit.runs import plot_runs

    for run in args.runs:
        if not RunDir(run).metrics_path.exists():
            raise UsageError(f"{run}: no metrics.jsonl; is this a run directory?")
    labels = args.labels.split(",") if args.labels else None
    out = plot_runs(args.runs, args.out, x=args.x, labels=labels)
    print(f"wrote {out}", file=sys.stderr)
    return 0


def register(verbs) -> None:
    """Add ``runs`` and ``plot`` to the CLI's sub-parsers ``verbs``."""
    from rnnkit.runs import COLUMNS

    r = verbs.add_parser(
        "runs",
        help="a table of run folders: task, cell, size, steps, time, best validation figure",
        description="List the run folders (folders with a config.json) at or below each DIR.",
        epilog="Example: rnnkit runs runs/ --sort best --json",
    )
    r.add_argument("dirs", nargs="*", metavar="DIR", help="folders to search (default: runs)")
    r.add_argument("--sort", default="path", choices=COLUMNS, help="column to sort by (path)")
    r.add_argument("--reverse", action="store_true", help="sort in descending order")
    r.add_argument("--json", action="store_true", help="print the rows as a JSON array")
    r.set_defaults(func=cmd_runs)

    p = verbs.add_parser(
        "plot",
        help="overlay the loss curves of several runs in one PNG",
        description="Training loss (line) and validation loss (dots) of each run, one colour "
        "per run, against steps or minutes.",
        epilog="Example: rnnkit plot runs/lstm runs/gru --out compare.png",
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories")
    p.add_argument("--out", required=True, metavar="PNG", help="image to write")
    p.add_argument("--x", default="step", choices=("step", "time"), help="x axis (step)")
    p.add_argument("--labels", metavar="A,B,...", help="legend names (default: folder names)")
    p.set_defaults(func=cmd_plot)
