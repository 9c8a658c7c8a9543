"""Language models: embedding → recurrent layer → dropout → linear decoder over the vocabulary.

The model predicts the next token from everything before it: p(x_{t+1} | x_≤t) = softmax(W h_t + b).
Training minimises the per-step cross-entropy with truncated BPTT over a stream batch (the state
is carried across windows and detached at each boundary). Inference:

* :meth:`LanguageModel.generate` samples with temperature / top-k / top-p, carrying the state so
  each new token costs one step however long the text already is;
* :meth:`LanguageModel.score` gives a text's log-probability, nats and bits per token, perplexity;
* :meth:`LanguageModel.complete` finds the k most likely completions of the current word
  (beam search up to the next word boundary) — keyboard autocomplete;
* :meth:`LanguageModel.evaluate_text` reads a whole file in order with the state carried.
"""

from __future__ import annotations

from rnnkit.tasks.common.recurrent import LAYERS
from rnnkit.tasks.language_model.config import (
    LanguageModelConfig,
    LanguageModelData,
    tokenize_text,
)
from rnnkit.tasks.language_model.model import (
    LanguageModel,
    TextModel,
    WindowLanguageModel,
    build_language_model,
)
from rnnkit.tasks.language_model.sampling import sample_next
from rnnkit.tasks.language_model.softmax import AdaptiveSoftmax, adaptive_cutoffs
from rnnkit.tasks.language_model.task import TASK, LanguageModelTraining, read_corpus

__all__ = [
    "adaptive_cutoffs",
    "AdaptiveSoftmax",
    "build_language_model",
    "LanguageModel",
    "LanguageModelConfig",
    "LanguageModelData",
    "LanguageModelTraining",
    "LAYERS",
    "read_corpus",
    "sample_next",
    "TASK",
    "TextModel",
    "tokenize_text",
    "WindowLanguageModel",
]
