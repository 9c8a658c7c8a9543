"""Run an exported rnnkit model with onnxruntime and NumPy only (no torch, no rnnkit).

This file is copied as ``runner.py`` into every export folder and works there as a plain file::

    from runner import load            # or: python runner.py DIR generate --prompt "ROMEO:"
    model = load("DIR")
    model.generate("ROMEO:", length=200, temperature=0.8, top_k=20, seed=1)

It reads ``DIR/config.json`` (written by ``rnnkit export``) and the graphs beside it, and mirrors
rnnkit's inference step for step: language models generate (temperature / top-k / top-p), score
and complete; classifiers classify; taggers tag (Viterbi over the CRF scores in ``crf.json``);
translators decode greedily or with beam search; forecasters forecast. Results are the same
dicts rnnkit's own methods return; ``infer(request)`` answers the typed requests of ``contract``
(the ``inference.py`` beside this file).

The model's modules are the package ``onnx_runner/`` beside this file (in rnnkit:
:mod:`rnnkit.export.onnx_runner`), read from this file's own folder whatever ``sys.path`` holds.
How a seeded sample is drawn (and why it is not torch's draw): :mod:`onnx_runner.sampling`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

PACKAGE = "onnx_runner"


def _load_package_beside() -> None:
    """Import ``onnx_runner/`` of this file's folder as the package ``onnx_runner`` (unless that
    one is imported already), so its modules can be imported by name."""
    folder = Path(__file__).resolve().with_name(PACKAGE)
    loaded = sys.modules.get(PACKAGE)
    if loaded is not None and list(getattr(loaded, "__path__", ())) == [str(folder)]:
        return
    for name in [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]:
        del sys.modules[name]  # another export folder's copy: this folder's code runs its config
    spec = importlib.util.spec_from_file_location(
        PACKAGE, folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    package = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = package
    spec.loader.exec_module(package)


if __package__ == "rnnkit.export":
    from rnnkit.export.onnx_runner.folder import FORMAT, is_export_dir
    from rnnkit.export.onnx_runner.model import ANSWERS, Exported, load
    from rnnkit.export.onnx_runner.sampling import (
        draw,
        filter_logits,
        log_softmax,
        sample_next,
        softmax,
    )
    from rnnkit.export.onnx_runner.search import beam_search, greedy_decode
    from rnnkit.export.onnx_runner.shared import bio_spans, contract, detokenize
    from rnnkit.export.onnx_runner.vocab import Vocab
else:  # an export folder (or this file run as a script)
    _load_package_beside()
    from onnx_runner.folder import FORMAT, is_export_dir
    from onnx_runner.model import ANSWERS, Exported, load
    from onnx_runner.sampling import draw, filter_logits, log_softmax, sample_next, softmax
    from onnx_runner.search import beam_search, greedy_decode
    from onnx_runner.shared import bio_spans, contract, detokenize
    from onnx_runner.vocab import Vocab

__all__ = [
    "ANSWERS",
    "FORMAT",
    "Exported",
    "Vocab",
    "beam_search",
    "bio_spans",
    "contract",
    "detokenize",
    "draw",
    "filter_logits",
    "greedy_decode",
    "is_export_dir",
    "load",
    "log_softmax",
    "main",
    "sample_next",
    "softmax",
]


# ---------------------------------------------------------------------------------------------
# Command line: python runner.py DIR VERB ...
# ---------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="runner.py", description=__doc__.splitlines()[0])
    p.add_argument("dir")
    p.add_argument(
        "verb", choices=["generate", "score", "complete", "classify", "tag", "translate"]
    )
    p.add_argument("inputs", nargs="*", help="texts (score, complete, classify, tag, translate)")
    p.add_argument("--prompt", default="")
    p.add_argument("--length", type=int, default=200)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int)
    p.add_argument("--top-p", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--beam-size", type=int, default=5)
    p.add_argument("--k", type=int, default=5)
    args = p.parse_args(argv)
    try:
        model = load(args.dir)
        if args.verb == "generate":
            text = model.generate(
                args.prompt, args.length, args.temperature, args.top_k, args.top_p, args.seed
            )
            results: list[Any] = [{"prompt": args.prompt, "text": text}]
        elif args.verb == "score":
            results = [model.score(t) for t in args.inputs]
        elif args.verb == "complete":
            results = [{"text": t, "completions": model.complete(t, args.k)} for t in args.inputs]
        elif args.verb == "classify":
            results = model.classify(args.inputs)
        elif args.verb == "tag":
            results = model.tag(args.inputs)
        else:
            results = model.translate(args.inputs, beam_size=args.beam_size)
    except (ValueError, FileNotFoundError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for r in results:
        print(json.dumps(r, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
