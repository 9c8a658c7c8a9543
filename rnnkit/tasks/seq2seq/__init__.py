"""Encoder–decoder translation, with or without attention (``rnnkit train translate``).

Owns the task end to end: config dataclasses, data preparation (parallel text via
:mod:`rnnkit.data.parallel`, word vocabularies for each side), the :class:`Seq2Seq` model, its
training task for :func:`rnnkit.train.fit`, inference (:meth:`Seq2Seq.translate`, greedy or
beam search from :mod:`rnnkit.decoding`) and evaluation (corpus BLEU with sacrebleu on
detokenised output, overall and by source-length bucket).

**Encoder.** Source words x_1..x_S are embedded and read by a (bi)directional GRU/LSTM over the
padded batch with its lengths: h_s = [→h_s ; ←h_s] (the *memory*, ``(B, S, 2H)``), and the
summary m = [→h_S ; ←h_1] (each direction's final state).

**Decoder** (one GRU/LSTM layer of width D, started at s_0 = tanh(W_m m + b_m)). At step t, with
e_{t−1} the embedding of the previous target word (``<bos>`` first):

* with attention (Bahdanau, Cho & Bengio 2015 — context concatenation, not Luong's input
  feeding): the previous state asks, c_t = Σ_s α_{t,s} h_s with α_t = softmax_s score(s_{t−1},
  h_s) over the real source positions (:mod:`rnnkit.attention`: additive, dot or general);
* ``attention = "none"`` (Cho et al. 2014): c_t = m for every t — the whole sentence squeezed
  into one fixed vector, the bottleneck attention removes;

then s_t = Cell([e_{t−1} ; c_t], s_{t−1}), o_t = tanh(W_o [s_t ; c_t ; e_{t−1}] + b_o) and
p(y_t | y_<t, x) = softmax(W_y o_t + b_y), with W_y tied to the target embedding when
``tie_embeddings`` (o_t then has the embedding width).

**Training** minimises the per-token cross-entropy summed over the real target tokens of a
batch (``<eos>`` included, padding ignored) and divided by their number, with optional label
smoothing: −Σ_t [(1 − ε) log p(y_t) + (ε / V) Σ_v log p(v)] / N_tokens. With teacher forcing
ratio r < 1, each sentence is fed its own previous prediction instead of the reference word
with probability 1 − r at every step (Bengio et al. 2015's scheduled sampling, at a fixed rate).

Efficiency: the key side of the attention (e.g. W_k h_s) is computed once per batch, the
embedding part of the decoder's input projection for all steps in one product, and the output
layer for all steps in one product after the loop; a decoding step is one call of
:meth:`Seq2Seq.step`.

**Text.** Lower-cased by default and split into words and punctuation
(:func:`~rnnkit.data.parallel.tokenize`); outputs are detokenised before BLEU, which sacrebleu
computes against the lower-cased reference sentences as they are in the file.
"""

from __future__ import annotations

from rnnkit.tasks.seq2seq.config import CELLS, LENGTH_BUCKETS, Seq2SeqConfig, Seq2SeqData
from rnnkit.tasks.seq2seq.data import (
    Pair,
    collate_pairs,
    encode_pairs,
    read_split,
    resolve_vocabularies,
)
from rnnkit.tasks.seq2seq.model import Seq2Seq, bleu_by_length, format_translation
from rnnkit.tasks.seq2seq.task import TASK, TranslationTraining

__all__ = [
    "bleu_by_length",
    "CELLS",
    "collate_pairs",
    "encode_pairs",
    "format_translation",
    "LENGTH_BUCKETS",
    "Pair",
    "read_split",
    "resolve_vocabularies",
    "Seq2Seq",
    "Seq2SeqConfig",
    "Seq2SeqData",
    "TASK",
    "TranslationTraining",
]
