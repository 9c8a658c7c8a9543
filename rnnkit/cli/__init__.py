"""The ``rnnkit`` command: a thin argparse front over the library.

Verbs: ``train <task>``, ``generate``, ``score``, ``complete``, ``evaluate``, ``forecast``,
``classify``, ``tag``, ``caption``, ``translate``, ``diagnose``, ``bench``, ``runs``, ``plot``, ``export``.
Settings resolve as defaults → ``--config FILE`` (TOML) → flags; the resolved config is printed
and saved in the run.
Every inference verb takes ``--json`` and then prints one JSON object per input.

This package owns the parser (:func:`build_parser`), the entry point (:func:`main`) and the
mapping of errors to exit codes: 0 success, 2 bad input or usage (one line on stderr, no
traceback), 1 anything else (training stopped on a non-finite loss, or an internal error),
130 interrupted. The verbs live one family per module (``train``, ``lm``, ``tasks``,
``diagnose``, ``runs``), their shared options and helpers in :mod:`rnnkit.cli.common`.

Adding a verb: write ``rnnkit/cli/<name>.py`` with a module docstring, its ``cmd_<verb>(args) ->
int`` functions and one ``register(verbs)`` that adds its sub-parsers to ``verbs`` (an
``argparse`` sub-parsers object) and points each at its command with ``set_defaults(func=...)``;
then add ``"<name>"`` to :data:`VERB_MODULES` where its verbs should appear in ``--help``.
Raise :class:`UsageError` (or ``ValueError``) for bad input: :func:`main` turns it into one line
on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from rnnkit.cli.common import UsageError

__all__ = ["VERB_MODULES", "UsageError", "build_parser", "main"]

#: the modules of ``rnnkit.cli`` whose ``register(verbs)`` adds verbs, in ``--help`` order
VERB_MODULES = ("train", "prepare", "lm", "tasks", "diagnose", "runs", "export", "serve")


def build_parser() -> argparse.ArgumentParser:
    """The ``rnnkit`` parser: global options, then every verb module's sub-parsers."""
    from rnnkit.version import __version__

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
    for name in VERB_MODULES:
        importlib.import_module(f"rnnkit.cli.{name}").register(verbs)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(logging.WARNING if args.quiet else logging.INFO)
    from rnnkit.train import TrainingError

    try:
        return args.func(args) or 0
    except (UsageError, ValueError, FileNotFoundError) as e:  # DataError, CheckpointError too
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
