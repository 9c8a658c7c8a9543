"""The torch-free rnnkit code the runner is built on, so that it tokenizes, reads entities and
samples text exactly as rnnkit does: the inference contract (:mod:`rnnkit.inference`) and
:mod:`rnnkit.portable` (word tokens, BIO spans, the text-sampling loop).

Inside rnnkit these are rnnkit's own modules. An export folder has no rnnkit: there the exporter
has copied ``inference.py`` beside ``runner.py`` and the portable modules into this package, and
they are read from those copies.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def _contract_beside():
    """The copy ``inference.py`` written beside ``runner.py`` in an export folder (registered
    as ``rnnkit_inference``); None when it is not there."""
    if "rnnkit_inference" in sys.modules:
        return sys.modules["rnnkit_inference"]
    beside = Path(__file__).parent.parent / "inference.py"
    if not beside.exists():
        return None
    spec = importlib.util.spec_from_file_location("rnnkit_inference", beside)
    module = importlib.util.module_from_spec(spec)
    sys.modules["rnnkit_inference"] = module
    spec.loader.exec_module(module)
    return module


if __package__ == "rnnkit.export.onnx_runner":
    from rnnkit import inference as contract
    from rnnkit.portable.bio import bio_spans
    from rnnkit.portable.text_sampling import TextSampling, score_record
    from rnnkit.portable.words import detokenize, tokenize
else:  # an export folder: the copies of rnnkit/portable/*.py in this package
    from .bio import bio_spans
    from .text_sampling import TextSampling, score_record
    from .words import detokenize, tokenize

    contract = _contract_beside()

__all__ = ["TextSampling", "bio_spans", "contract", "detokenize", "score_record", "tokenize"]
