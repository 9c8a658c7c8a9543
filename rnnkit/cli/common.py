"""What the verbs share: the usage error, the options of a run, loading a run, reading inputs.

Every inference verb takes ``RUN --tag --device --json`` (:func:`add_run_options`), loads the
run with :func:`load_run` (or :func:`load_run_as`, which also checks the run's task), reads its
texts with :func:`read_inputs` and prints one result per input with :func:`print_results`.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterable
from typing import Any

__all__ = [
    "ENSEMBLE_HELP",
    "SAMPLING_FLAGS",
    "UsageError",
    "add_run_options",
    "add_tag_option",
    "flag_values",
    "load_ensemble",
    "load_run",
    "load_run_as",
    "print_results",
    "read_inputs",
    "make_request",
    "unknown_policy",
]


class UsageError(Exception):
    """Bad command-line usage: printed as one line, exit status 2."""


ENSEMBLE_HELP = (
    "classify runs: more runs (same classes) whose class probabilities are averaged with RUN's"
)


#: the sampling flags of ``generate`` (text and tunes), named as the requests' fields
SAMPLING_FLAGS = ("temperature", "top_k", "top_p", "seed")

TAG_HELP = "which weights: best validation loss (default) or the last checkpoint"


def add_tag_option(p: argparse.ArgumentParser, help: str = TAG_HELP) -> None:
    """``--tag best|last``: which of a run's weights to load (``best.safetensors`` by default)."""
    p.add_argument("--tag", default="best", choices=("best", "last"), help=help)


def add_run_options(p: argparse.ArgumentParser) -> None:
    """``RUN``, ``--tag``, ``--device`` and ``--json``: the options of every inference verb."""
    p.add_argument("run", metavar="RUN", help="run directory written by `rnnkit train`")
    add_tag_option(p)
    p.add_argument("--device", default="cpu", help="cpu, cuda, ... (default: cpu)")
    p.add_argument("--json", action="store_true", help="print JSON (one object per input)")


def load_run(args: argparse.Namespace):
    """The model of ``args.run`` (weights ``args.tag``) on ``args.device``, ready for inference;
    for a folder written by ``rnnkit export``, its onnxruntime runner (same inference methods)."""
    from rnnkit.api import load
    from rnnkit.export import is_export_dir, load_exported

    if is_export_dir(args.run):
        return load_exported(args.run)
    return load(args.run, tag=args.tag, device=args.device)


def load_run_as(args: argparse.Namespace, model_type: type, kind: str):
    """:func:`load_run`, or a usage error when the run is not a ``kind`` run (``model_type``)."""
    model = load_run(args)
    from rnnkit.export.runner import Exported

    if isinstance(model, Exported) and model.task == kind:
        return model  # an exported folder of this task: its runner
    if not isinstance(model, model_type):
        raise UsageError(f"{args.run} is not a {kind} run")
    return model


def load_ensemble(args: argparse.Namespace, model) -> list:
    """The classify runs of ``--ensemble``, loaded like the main run."""
    from rnnkit.api import load
    from rnnkit.tasks.classifier import Classifier

    runs = getattr(args, "ensemble", None) or []
    if runs and not isinstance(model, Classifier):
        raise UsageError(f"--ensemble averages classify runs; {args.run} is not one")
    return [load(run, tag=args.tag, device=args.device) for run in runs]


def make_request(kind: type, flags: dict[str, str] | None = None, **fields):
    """The inference request ``kind(**fields)``. A field the contract refuses is a usage error
    that names the flag it came from (``flags``: field → flag, default ``--field-name``)."""
    try:
        return kind(**fields)
    except ValueError as e:
        message = str(e)
        for name in fields:
            prefix = f"{kind.__name__}.{name}:"
            if message.startswith(prefix):
                flag = (flags or {}).get(name, "--" + name.replace("_", "-"))
                message = flag + message[len(prefix) - 1 :]
        raise UsageError(message) from None


def flag_values(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    """``{name: args.<name>}`` for each name: the flags that fill the fields (or keyword
    arguments) of the same names."""
    return {name: getattr(args, name) for name in names}


def unknown_policy(args: argparse.Namespace) -> str:
    """What to do with input outside the vocabulary: ``drop`` (``--drop-unknown``) or ``error``."""
    return "drop" if getattr(args, "drop_unknown", False) else "error"


def read_inputs(args: argparse.Namespace) -> list[str]:
    """The TEXT arguments, then every non-empty line of ``--file``; a usage error if none."""
    from rnnkit.data.readers import read_text

    texts = list(args.text or [])
    if args.file:
        texts += [line for line in read_text(args.file).splitlines() if line.strip()]
    if not texts:
        raise UsageError("give one or more TEXT arguments or --file FILE")
    return texts


def print_results(
    results: Iterable[dict], as_json: bool, format_text: Callable[[dict], str]
) -> None:
    """One line (or block) per result: JSON with ``--json``, else ``format_text(result)``."""
    for r in results:
        print(json.dumps(r) if as_json else format_text(r))
