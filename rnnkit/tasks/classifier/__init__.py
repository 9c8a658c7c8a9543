"""Many-to-one: read a whole sequence, say one thing about it (sentiment, topic, a digit).

Owns the classification task end to end — config dataclasses, data preparation (text files in
any layout of :mod:`rnnkit.data.tabular`, or rows of numbers read as sequences), the
:class:`Classifier` model, its training task for :func:`rnnkit.train.fit`, inference
(:meth:`Classifier.predict`) and evaluation (:meth:`Classifier.evaluate_file`) — and the
building blocks the tagger shares: :class:`TokenEmbedder` (word embedding + optional
:class:`CharEncoder`), :class:`TokenEncoder`, :func:`collate`, :func:`bucket_batches`.

**Model.** Tokens x_1..x_T (words or characters; or, for numbers, T steps of F values) are
embedded, v_t = [E w_t ; r(w_t)] with r a character-level word vector, read by a uni- or
bidirectional recurrent layer (any cell), y_t = [→h_t ; ←h_t], and pooled over the T *real*
steps (padding is never read):

* ``last``: z = [→h_T ; ←h_1] (each direction's final state);
* ``mean``: z = (1/T) Σ_t y_t;
* ``max``: z_k = max_t y_{t,k};
* ``attention`` (Yang et al. 2016): u_t = tanh(W y_t + b), α = softmax_t(v·u_t), z = Σ_t α_t y_t.

Logits are W_o z + b_o; training minimises the cross-entropy, −log softmax(logits)_y.

**Numbers as sequences.** With ``format="numeric"`` each row of F numbers (e.g. the 64 pixels
of an 8×8 digit) becomes T = F / ``step_size`` steps of ``step_size`` values each, scaled by the
training maximum: ``step_size=1`` is the pixel-by-pixel "sequential MNIST" setting of Le, Jaitly
& Hinton 2015, ``step_size=8`` reads one image row per step.
"""

from __future__ import annotations

from rnnkit.tasks.classifier.config import (
    CHAR_REPRS,
    CHAR_SPECIALS,
    POOLINGS,
    ClassifierConfig,
    ClassifierData,
    LabelledTextData,
    TokenFeatureOptions,
)
from rnnkit.tasks.classifier.data import (
    RawExamples,
    encode_all,
    read_examples,
    read_split,
    resolve_data,
)
from rnnkit.tasks.classifier.encoders import (
    CharEncoder,
    TokenEmbedder,
    TokenEncoder,
    char_vocab,
    load_word_vectors,
    token_features,
)
from rnnkit.tasks.classifier.model import Classifier, format_prediction
from rnnkit.tasks.classifier.pooling import AttentionPooling, pool_sequence
from rnnkit.tasks.classifier.task import (
    TASK,
    ClassificationTraining,
    LabelledDataFlow,
    LabelledTextTask,
)
from rnnkit.tasks.common.recurrent import LAYERS

__all__ = [
    "AttentionPooling",
    "CHAR_REPRS",
    "CHAR_SPECIALS",
    "char_vocab",
    "CharEncoder",
    "ClassificationTraining",
    "Classifier",
    "ClassifierConfig",
    "ClassifierData",
    "encode_all",
    "format_prediction",
    "LabelledTextData",
    "LabelledDataFlow",
    "LabelledTextTask",
    "LAYERS",
    "load_word_vectors",
    "pool_sequence",
    "POOLINGS",
    "RawExamples",
    "read_examples",
    "read_split",
    "resolve_data",
    "TASK",
    "TokenEmbedder",
    "TokenEncoder",
    "TokenFeatureOptions",
    "token_features",
]
