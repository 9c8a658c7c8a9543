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

import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from rnnkit.attention import build_attention
from rnnkit.cells import LSTMCell
from rnnkit.config import field_meta as _opt
from rnnkit.data.images import (
    Captions,
    FeatureCache,
    cached_arrays,
    decode_image,
    default_cache_dir,
    open_images,
    read_captions,
)
from rnnkit.data.vocab import Vocab
from rnnkit.errors import DataError, DataFileNotFoundError
from rnnkit.image_encoders import (
    ENCODERS,
    SmallCNN,
    encoder_info,
    load_efficientnet_lite0,
    pixels_to_tensor,
)
from rnnkit.layers import LSTM
from rnnkit.state import LSTMState
from rnnkit.tasks.base import Output
from rnnkit.train import IndependentBatches

__all__ = [
    "CaptionData",
    "CaptionSplit",
    "CaptionTraining",
    "Captioner",
    "CaptionerConfig",
    "TASK",
    "caption_bleu",
    "caption_tokens",
    "format_caption",
    "image_batches",
    "plot_attention_overlay",
    "read_image",
]

log = logging.getLogger(__name__)

ATTENTIONS = ("additive", "none")
GRID = 7  # both encoders give a 7×7 grid: L = 49 positions


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------
@dataclass
class CaptionerConfig:
    """Architecture of the image captioner."""

    encoder: str = field(
        default="efficientnet-lite0",
        metadata=_opt(
            "image encoder: frozen ImageNet EfficientNet-Lite0 (features cached) or a small CNN "
            "trained from scratch",
            tuple(ENCODERS),
        ),
    )
    cnn_width: int = field(default=32, metadata=_opt("small-cnn: channels of its first stage"))
    attention: str = field(
        default="additive",
        metadata=_opt(
            "soft attention over the 7×7 grid (Show, Attend and Tell) or none (Show and Tell)",
            ATTENTIONS,
        ),
    )
    embed_size: int = field(default=256, metadata=_opt("word embedding width"))
    hidden_size: int = field(default=512, metadata=_opt("LSTM state width"))
    feature_size: int = field(
        default=512, metadata=_opt("width F the image features are projected to (attention keys)")
    )
    attention_size: int = field(default=256, metadata=_opt("additive attention: hidden width"))
    gate: bool = field(
        default=True, metadata=_opt("attention: gate the context with β = σ(W h_{t−1})")
    )
    doubly_stochastic: float = field(
        default=1.0,
        metadata=_opt("attention: weight λ of the penalty mean (1 − Σ_t α_ti)² (0 = off)"),
    )
    dropout: float = field(
        default=0.5, metadata=_opt("dropout on the pooled image, the embeddings and the output")
    )
    tie_weights: bool = field(
        default=True, metadata=_opt("share the word embedding with the output layer")
    )


@dataclass
class CaptionData:
    """Images, captions and how captions become tokens."""

    images: str | None = field(default=None, metadata=_opt("training images: a tar or a folder"))
    captions: str | None = field(
        default=None, metadata=_opt("training captions: '<image>#<k><TAB><caption>' lines")
    )
    valid_images: str | None = field(default=None, metadata=_opt("validation images"))
    valid_captions: str | None = field(default=None, metadata=_opt("validation captions"))
    feature_cache: str | None = field(
        default=None,
        metadata=_opt("cache directory for image features (default: ~/.cache/rnnkit/features)"),
    )
    max_images: int | None = field(
        default=None, metadata=_opt("use only the first N training images")
    )
    max_valid_images: int | None = field(
        default=None, metadata=_opt("use only the first N validation images")
    )
    min_freq: int = field(default=5, metadata=_opt("keep words seen at least this often"))
    max_len: int = field(default=30, metadata=_opt("longest caption (tokens) kept and generated"))
    extract_batch_size: int = field(default=32, metadata=_opt("images per encoder batch"))
    eval_beam: int = field(
        default=1, metadata=_opt("beam size for the validation BLEU during training (1 = greedy)")
    )


# ---------------------------------------------------------------------------------------------
# Text
# ---------------------------------------------------------------------------------------------
def caption_tokens(text: str) -> list[str]:
    """Lowercased whitespace tokens that contain a letter or a digit (punctuation dropped)."""
    return [t for t in text.lower().split() if any(ch.isalnum() for ch in t)]


def caption_bleu(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> dict:
    """Corpus BLEU-1…4 (sacrebleu, 0–100) of ``hypotheses`` against every reference of each;
    ``{"bleu1": …, "bleu2": …, "bleu3": …, "bleu4": …}``."""
    from rnnkit.metrics import corpus_bleu

    hyps, refs = list(hypotheses), [list(r) for r in references]
    return {f"bleu{n}": float(corpus_bleu(hyps, refs, max_order=n)) for n in range(1, 5)}


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------
@dataclass
class CaptionSplit:
    """One encoded split. ``images`` holds what the model's encoder reads, one row per image:
    cached EfficientNet features ``(N, 49, 1280)`` float16, or resized pixels ``(N, S, S, 3)``
    uint8 for the small CNN. Caption j belongs to image ``image_of[j]`` and has token ``ids``;
    ``references[k]`` are image k's captions as normalised strings (for BLEU)."""

    names: list[str]
    images: Tensor
    image_of: list[int]
    ids: list[list[int]]
    references: list[list[str]]
    source: str = ""

    def __len__(self) -> int:
        return len(self.ids)


def _feature_cache(d: CaptionData, namespace: str) -> FeatureCache:
    return FeatureCache(
        Path(d.feature_cache) if d.feature_cache else default_cache_dir(), namespace
    )


def image_arrays(
    model: Captioner, d: CaptionData, images_path: str, names: Sequence[str], progress: bool = True
) -> np.ndarray:
    """What the model's encoder reads for each image in ``names``, through the feature cache."""
    size = ENCODERS[model.config.encoder][0]
    with open_images(images_path) as source:
        for n in names:
            if n not in source:
                raise DataError(f"image {n!r} is not in the archive", source.path)
        if model.config.encoder == "small-cnn":
            cache = _feature_cache(d, f"pixels-{size}-uint8")
            return cached_arrays(
                source, names, cache, lambda px: px, size, 256, "decoding images", progress
            )
        cache = _feature_cache(d, f"{encoder_info()}-{size}-imagenet-fp16")
        return cached_arrays(
            source,
            names,
            cache,
            model.extract_features,
            size,
            d.extract_batch_size,
            "image features",
            progress,
        )


def read_split(model: Captioner, d: CaptionData, part: str, progress: bool = True) -> CaptionSplit:
    """The ``train`` or ``valid`` split, encoded for ``model`` (features from the cache)."""
    images, captions = (
        (d.images, d.captions) if part == "train" else (d.valid_images, d.valid_captions)
    )
    if not images or not captions:
        flags = "--images/--captions" if part == "train" else "--valid-images/--valid-captions"
        raise DataError(f"no {part} data: pass {flags}")
    caps = read_captions(captions).head(d.max_images if part == "train" else d.max_valid_images)
    _check_names(caps, images)
    arrays = image_arrays(model, d, images, caps.images, progress)
    return encode_split(model, caps, torch.from_numpy(arrays), str(captions))


def _check_names(caps: Captions, images: str) -> None:
    with open_images(images) as source:
        for name, line in zip(caps.images, caps.lines):
            if name not in source:
                raise DataError(f"image {name!r} is not in {images}", caps.path, line)


def encode_split(model: Captioner, caps: Captions, images: Tensor, source: str) -> CaptionSplit:
    image_of, ids, refs = [], [], []
    for k, captions in enumerate(caps.captions):
        refs.append([" ".join(caption_tokens(c)) for c in captions])
        for c in captions:
            image_of.append(k)
            ids.append(model.encode_caption(c))
    return CaptionSplit(list(caps.images), images, image_of, ids, refs, source)


def image_batches(image_of: Sequence[int], batch_size: int, rng=None) -> list[list[int]]:
    """Caption indices in batches of ``batch_size`` that keep each image's captions together, so
    a batch encodes few distinct images (about batch_size / 5 here). With ``rng`` the image order
    is shuffled; every caption appears exactly once."""
    by_image: dict[int, list[int]] = {}
    for j, k in enumerate(image_of):
        by_image.setdefault(k, []).append(j)
    order = list(by_image)
    if rng is not None:
        order = [order[i] for i in rng.permutation(len(order))]
    flat = [j for k in order for j in by_image[k]]
    return [flat[s : s + batch_size] for s in range(0, len(flat), batch_size)]


def collate(split: CaptionSplit, idx: Sequence[int], pad_id: int, bos_id: int, eos_id: int):
    """A teacher-forcing batch: ``images (U, …)`` (the distinct images), ``image_index (B,)``
    into them, ``inputs`` = <bos> w_1..w_n and ``targets`` = w_1..w_n <eos>, both ``(B, T)``
    padded, and ``lengths (B,)`` = n + 1."""
    images = sorted({split.image_of[j] for j in idx})
    row = {k: r for r, k in enumerate(images)}
    seqs = [split.ids[j] for j in idx]
    lengths = torch.tensor([len(s) + 1 for s in seqs], dtype=torch.int64)
    T = int(lengths.max())
    inputs = torch.full((len(idx), T), pad_id, dtype=torch.int64)
    targets = torch.full((len(idx), T), pad_id, dtype=torch.int64)
    for b, s in enumerate(seqs):
        inputs[b, 0] = bos_id
        inputs[b, 1 : len(s) + 1] = torch.tensor(s, dtype=torch.int64)
        targets[b, : len(s)] = torch.tensor(s, dtype=torch.int64)
        targets[b, len(s)] = eos_id
    return {
        "images": split.images[images],
        "image_index": torch.tensor([row[split.image_of[j]] for j in idx], dtype=torch.int64),
        "inputs": inputs,
        "targets": targets,
        "lengths": lengths,
    }


def read_image(spec: str | os.PathLike[str]) -> tuple[bytes, str]:
    """The bytes of an image given as a file path, or as ``archive.tar:member.jpg`` (a member
    read straight from a tar); returns ``(bytes, name for messages)``."""
    p = Path(spec)
    if p.is_file():
        return p.read_bytes(), str(p)
    text = os.fspath(spec)
    if ":" in text:
        archive, member = text.rsplit(":", 1)
        if Path(archive).is_file():
            with open_images(archive) as source:
                return source.read(member), source.where(member)
    raise DataFileNotFoundError("no such image file", p)


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------
class _Packed(NamedTuple):
    """Teacher forcing on real tokens: ``logits (N_tok, V)``, the ``loss`` (with targets), α
    ``(B, T, L)`` (attention only), and each row's ``caption`` (caller's order) and ``step``."""

    logits: Tensor
    loss: Tensor | None
    alphas: Tensor | None
    caption: Tensor
    step: Tensor


class Captioner(nn.Module):
    """Image encoder → (attention) LSTM decoder → word logits; see the module docstring.

    The frozen EfficientNet is *not* a submodule: training reads its cached features, and it is
    loaded from its package on first use for new images, so run directories hold only what was
    trained. ``forward`` is teacher forcing; :meth:`describe` decodes (greedy or beam);
    :meth:`caption` goes from image files to captions.
    """

    def __init__(self, config: CaptionerConfig, data_config: CaptionData, vocab: Vocab):
        super().__init__()
        c = config
        if c.attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}; got {c.attention!r}")
        if c.encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {tuple(ENCODERS)}; got {c.encoder!r}")
        if vocab.bos_id is None or vocab.eos_id is None or vocab.pad_id != 0:
            raise ValueError("the caption vocabulary needs <pad> = 0, <bos> and <eos>")
        self.config = config
        self.data_config = data_config
        self.vocab = vocab
        self.cnn = SmallCNN(c.cnn_width) if c.encoder == "small-cnn" else None
        D = self.cnn.out_channels if self.cnn is not None else ENCODERS[c.encoder][1]
        self.feature_dim = D
        self.project = nn.Linear(D, c.feature_size)  # keys k_i = W_a a_i
        self.pool_norm = nn.LayerNorm(D)
        self.init_h = nn.Linear(D, c.hidden_size)
        self.init_c = nn.Linear(D, c.hidden_size)
        self.embedding = nn.Embedding(len(vocab), c.embed_size, padding_idx=0)
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        with torch.no_grad():
            self.embedding.weight[0].zero_()
        self.attention = None
        self.gate = None
        if c.attention == "none":
            self.rnn = LSTM(c.embed_size, c.hidden_size, batch_first=True)
            self.out_z = None
        else:
            self.attention = build_attention(
                c.attention, c.hidden_size, c.feature_size, c.attention_size
            )
            self.cell = LSTMCell(c.embed_size + c.feature_size, c.hidden_size)
            if c.gate:
                self.gate = nn.Linear(c.hidden_size, c.feature_size)
            self.out_z = nn.Linear(c.feature_size, c.embed_size, bias=False)
        self.out_h = nn.Linear(c.hidden_size, c.embed_size)
        self.head = nn.Linear(c.embed_size, len(vocab))
        if c.tie_weights:
            self.head.weight = self.embedding.weight
        self.drop = nn.Dropout(c.dropout)
        self._extractor: nn.Module | None = None  # the frozen EfficientNet, loaded on demand

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    # -- text -------------------------------------------------------------------------------
    def encode_caption(self, text: str) -> list[int]:
        """Token ids of a caption (normalised, unknown words → <unk>, cut to ``max_len``)."""
        return self.vocab.encode(caption_tokens(text)[: self.data_config.max_len], unknown="unk")

    # -- images -----------------------------------------------------------------------------
    def _pretrained(self) -> nn.Module:
        if self._extractor is None:
            # a plain attribute, not a submodule: it stays out of state_dict and the run's files
            object.__setattr__(self, "_extractor", load_efficientnet_lite0(self.device))
        return self._extractor

    @torch.no_grad()
    def extract_features(self, pixels: np.ndarray) -> np.ndarray:
        """Frozen EfficientNet-Lite0 features of ``(N, 224, 224, 3)`` uint8 pixels:
        ``(N, 49, 1280)`` float16 (positions row-major, channels last) — the cached form."""
        x = pixels_to_tensor(pixels).to(self.device)
        a = self._pretrained().extract_features(x)  # (N, 1280, 7, 7)
        return a.flatten(2).transpose(1, 2).to(torch.float16).cpu().numpy()

    def prepare_images(self, pixels: np.ndarray) -> Tensor:
        """Pixels ``(N, S, S, 3)`` uint8 (S = the encoder's size) → what :meth:`grid` reads."""
        if self.cnn is not None:
            return torch.from_numpy(np.ascontiguousarray(pixels))
        return torch.from_numpy(self.extract_features(pixels))

    def grid(self, images: Tensor) -> Tensor:
        """The feature grid a ``(N, 49, D)`` float32 from stored images: cached features
        ``(N, 49, D)`` pass through; pixels ``(N, S, S, 3)`` uint8 go through the small CNN."""
        images = images.to(self.device)
        if self.cnn is None:
            return images.float()
        a = self.cnn(pixels_to_tensor(images))  # (N, D, 7, 7)
        return a.flatten(2).transpose(1, 2)  # (N, 49, D)

    def start(self, a: Tensor) -> tuple[Tensor, LSTMState]:
        """Keys ``(N, L, F)`` and the initial state (h_0, c_0) ``(N, H)`` each, from ``a``."""
        mean = self.drop(self.pool_norm(a.mean(1)))  # LN(ā) (N, D)
        h0 = torch.tanh(self.init_h(mean))
        c0 = torch.tanh(self.init_c(mean))
        keys = self.project(a)  # (N, L, F)
        return keys, LSTMState(h0, c0)

    # -- teacher forcing ----------------------------------------------------------------------
    def forward(
        self,
        inputs: Tensor,
        state=None,
        targets: Tensor | None = None,
        *,
        images: Tensor,
        image_index: Tensor | None = None,
        lengths: Tensor | None = None,
    ) -> Output:
        """Teacher forcing. ``inputs (B, T)`` = <bos> w_1 …, ``images (U, …)`` the distinct
        stored images and ``image_index (B,)`` which one each caption describes (default:
        row b), ``lengths (B,)`` real steps (default T). Returns ``Output(logits (B, T, V),
        loss, state=α (B, T, L) or None)``; logits and α are 0 on padding. ``state`` is not
        read: every caption starts from its image."""
        B, T = inputs.shape
        if lengths is None:
            lengths = torch.full((B,), T, dtype=torch.int64)
        if image_index is None:
            image_index = torch.arange(B)
        r = self._packed(inputs, images, image_index, lengths, targets)
        logits = r.logits.new_zeros(B, T, r.logits.shape[-1])
        logits[r.caption, r.step] = r.logits
        return Output(logits, r.loss, r.alphas)

    def _packed(
        self,
        inputs: Tensor,
        images: Tensor,
        image_index: Tensor,
        lengths: Tensor,
        targets: Tensor | None = None,
    ) -> _Packed:
        """Teacher forcing over the real positions only, in PackedSequence order (time-major,
        captions sorted longest first so the batch shrinks as captions end)."""
        device = self.device
        lengths = lengths.cpu()
        a = self.grid(images)  # (U, L, D): each distinct image is encoded once
        keys, state = self.start(a)
        order = torch.argsort(lengths, descending=True, stable=True)
        sorted_lengths = lengths[order]
        order_d = order.to(device)
        index = image_index.to(device)[order_d]
        keys = keys[index]  # (B, L, F)
        h, c = state.h[index], state.c[index]
        x = inputs.to(device)[order_d]
        B, T = x.shape
        emb = self.drop(self.embedding(x))  # (B, T, E)
        packing = pack_padded_sequence(emb, sorted_lengths, batch_first=True)
        rows = packing.batch_sizes.tolist()  # captions still running at each step
        row_caption = torch.cat([torch.arange(n) for n in rows]).to(device)  # sorted position
        row_step = torch.cat([torch.full((n,), t) for t, n in enumerate(rows)]).to(device)
        penalty, alphas = None, None
        if self.attention is None:
            y, _ = self.rnn(emb, LSTMState(h.unsqueeze(0), c.unsqueeze(0)), lengths=sorted_lengths)
            out = packing.data + self.out_h(y[row_caption, row_step])  # (N_tok, E)
        else:
            E = self.config.embed_size
            W = self.cell.weight_ih  # (4H, E + F): the word and the context columns
            xw = F.linear(emb, W[:, :E], self.cell.bias_ih)  # word part of every step at once
            W_z = W[:, E:].contiguous()  # one copy per batch, not one per step
            prepared = self.attention.prepare(keys)  # (B, L, A)
            hs, zs, als = [], [], []
            for t in range(len(rows)):
                # every caption steps until the longest ends: slicing off the finished ones
                # would save little and cost a full-size zero gradient per slice and step
                z, alpha = self.attention(h, keys, prepared=prepared)  # (B, F), (B, L)
                if self.gate is not None:
                    z = torch.sigmoid(self.gate(h)) * z
                h, (_, c) = self.cell.step(xw[:, t] + F.linear(z, W_z), LSTMState(h, c))
                hs.append(h)
                zs.append(z)
                als.append(alpha)
            # (B, T, ·) → the real positions, in packed order
            h_all, z_all = torch.stack(hs, 1), torch.stack(zs, 1)
            al = torch.stack(als, 1)[row_caption, row_step]  # (N_tok, L)
            out = (
                packing.data
                + self.out_h(h_all[row_caption, row_step])
                + self.out_z(z_all[row_caption, row_step])
            )
            if self.config.doubly_stochastic > 0:
                total = al.new_zeros(B, al.shape[1]).index_add(0, row_caption, al)  # Σ_t α_ti
                penalty = self.config.doubly_stochastic * ((1.0 - total) ** 2).mean()
            alphas = al.new_zeros(B, T, al.shape[1])
            alphas[order_d[row_caption], row_step] = al  # (B, T, L) in the caller's order
        logits = self.head(self.drop(out))  # (N_tok, V)
        loss = None
        if targets is not None:
            target = targets.to(device)[order_d][row_caption, row_step]  # (N_tok,)
            loss = F.cross_entropy(logits.float(), target)
            if penalty is not None:
                loss = loss + penalty
        return _Packed(logits, loss, alphas, order_d[row_caption], row_step)

    def training_loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, int]:
        """(mean loss over the batch's real tokens, number of tokens)."""
        r = self._packed(
            batch["inputs"],
            batch["images"],
            batch["image_index"],
            batch["lengths"],
            batch["targets"],
        )
        return r.loss, int(batch["lengths"].sum())

    # -- decoding -----------------------------------------------------------------------------
    def _step(self, tokens: Tensor, state: tuple[Tensor, ...]):
        """One decoding step for :mod:`rnnkit.decoding`: previous words ``(N,)`` and the state
        (h, c, keys, prepared keys) → (log-probabilities (N, V), new state, α (N, L) or None)."""
        h, c, keys, prepared = state
        e = self.embedding(tokens)  # (N, E)
        if self.attention is None:
            _, (h_n, c_n) = self.rnn(e.unsqueeze(1), LSTMState(h.unsqueeze(0), c.unsqueeze(0)))
            h, c = h_n[0], c_n[0]
            out = e + self.out_h(h)
            alpha = None
        else:
            z, alpha = self.attention(h, keys, prepared=prepared)
            if self.gate is not None:
                z = torch.sigmoid(self.gate(h)) * z
            h, (_, c) = self.cell.step(
                self.cell.project_input(torch.cat([e, z], -1)), LSTMState(h, c)
            )
            out = e + self.out_h(h) + self.out_z(z)
        log_probs = torch.log_softmax(self.head(out).float(), -1)
        return log_probs, (h, c, keys, prepared), alpha

    @torch.no_grad()
    def describe(
        self,
        images: Tensor,
        beam_size: int = 1,
        max_len: int | None = None,
        length_penalty: float = 1.0,
    ) -> list:
        """Decode a caption for each stored image ``(N, …)`` (see :meth:`grid`): greedy for
        ``beam_size=1``, else beam search with length normalisation. Returns
        :class:`rnnkit.decoding.Hypothesis` objects (``tokens`` end before <eos>; ``attention``
        ``(len(tokens), 49)`` with attention)."""
        from rnnkit.decoding import beam_search, greedy_decode

        self.eval()
        a = self.grid(images)
        keys, state = self.start(a)
        prepared = self.attention.prepare(keys) if self.attention is not None else keys
        start = (state.h, state.c, keys, prepared)
        max_len = max_len or self.data_config.max_len + 1
        v = self.vocab
        if beam_size <= 1:
            hyps = greedy_decode(self._step, start, a.shape[0], v.bos_id, v.eos_id, max_len)
        else:
            hyps = beam_search(
                self._step,
                start,
                a.shape[0],
                v.bos_id,
                v.eos_id,
                beam_size,
                max_len,
                length_penalty,
            )
        return hyps

    def words(self, tokens: Sequence[int]) -> list[str]:
        return [self.vocab.itos[t] for t in tokens]

    # -- evaluation ---------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate_split(
        self, split: CaptionSplit, beam_size: int = 1, batch_size: int = 100
    ) -> dict[str, Any]:
        """Teacher-forced ``loss`` (nats per token) and BLEU-1…4 of the decoded captions against
        all references; ``captions`` lists the decoded text per image."""
        self.eval()
        v = self.vocab
        total, tokens = 0.0, 0
        for idx in image_batches(split.image_of, 5 * batch_size):
            b = collate(split, idx, v.pad_id, v.bos_id, v.eos_id)
            loss, n = self.training_loss(b)
            total += float(loss) * n
            tokens += n
        hyps: list[str] = []
        for s in range(0, len(split.names), batch_size):
            for h in self.describe(split.images[s : s + batch_size], beam_size):
                hyps.append(" ".join(self.words(h.tokens)))
        return {
            "loss": total / max(tokens, 1),
            **caption_bleu(hyps, split.references),
            "images": len(split.names),
            "captions": hyps,
        }

    # -- inference on files -------------------------------------------------------------------
    def caption(
        self,
        images: Sequence[str | os.PathLike[str]],
        beam_size: int = 1,
        max_len: int | None = None,
        attention_png: str | os.PathLike[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Caption image files (or ``archive.tar:member`` names). Each result has ``image``,
        ``caption``, ``words``, ``score`` (log-probability, length-normalised for beams) and,
        with ``attention_png``, the picture written (``out.png``; ``out-2.png`` … for more)."""
        self.eval()
        size = ENCODERS[self.config.encoder][0]
        pixels = []
        for spec in images:
            data, where = read_image(spec)
            pixels.append(decode_image(data, where, size))
        stacked = np.stack(pixels)
        hyps = self.describe(self.prepare_images(stacked), beam_size, max_len)
        results = []
        for i, (spec, hyp) in enumerate(zip(images, hyps)):
            words = self.words(hyp.tokens)
            r = {
                "image": os.fspath(spec),
                "caption": " ".join(words),
                "words": words,
                "score": float(hyp.score),
                "beam": beam_size,
            }
            if attention_png:
                if hyp.attention is None:
                    raise DataError("--attention-png needs a model trained with attention")
                out = Path(attention_png)
                if i:
                    out = out.with_name(f"{out.stem}-{i + 1}{out.suffix}")
                plot_attention_overlay(stacked[i], words, hyp.attention, out)
                r["attention_png"] = str(out)
            results.append(r)
        return results

    def evaluate_file(self, path=None, confusion=None, encoding=None, beam_size: int = 1) -> dict:
        """BLEU-1…4 and loss on the run's validation images and captions (``path``: another
        caption file whose images are in the run's validation archive)."""
        d = self.data_config
        caps = read_captions(path or d.valid_captions, encoding or "utf-8")
        if not path:
            caps = caps.head(d.max_valid_images)
        _check_names(caps, d.valid_images)
        arrays = image_arrays(self, d, d.valid_images, caps.images)
        split = encode_split(self, caps, torch.from_numpy(arrays), caps.path)
        result = self.evaluate_split(split, beam_size)
        result["data"] = caps.path
        result["beam"] = beam_size
        result["examples"] = [
            {"image": n, "caption": c, "references": r}
            for n, c, r in zip(split.names[:5], result["captions"][:5], split.references[:5])
        ]
        del result["captions"]
        return result

    @staticmethod
    def format_evaluation(result: dict[str, Any]) -> str:
        head = (
            f"{result['data']}: {result['images']} images, beam {result.get('beam', 1)}, "
            f"loss {result['loss']:.4f}; "
            + ", ".join(f"BLEU-{n} {result[f'bleu{n}']:.2f}" for n in range(1, 5))
        )
        lines = [head]
        for ex in result.get("examples", []):
            lines.append(f"  {ex['image']}: {ex['caption']}")
        return "\n".join(lines)


def format_caption(result: dict[str, Any]) -> str:
    """``image: caption`` on one line (plus the attention picture when one was drawn)."""
    line = f"{result['image']}: {result['caption']}"
    if result.get("attention_png"):
        line += f"  [attention: {result['attention_png']}]"
    return line


def plot_attention_overlay(
    pixels: np.ndarray,
    words: Sequence[str],
    attention: Tensor | np.ndarray,
    path: str | os.PathLike[str],
) -> Path:
    """The image, then one panel per generated word (and <eos>) with that step's 7×7 attention
    map upsampled (bilinear) over it: bright = looked at."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    att = np.asarray(attention.detach().cpu() if isinstance(attention, Tensor) else attention)
    labels = list(words) + ["<eos>"]
    att = att[: len(labels)]
    labels = labels[: len(att)]
    H, W = pixels.shape[:2]
    panels = 1 + len(labels)
    cols = min(5, panels)
    rows = math.ceil(panels / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.5 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    axes.flat[0].imshow(pixels)
    axes.flat[0].set_title("image", fontsize=9)
    for k, (word, a) in enumerate(zip(labels, att), 1):
        m = a.reshape(GRID, GRID).astype(np.float32)
        m = m / max(float(m.max()), 1e-12)
        up = np.asarray(Image.fromarray(m).resize((W, H), Image.BILINEAR))
        ax = axes.flat[k]
        ax.imshow(pixels)
        ax.imshow(up, cmap="gray", alpha=0.6, vmin=0.0, vmax=1.0)
        ax.set_title(word, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------
class CaptionTraining(IndependentBatches):
    """Batches for :func:`rnnkit.train.fit`: each epoch shuffles the images (a generator seeded
    with (seed, epoch), so a resumed run sees the same batches) and cuts their captions, kept
    together per image, into batches; validation reports loss and BLEU-1…4."""

    tokens_name = "tok"

    def __init__(
        self,
        model: Captioner,
        train: CaptionSplit,
        valid: CaptionSplit,
        batch_size: int,
        seed: int,
        eval_beam: int = 1,
    ):
        if len(train) == 0:
            raise DataError("no training captions")
        self.model = model
        self.train = train
        self.valid = valid
        self.batch_size = batch_size
        self.seed = seed
        self.eval_beam = eval_beam
        self._epoch, self._plan = -1, []

    def batches_per_epoch(self) -> int:
        return math.ceil(len(self.train) / self.batch_size)

    def _plan_for(self, epoch: int) -> list[list[int]]:
        if epoch != self._epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._plan = image_batches(self.train.image_of, self.batch_size, rng)
            self._epoch = epoch
        return self._plan

    def start_epoch(self, epoch: int) -> None:
        self._plan_for(epoch)

    def batch(self, epoch: int, index: int) -> dict[str, Tensor]:
        v = self.model.vocab
        return collate(self.train, self._plan_for(epoch)[index], v.pad_id, v.bos_id, v.eos_id)

    def training_loss(self, model, batch) -> tuple[Tensor, int]:
        inner = getattr(model, "module", model)  # DistributedDataParallel wraps the model
        return inner.training_loss(batch)

    def evaluate(self, model) -> dict[str, float]:
        t = time.monotonic()
        m = getattr(model, "module", model).evaluate_split(self.valid, self.eval_beam)
        log.debug("validation in %.1f s", time.monotonic() - t)
        return {k: m[k] for k in ("loss", "bleu1", "bleu2", "bleu3", "bleu4")}


# ---------------------------------------------------------------------------------------------
# Task registry entry
# ---------------------------------------------------------------------------------------------
class _CaptionTask:
    """Describe images in words: a CNN encoder and an LSTM decoder, with or without attention."""

    name = "caption"
    sections = {"model": CaptionerConfig, "data": CaptionData}
    defaults = {
        "train": {"batch_size": 64, "lr": 1e-3, "clip_norm": 5.0, "eval_every": 0, "epochs": 8}
    }

    def build(self, configs: dict[str, Any], train_cfg, device):
        model_cfg: CaptionerConfig = configs["model"]
        data_cfg: CaptionData = configs["data"]
        if not data_cfg.captions or not data_cfg.images:
            raise DataError("no training data: pass --images TAR --captions FILE")
        caps = read_captions(data_cfg.captions).head(data_cfg.max_images)
        tokens = [caption_tokens(c)[: data_cfg.max_len] for cs in caps.captions for c in cs]
        vocab = Vocab.build(tokens, level="word", min_freq=data_cfg.min_freq)
        model = Captioner(model_cfg, data_cfg, vocab).to(device)
        log.info(
            "data: %d training images with %d captions, vocabulary of %d words (min_freq %d)",
            len(caps),
            caps.num_captions,
            len(vocab),
            data_cfg.min_freq,
        )
        return model, self._training(model, data_cfg, train_cfg)

    @staticmethod
    def _training(model: Captioner, d: CaptionData, train_cfg) -> CaptionTraining:
        progress = train_cfg.progress if train_cfg is not None else True
        t = time.monotonic()
        train = read_split(model, d, "train", progress)
        valid = read_split(model, d, "valid", progress)
        log.info(
            "images ready in %.1f s: %d train (%d captions), %d validation",
            time.monotonic() - t,
            len(train.names),
            len(train),
            len(valid.names),
        )
        seed = train_cfg.seed if train_cfg is not None else 0
        batch = train_cfg.batch_size if train_cfg is not None else 64
        return CaptionTraining(model, train, valid, batch, seed, d.eval_beam)

    def restore(self, saved: dict[str, Any], vocab, device, train_cfg=None, with_data=False):
        from rnnkit.config import from_dict

        if vocab is None:
            raise DataError("the run has no vocab.json")
        model_cfg = from_dict(CaptionerConfig, saved["model"])
        data_cfg = from_dict(CaptionData, saved["data"])
        model = Captioner(model_cfg, data_cfg, vocab).to(device)
        training = self._training(model, data_cfg, train_cfg) if with_data else None
        return model, training


TASK = _CaptionTask()
