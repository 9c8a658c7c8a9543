"""One-to-many: a CNN reads an image, an LSTM writes its description word by word.

Owns the captioning task end to end: config dataclasses, data preparation (images read from a
tar through the content-hash feature cache of :mod:`rnnkit.data.images`, a word vocabulary from
the training captions), the :class:`Captioner` model, its training task for
:func:`rnnkit.train.fit`, greedy and beam decoding (through :mod:`rnnkit.decoding`), corpus BLEU
against all references, and the attention overlay picture.

**Encoder.** An image becomes a grid a_1..a_L (L = 7·7 = 49 positions, D features each) from a
frozen ImageNet EfficientNet-Lite0 (D = 1280, features cached once per image) or a small CNN
trained with the decoder (:mod:`rnnkit.image_encoders`). Keys k_i = W_a a_i (width F) are what
attention reads; the mean ā = (1/L) Σ_i a_i, layer-normalised (so the start does not depend on
the encoder's feature scale, and tanh does not saturate on all-positive features), starts the
LSTM:

    h_0 = tanh(W_h LN(ā) + b_h),   c_0 = tanh(W_c LN(ā) + b_c)

**Decoder, ``attention="none"``** (Show and Tell; Vinyals et al. 2015, with the image in the
initial state rather than as a first input): an LSTM over the embedded previous words,
(h_t, c_t) = LSTM(E y_{t−1}, (h_{t−1}, c_{t−1})); the whole caption runs through rnnkit's fused
:class:`~rnnkit.layers.LSTM`.

**Decoder, ``attention="additive"``** (Show, Attend and Tell, soft attention; Xu et al. 2015): at
every step the previous state looks at the grid,

    e_ti = vᵀ tanh(W_q h_{t−1} + W_k k_i + b),   α_t = softmax_i(e_ti),   z_t = β_t Σ_i α_ti k_i
    β_t  = σ(W_β h_{t−1} + b_β)   (the gating scalar per feature, ``gate=True``)
    (h_t, c_t) = LSTM([E y_{t−1} ; z_t], (h_{t−1}, c_{t−1}))

using :class:`rnnkit.attention.AdditiveAttention` (its key projection is prepared once per image).

**Output** (the deep output layer of Xu et al.): logits_t = W_o drop(E y_{t−1} + L_h h_t + L_z z_t)
(no L_z term without attention). Training is teacher forcing: the input is ``<bos> w_1 … w_n``,
the target ``w_1 … w_n <eos>``, and the loss is the mean cross-entropy over real tokens plus,
with attention, the doubly stochastic regulariser λ · mean_{b,i} (1 − Σ_t α_bti)², which asks
every position to receive about one unit of attention over the caption.

**Text.** Captions are lowercased and split on whitespace; tokens without a letter or digit
(".", ",", "&" …) are dropped, as in the usual Flickr8k preprocessing, so BLEU does not reward
punctuation. The vocabulary keeps words seen at least ``min_freq`` times in training captions.
BLEU-n is sacrebleu's corpus BLEU with n-grams up to n, against all references of each image.
"""

from __future__ import annotations

from rnnkit.tasks.captioner.config import ATTENTIONS, GRID, CaptionData, CaptionerConfig
from rnnkit.tasks.captioner.data import (
    CaptionSplit,
    caption_bleu,
    caption_tokens,
    collate,
    encode_split,
    image_arrays,
    image_batches,
    read_image,
    read_split,
)
from rnnkit.tasks.captioner.model import Captioner, format_caption
from rnnkit.tasks.captioner.plot import plot_attention_overlay
from rnnkit.tasks.captioner.task import TASK, CaptionTraining

__all__ = [
    "ATTENTIONS",
    "caption_bleu",
    "caption_tokens",
    "CaptionData",
    "Captioner",
    "CaptionerConfig",
    "CaptionSplit",
    "CaptionTraining",
    "collate",
    "encode_split",
    "format_caption",
    "GRID",
    "image_arrays",
    "image_batches",
    "plot_attention_overlay",
    "read_image",
    "read_split",
    "TASK",
]
