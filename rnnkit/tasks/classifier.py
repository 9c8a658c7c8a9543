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

import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.config import field_meta as _opt
from rnnkit.data.batching import pad_sequences
from rnnkit.data.tabular import read_classification, read_numeric_rows, read_word_vectors
from rnnkit.data.vocab import PAD, UNK, Vocab
from rnnkit.errors import DataError
from rnnkit.layers import GRU, LSTM, RNN
from rnnkit.metrics import classification_report, plot_confusion_matrix
from rnnkit.tasks.base import Output
from rnnkit.train import IndependentBatches

__all__ = [
    "AttentionPooling",
    "CharEncoder",
    "Classifier",
    "ClassifierConfig",
    "ClassifierData",
    "ClassificationTraining",
    "Example",
    "TASK",
    "TokenEmbedder",
    "TokenEncoder",
    "bucket_batches",
    "collate",
    "format_prediction",
    "load_word_vectors",
    "make_recurrent",
    "pool_sequence",
]

log = logging.getLogger(__name__)

LAYERS = {"lstm": LSTM, "gru": GRU, "rnn": RNN}
POOLINGS = ("last", "mean", "max", "attention")
CHAR_REPRS = ("none", "cnn", "rnn")
CHAR_SPECIALS = (PAD, UNK)


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------
@dataclass
class ClassifierConfig:
    """Architecture of a sequence classifier."""

    cell: str = field(default="lstm", metadata=_opt("recurrent cell", tuple(LAYERS)))
    embed_size: int = field(default=128, metadata=_opt("word (or character) embedding width"))
    embed_init: float = field(
        default=0.1, metadata=_opt("embeddings start as U(-a, a) with this a (0: torch's N(0, 1))")
    )
    hidden_size: int = field(default=128, metadata=_opt("recurrent state width per direction"))
    num_layers: int = field(default=1, metadata=_opt("stacked recurrent layers"))
    bidirectional: bool = field(default=True, metadata=_opt("read the sequence both ways"))
    pooling: str = field(default="max", metadata=_opt("how steps become one vector", POOLINGS))
    attention_size: int = field(default=64, metadata=_opt("attention pooling: hidden width"))
    dropout: float = field(
        default=0.5, metadata=_opt("dropout on embeddings, between layers and before the output")
    )
    word_dropout: float = field(
        default=0.0, metadata=_opt("training: replace a token by <unk> with this probability")
    )
    char_repr: str = field(
        default="none",
        metadata=_opt("word level: add a character-level word vector", CHAR_REPRS),
    )
    char_embed_size: int = field(default=16, metadata=_opt("character embedding width"))
    char_hidden_size: int = field(
        default=32, metadata=_opt("char CNN filters, or char RNN state width per direction")
    )
    char_kernel: int = field(default=3, metadata=_opt("char CNN window (odd)"))
    nonlinearity: str = field(default="tanh", metadata=_opt("RNN nonlinearity", ("tanh", "relu")))
    init: str = field(
        default="default",
        metadata=_opt("RNN init: default or identity (IRNN)", ("default", "identity")),
    )
    forget_bias: float = field(default=0.0, metadata=_opt("initial forget-gate bias (LSTM)"))
    layer_norm: bool = field(default=False, metadata=_opt("layer-normalised cells"))


@dataclass
class ClassifierData:
    """Where the examples come from and how they become sequences."""

    data: str | None = field(default=None, metadata=_opt("training file"))
    valid: str | None = field(
        default=None,
        metadata=_opt("validation file (default: hold out valid_fraction of the training file)"),
    )
    format: str = field(
        default="auto",
        metadata=_opt(
            "lines ('<label> <text>'), tsv, csv, jsonl, numeric (rows of numbers + a label), "
            "or auto (from the file name)",
            ("auto", "lines", "tsv", "csv", "jsonl", "numeric"),
        ),
    )
    text_column: str = field(default="text", metadata=_opt("tsv/csv/jsonl: text column"))
    label_column: str = field(
        default="label", metadata=_opt("tsv/csv/jsonl/numeric: label column (name or index)")
    )
    encoding: str = field(default="utf-8", metadata=_opt("text encoding of the files"))
    skip_bad_lines: bool = field(
        default=False, metadata=_opt("report and skip malformed lines instead of stopping")
    )
    level: str = field(default="word", metadata=_opt("word or char tokens", ("word", "char")))
    lowercase: bool = field(default=False, metadata=_opt("lowercase text before tokenizing"))
    max_len: int | None = field(default=None, metadata=_opt("keep at most this many tokens"))
    max_vocab: int | None = field(default=None, metadata=_opt("keep the N most frequent tokens"))
    min_freq: int = field(default=1, metadata=_opt("drop tokens rarer than this"))
    max_word_len: int = field(
        default=20, metadata=_opt("char representation: first and last characters kept")
    )
    embeddings: str | None = field(
        default=None, metadata=_opt("word2vec/GloVe text file to initialise word embeddings")
    )
    valid_fraction: float = field(
        default=0.1, metadata=_opt("share held out for validation when no --valid file")
    )
    split_seed: int = field(default=0, metadata=_opt("seed of the held-out split"))
    step_size: int = field(default=1, metadata=_opt("numeric: values per time step"))
    label_names: str | None = field(
        default=None, metadata=_opt("display names, e.g. '0=negative,1=positive'")
    )
    labels: list[str] | None = field(default=None, metadata=_opt("classes", cli=False))
    chars: list[str] | None = field(default=None, metadata=_opt("character vocabulary", cli=False))
    num_features: int | None = field(default=None, metadata=_opt("numeric width", cli=False))
    feature_scale: float | None = field(default=None, metadata=_opt("numeric scale", cli=False))


# ---------------------------------------------------------------------------------------------
# Building blocks shared with the tagger
# ---------------------------------------------------------------------------------------------
def make_recurrent(
    cell: str,
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    bidirectional: bool = True,
    dropout: float = 0.0,
    nonlinearity: str = "tanh",
    init: str = "default",
    forget_bias: float = 0.0,
    layer_norm: bool = False,
):
    """A batch-first rnnkit ``LSTM``/``GRU``/``RNN`` with the cell's own extras."""
    options: dict[str, Any] = {"layer_norm": layer_norm}
    if cell == "lstm":
        options["forget_bias"] = forget_bias
    elif cell == "rnn":
        options |= {"nonlinearity": nonlinearity, "init": init}
    return LAYERS[cell](
        input_size,
        hidden_size,
        num_layers=num_layers,
        batch_first=True,
        bidirectional=bidirectional,
        dropout=dropout if num_layers > 1 else 0.0,
        **options,
    )


class CharEncoder(nn.Module):
    """A word's vector from its characters c_1..c_n (embedded as e_i).

    * ``cnn`` (Ma & Hovy 2016, Kim et al. 2016): h_i = tanh(W [e_{i−k//2}; …; e_{i+k//2}] + b)
      with zero vectors beyond the word, r = max_i h_i over the n real positions;
    * ``rnn`` (Lample et al. 2016): a bidirectional LSTM over e_1..e_n, r = [→h_n ; ←h_1].

    ``forward(chars (N, C), lengths (N,))`` → ``(N, out_size)``; id 0 is padding, read as a
    zero vector, so padding a word further never changes r.
    """

    def __init__(
        self, kind: str, num_chars: int, embed_size: int, hidden_size: int, kernel_size: int = 3
    ):
        super().__init__()
        if kind not in ("cnn", "rnn"):
            raise ValueError(f"kind must be 'cnn' or 'rnn'; got {kind!r}")
        self.kind = kind
        self.embedding = nn.Embedding(num_chars, embed_size, padding_idx=0)
        if kind == "cnn":
            if kernel_size < 1 or kernel_size % 2 == 0:
                raise ValueError(f"char_kernel must be odd; got {kernel_size}")
            self.conv = nn.Conv1d(embed_size, hidden_size, kernel_size, padding=kernel_size // 2)
            self.out_size = hidden_size
        else:
            self.rnn = LSTM(embed_size, hidden_size, batch_first=True, bidirectional=True)
            self.out_size = 2 * hidden_size

    def forward(self, chars: Tensor, lengths: Tensor) -> Tensor:
        e = self.embedding(chars) * (chars != 0).unsqueeze(2)  # (N, C, E), zero on padding
        if self.kind == "cnn":
            h = torch.tanh(self.conv(e.transpose(1, 2))).transpose(1, 2)  # (N, C, H)
            valid = torch.arange(chars.shape[1], device=chars.device) < lengths.unsqueeze(1)
            return h.masked_fill(~valid.unsqueeze(2), -math.inf).amax(1)  # (N, H)
        _, (h_n, _) = self.rnn(e, lengths=lengths.cpu())  # h_n (2, N, H)
        return torch.cat([h_n[0], h_n[1]], -1)  # (N, 2H)


class TokenEmbedder(nn.Module):
    """v_t = [E x_t ; r(x_t)]: a token embedding and (optionally) a :class:`CharEncoder` vector.

    ``forward(ids (B, T), chars (B, T, C) | None, mask (B, T))`` → ``(B, T, out_size)``. During
    training each real token's id is replaced by ``<unk>`` with probability ``word_dropout``
    (its character vector is kept), so the model learns what to do with unseen words. Token
    vectors start as U(−a, a), a = ``embed_init`` (row 0, padding, at zero).
    """

    def __init__(
        self,
        vocab_size: int,
        embed_size: int,
        unk_id: int,
        char_repr: str = "none",
        num_chars: int = 0,
        char_embed_size: int = 16,
        char_hidden_size: int = 32,
        char_kernel: int = 3,
        word_dropout: float = 0.0,
        embed_init: float = 0.1,
    ):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_size, padding_idx=0)
        if embed_init > 0:
            # small random vectors: with N(0, 1) rows (torch's default) Adam needs many more
            # steps to move rarely seen words, and a small corpus never gets there
            nn.init.uniform_(self.embedding.weight, -embed_init, embed_init)
            with torch.no_grad():
                self.embedding.weight[0].zero_()
        self.unk_id = unk_id
        self.word_dropout = word_dropout
        self.chars = None
        self.out_size = embed_size
        if char_repr != "none":
            self.chars = CharEncoder(
                char_repr, num_chars, char_embed_size, char_hidden_size, char_kernel
            )
            self.out_size += self.chars.out_size

    def forward(self, ids: Tensor, chars: Tensor | None, mask: Tensor) -> Tensor:
        if self.training and self.word_dropout:
            drop = torch.rand(ids.shape, device=ids.device) < self.word_dropout
            ids = ids.masked_fill(drop & mask, self.unk_id)
        v = self.embedding(ids)  # (B, T, E)
        if self.chars is None:
            return v
        if chars is None:
            raise ValueError("this model reads characters: pass chars (B, T, C)")
        words = chars[mask]  # (N, C): only real tokens, so no word has zero characters
        lengths = (words != 0).sum(1).clamp(min=1)
        r = self.chars(words, lengths)  # (N, R)
        out = v.new_zeros(*ids.shape, r.shape[-1])  # (B, T, R)
        out[mask] = r
        return torch.cat([v, out], -1)


def load_word_vectors(embedding: nn.Embedding, vocab: Vocab, path: str, encoding="utf-8") -> int:
    """Copy the vectors of a word2vec/GloVe text file into ``embedding`` rows of ``vocab``'s
    words (other rows keep their random initialisation). Returns how many words were found."""
    vectors, dim = read_word_vectors(path, keep=vocab.itos, encoding=encoding)
    if dim != embedding.embedding_dim:
        raise DataError(
            f"the vectors have {dim} dimensions but embed_size is {embedding.embedding_dim}; "
            f"pass --embed-size {dim}",
            path,
        )
    with torch.no_grad():
        for word, vec in vectors.items():
            embedding.weight[vocab.stoi[word]] = torch.from_numpy(vec)
    log.info(
        "%s: vectors for %d of %d vocabulary words (%.1f%%)",
        path,
        len(vectors),
        len(vocab),
        100 * len(vectors) / max(1, len(vocab)),
    )
    return len(vectors)


class TokenEncoder:
    """Tokens → the ids a :class:`TokenEmbedder` reads: token ids (lowercased first if asked)
    and, with a character vocabulary, each word's character ids (words longer than
    ``max_word_len`` keep their first and last characters: prefixes and suffixes carry the
    morphology)."""

    def __init__(
        self, vocab: Vocab, chars: Vocab | None, lowercase: bool = False, max_word_len: int = 20
    ):
        self.vocab = vocab
        self.chars = chars
        self.lowercase = lowercase
        self.max_word_len = max(1, max_word_len)

    def ids(self, tokens: Sequence[str]) -> list[int]:
        if self.lowercase:
            tokens = [t.lower() for t in tokens]
        return self.vocab.encode(tokens, unknown="unk")

    def char_ids(self, tokens: Sequence[str]) -> np.ndarray | None:
        """``(len(tokens), C)`` int64, C = the longest kept word, 0-padded; None without chars."""
        if self.chars is None:
            return None
        m = self.max_word_len
        words = [t if len(t) <= m else t[: m // 2] + t[len(t) - (m - m // 2) :] for t in tokens]
        out = np.zeros((len(words), max(1, max(map(len, words), default=1))), dtype=np.int64)
        stoi, unk = self.chars.stoi, self.chars.unk_id
        for i, w in enumerate(words):
            out[i, : len(w)] = [stoi.get(c, unk) for c in w]
        return out


def char_vocab(token_lists: Sequence[Sequence[str]]) -> Vocab:
    """Characters of the training tokens (``<pad>`` = 0, ``<unk>`` = 1)."""
    seen = {c for tokens in token_lists for t in tokens for c in t}
    return Vocab(sorted(seen), specials=CHAR_SPECIALS, level="char")


@dataclass
class Example:
    """One encoded sequence: token ``ids`` (or numeric ``features (T, F)``), optional ``chars
    (T, C)``, and its ``target`` (a class id, or one tag id per step)."""

    length: int
    target: int | list[int]
    ids: list[int] | None = None
    chars: np.ndarray | None = None
    features: np.ndarray | None = None


def collate(items: Sequence[Example]) -> dict[str, Tensor | None]:
    """Pad a list of :class:`Example` into a batch: ``inputs (B, T)`` ids or ``(B, T, F)``
    values, ``lengths (B,)``, ``mask (B, T)``, ``chars (B, T, C)`` or None, ``targets`` (B,) or
    (B, T) (0 on padding: read it through the mask)."""
    lengths = torch.tensor([it.length for it in items], dtype=torch.int64)  # (B,)
    if items[0].features is not None:
        inputs, _ = pad_sequences([torch.from_numpy(it.features) for it in items], 0.0)
    else:
        inputs, _ = pad_sequences([torch.tensor(it.ids, dtype=torch.int64) for it in items], 0)
    T = inputs.shape[1]
    mask = torch.arange(T).unsqueeze(0) < lengths.unsqueeze(1)  # (B, T)
    chars = None
    if items[0].chars is not None:
        C = max(it.chars.shape[1] for it in items)
        buf = np.zeros((len(items), T, C), dtype=np.int64)
        for b, it in enumerate(items):
            buf[b, : it.chars.shape[0], : it.chars.shape[1]] = it.chars
        chars = torch.from_numpy(buf)  # (B, T, C)
    if isinstance(items[0].target, int):
        targets = torch.tensor([it.target for it in items], dtype=torch.int64)  # (B,)
    else:
        targets, _ = pad_sequences([torch.tensor(it.target, dtype=torch.int64) for it in items])
    return {"inputs": inputs, "lengths": lengths, "mask": mask, "chars": chars, "targets": targets}


def to_device(batch: dict[str, Tensor | None], device: torch.device) -> dict[str, Any]:
    """Every tensor of a batch on ``device``, except ``lengths`` (kept on the CPU for packing)."""
    return {
        k: (v.to(device) if isinstance(v, Tensor) and k != "lengths" else v)
        for k, v in batch.items()
    }


def bucket_batches(
    lengths: Sequence[int], batch_size: int, rng: np.random.Generator, pool: int = 50
) -> list[list[int]]:
    """Random batches of similar lengths (less padding, so less wasted work): shuffle, sort each
    pool of ``pool × batch_size`` examples by length, cut it into batches, shuffle the batches.
    Always ``ceil(N / batch_size)`` batches, every index exactly once."""
    order = rng.permutation(len(lengths))
    span = pool * batch_size
    batches = []
    for s in range(0, len(order), span):
        chunk = sorted(order[s : s + span].tolist(), key=lambda i: lengths[i])
        batches += [chunk[k : k + batch_size] for k in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Deterministic evaluation batches of similar lengths."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[k : k + batch_size] for k in range(0, len(order), batch_size)]


def split_holdout(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """A deterministic random split of ``range(n)`` into (kept, held out ≈ fraction·n)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"valid_fraction must be in (0, 1) when no --valid file; got {fraction}")
    order = np.random.default_rng(seed).permutation(n)
    cut = max(1, int(round(n * fraction)))
    if cut >= n:
        raise DataError(f"only {n} examples: too few to hold out {fraction:.0%} for validation")
    return sorted(order[cut:].tolist()), sorted(order[:cut].tolist())


def pool_sequence(
    y: Tensor,
    lengths: Tensor,
    mode: str,
    bidirectional: bool = False,
    attention: AttentionPooling | None = None,
) -> Tensor:
    """One vector per sequence from ``y (B, T, F)`` over each sequence's first ``lengths[b]``
    steps (see the module docstring for the four modes); ``(B, F)``."""
    B, T, Fdim = y.shape
    lengths = lengths.to(y.device)
    mask = torch.arange(T, device=y.device).unsqueeze(0) < lengths.unsqueeze(1)  # (B, T)
    if mode == "last":
        last = y[torch.arange(B, device=y.device), lengths - 1]  # (B, F)
        if not bidirectional:
            return last
        H = Fdim // 2
        return torch.cat([last[:, :H], y[:, 0, H:]], -1)  # backward direction ends at step 1
    if mode == "mean":
        return (y * mask.unsqueeze(2)).sum(1) / lengths.unsqueeze(1).to(y.dtype)
    if mode == "max":
        return y.masked_fill(~mask.unsqueeze(2), -math.inf).amax(1)
    if mode == "attention":
        if attention is None:
            raise ValueError("attention pooling needs an AttentionPooling module")
        return attention(y, mask)
    raise ValueError(f"pooling must be one of {POOLINGS}; got {mode!r}")


class AttentionPooling(nn.Module):
    """u_t = tanh(W y_t + b), a_t = v·u_t, α = softmax over real steps, z = Σ_t α_t y_t."""

    def __init__(self, input_size: int, attention_size: int):
        super().__init__()
        self.proj = nn.Linear(input_size, attention_size)
        self.score = nn.Linear(attention_size, 1, bias=False)

    def weights(self, y: Tensor, mask: Tensor) -> Tensor:
        """α ``(B, T)``: zero on padding, summing to one over each sequence."""
        a = self.score(torch.tanh(self.proj(y))).squeeze(-1)  # (B, T)
        return torch.softmax(a.masked_fill(~mask, -math.inf), dim=1)

    def forward(self, y: Tensor, mask: Tensor) -> Tensor:
        return torch.einsum("bt,btf->bf", self.weights(y, mask), y)  # (B, F)


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------
def _parse_names(spec: str | None) -> dict[str, str]:
    names: dict[str, str] = {}
    for part in (spec or "").split(","):
        if part.strip():
            if "=" not in part:
                raise DataError(f"label_names: expected 'label=name' pairs, got {part.strip()!r}")
            k, v = part.split("=", 1)
            names[k.strip()] = v.strip()
    return names


class Classifier(nn.Module):
    """Embedding (or numeric steps) → recurrent encoder → pooling → linear; ``forward`` returns
    logits ``(B, K)``. Inference: :meth:`predict`; evaluation: :meth:`evaluate_file`."""

    def __init__(self, config: ClassifierConfig, data_config: ClassifierData, vocab: Vocab | None):
        super().__init__()
        c, d = config, data_config
        if not d.labels:
            raise ValueError("data_config.labels is empty: build the model through the task")
        if c.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}; got {c.pooling!r}")
        self.config = config
        self.data_config = data_config
        self.labels = list(d.labels)
        self.names = _parse_names(d.label_names)
        self.numeric = d.format == "numeric"
        self.vocab = None if self.numeric else vocab
        self.embedder = None
        if self.numeric:
            input_size = d.step_size
            self.encoder = None
        else:
            if vocab is None:
                raise ValueError("a text classifier needs a vocabulary")
            chars = (
                Vocab(d.chars, specials=CHAR_SPECIALS, level="char")
                if c.char_repr != "none" and d.level == "word"
                else None
            )
            self.encoder = TokenEncoder(vocab, chars, d.lowercase, d.max_word_len)
            self.embedder = TokenEmbedder(
                len(vocab),
                c.embed_size,
                vocab.unk_id,
                c.char_repr if chars is not None else "none",
                len(chars) if chars is not None else 0,
                c.char_embed_size,
                c.char_hidden_size,
                c.char_kernel,
                c.word_dropout,
                c.embed_init,
            )
            input_size = self.embedder.out_size
        self.rnn = make_recurrent(
            c.cell,
            input_size,
            c.hidden_size,
            c.num_layers,
            c.bidirectional,
            c.dropout,
            c.nonlinearity,
            c.init,
            c.forget_bias,
            c.layer_norm,
        )
        features = c.hidden_size * (2 if c.bidirectional else 1)
        self.attention = (
            AttentionPooling(features, c.attention_size) if c.pooling == "attention" else None
        )
        self.drop = nn.Dropout(c.dropout)
        self.head = nn.Linear(features, len(self.labels))

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def forward(
        self,
        inputs: Tensor,
        state=None,
        targets: Tensor | None = None,
        *,
        lengths: Tensor | None = None,
        chars: Tensor | None = None,
    ) -> Output:
        """``inputs (B, T)`` ids or ``(B, T, F)`` values, ``lengths (B,)`` (default: all T) →
        ``Output(logits (B, K), loss, state)``; the loss is the mean cross-entropy."""
        B, T = inputs.shape[:2]
        if lengths is None:
            lengths = torch.full((B,), T, dtype=torch.int64)
        lengths = lengths.cpu()
        mask = (torch.arange(T).unsqueeze(0) < lengths.unsqueeze(1)).to(inputs.device)
        if self.embedder is None:
            x = inputs  # numbers are read as they are: no dropout on raw pixels
        else:
            x = self.drop(self.embedder(inputs, chars, mask))  # (B, T, E)
        y, state = self.rnn(x, state, lengths=lengths)  # (B, T, D·H)
        z = pool_sequence(
            y, lengths, self.config.pooling, self.config.bidirectional, self.attention
        )
        logits = self.head(self.drop(z))  # (B, K)
        loss = F.cross_entropy(logits, targets) if targets is not None else None
        return Output(logits, loss, state)

    def forward_batch(self, batch: dict[str, Any]) -> Output:
        b = to_device(batch, self.device)
        return self(b["inputs"], targets=b["targets"], lengths=b["lengths"], chars=b["chars"])

    # -- encoding ---------------------------------------------------------------------------
    def tokenize(self, text: str) -> list[str]:
        d = self.data_config
        if d.lowercase:
            text = text.lower()
        tokens = text.split() if d.level == "word" else list(text)
        return tokens[: d.max_len] if d.max_len else tokens

    def encode(self, x: str | Sequence[float], target: int = 0, where: str = "") -> Example:
        """One input (a text, or a row of numbers / a string of them) as an :class:`Example`."""
        if self.numeric:
            return self._encode_numbers(x, target, where)
        if not isinstance(x, str):
            raise DataError(f"{where}expected a text, got {type(x).__name__}")
        tokens = self.tokenize(x)
        if not tokens:
            raise DataError(f"{where}the text has no tokens")
        return Example(len(tokens), target, self.encoder.ids(tokens), self.encoder.char_ids(tokens))

    def _encode_numbers(self, x, target: int, where: str) -> Example:
        d = self.data_config
        if isinstance(x, str):
            parts = [p for p in re.split(r"[,\s]+", x.strip()) if p]
            try:
                x = [float(p) for p in parts]
            except ValueError:
                raise DataError(f"{where}expected numbers separated by commas or spaces") from None
        values = np.asarray(x, dtype=np.float32).reshape(-1)
        if values.size != d.num_features:
            raise DataError(
                f"{where}expected {d.num_features} numbers per example, found {values.size}"
            )
        if not np.isfinite(values).all():
            raise DataError(f"{where}the values must be finite numbers")
        steps = values.reshape(-1, d.step_size) / (d.feature_scale or 1.0)  # (T, F)
        return Example(steps.shape[0], target, features=np.ascontiguousarray(steps))

    def label_name(self, label: str) -> str:
        return self.names.get(label, label)

    # -- inference ----------------------------------------------------------------------------
    @torch.no_grad()
    def probabilities(self, examples: Sequence[Example], batch_size: int = 256) -> Tensor:
        """softmax(logits) for each example, ``(N, K)``, in the given order."""
        self.eval()
        out = torch.empty(len(examples), len(self.labels))
        for idx in length_sorted_batches([e.length for e in examples], batch_size):
            logits = self.forward_batch(collate([examples[i] for i in idx])).logits
            out[idx] = torch.softmax(logits.float(), -1).cpu()
        return out

    def _check_ensemble(self, ensemble: Sequence[Classifier]) -> list[Classifier]:
        members = [self, *ensemble]
        for m in ensemble:
            if not isinstance(m, Classifier) or m.labels != self.labels:
                raise ValueError(
                    "ensemble members must be classify runs with the same classes "
                    f"({', '.join(self.labels)})"
                )
        return members

    def ensemble_probabilities(self, encode, ensemble: Sequence[Classifier] = ()) -> Tensor:
        """p(y | x) averaged over this model and the ``ensemble`` members, (1/M) Σ_m p_m(y | x);
        ``encode(model)`` gives the examples as that model encodes them (its own vocabulary)."""
        members = self._check_ensemble(ensemble)
        return sum(m.probabilities(encode(m)) for m in members) / len(members)

    def predict(
        self, inputs: Sequence[str | Sequence[float]], ensemble: Sequence[Classifier] = ()
    ) -> list[dict[str, Any]]:
        """For each input: ``label`` (its display name), ``probability`` and every class's
        ``probabilities`` (averaged over the ``ensemble`` members too, when given)."""

        def encode(model: Classifier) -> list[Example]:
            return [model.encode(x, where=f"input {i + 1}: ") for i, x in enumerate(inputs)]

        probs = self.ensemble_probabilities(encode, ensemble)
        results = []
        for x, p in zip(inputs, probs.tolist()):
            k = int(np.argmax(p))
            results.append(
                {
                    "input": x if isinstance(x, str) else list(map(float, x)),
                    "label": self.label_name(self.labels[k]),
                    "probability": p[k],
                    "probabilities": {self.label_name(lab): q for lab, q in zip(self.labels, p)},
                }
            )
        return results

    @torch.no_grad()
    def evaluate_examples(self, examples: Sequence[Example], batch_size: int = 256) -> dict:
        """Mean cross-entropy ``loss`` and the :func:`~rnnkit.metrics.classification_report`."""
        return self._report(self.probabilities(examples, batch_size), examples)

    def _report(self, probs: Tensor, examples: Sequence[Example]) -> dict:
        gold = torch.tensor([e.target for e in examples])
        loss = float(F.nll_loss(torch.log(probs.clamp_min(1e-12)), gold))
        pred = probs.argmax(1).tolist()
        report = classification_report(gold.tolist(), pred, list(range(len(self.labels))))
        report["labels"] = [self.label_name(x) for x in self.labels]
        report["per_class"] = dict(zip(report["labels"], report["per_class"].values()))
        return {"loss": loss, **report}

    def evaluate_file(
        self,
        path: str | None = None,
        confusion: str | None = None,
        encoding: str | None = None,
        ensemble: Sequence[Classifier] = (),
    ) -> dict[str, Any]:
        """Accuracy, macro-F1, per-class precision/recall and the confusion matrix on a file in
        the run's format (default: the run's validation data); ``confusion`` writes the PNG.
        With ``ensemble`` the class probabilities are averaged over this model and the members."""
        d = self.data_config
        if path is None:
            raw, where = read_split(d, "valid"), f"validation split ({d.valid or d.data})"
        else:
            raw, where = read_examples(d, path, encoding or d.encoding), str(path)
        examples = encode_all(self, raw, where)
        if ensemble:
            probs = self.ensemble_probabilities(
                lambda m: examples if m is self else encode_all(m, raw, where), ensemble
            )
            result = {"data": where, "members": 1 + len(ensemble), **self._report(probs, examples)}
        else:
            result = {"data": where, **self.evaluate_examples(examples)}
        if confusion:
            plot_confusion_matrix(result["confusion"], result["labels"], confusion)
            result["confusion_png"] = str(confusion)
        return result

    @staticmethod
    def format_evaluation(result: dict[str, Any]) -> str:
        lines = [
            f"{result['data']}: {result['examples']:,} examples, accuracy {result['accuracy']:.2%}, "
            f"macro-F1 {result['macro_f1']:.4f}, loss {result['loss']:.4f}",
            f"{'class':>16}  {'precision':>9}  {'recall':>7}  {'f1':>6}  {'support':>7}",
        ]
        for label, s in result["per_class"].items():
            lines.append(
                f"{label:>16}  {s['precision']:>9.4f}  {s['recall']:>7.4f}  {s['f1']:>6.4f}  "
                f"{s['support']:>7}"
            )
        if result.get("confusion_png"):
            lines.append(f"confusion matrix: {result['confusion_png']}")
        return "\n".join(lines)


def format_prediction(result: dict[str, Any]) -> str:
    """``label  probability  input`` on one line."""
    shown = result["input"]
    if not isinstance(shown, str):
        shown = ",".join(f"{v:g}" for v in shown)
    return f"{result['label']:>12}  {result['probability']:.4f}  {shown}"


# ---------------------------------------------------------------------------------------------
# Data preparation
# ---------------------------------------------------------------------------------------------
@dataclass
class RawExamples:
    """Examples as read: ``inputs`` (texts, or rows of numbers), ``labels``, source ``lines``."""

    inputs: list[Any]
    labels: list[str]
    lines: list[int]
    path: str

    def subset(self, idx: Sequence[int]) -> RawExamples:
        return RawExamples(
            [self.inputs[i] for i in idx],
            [self.labels[i] for i in idx],
            [self.lines[i] for i in idx],
            self.path,
        )


def read_examples(d: ClassifierData, path: str, encoding: str | None = None) -> RawExamples:
    enc = encoding or d.encoding
    if d.format == "numeric":
        rows = read_numeric_rows(
            path, d.label_column, encoding=enc, skip_bad_lines=d.skip_bad_lines
        )
        return RawExamples(list(rows.features), rows.labels, rows.lines, str(path))
    items = read_classification(
        path, d.format, d.text_column, d.label_column, enc, d.skip_bad_lines
    )
    return RawExamples(
        [e.text for e in items], [e.label for e in items], [e.line for e in items], str(path)
    )


def read_split(d: ClassifierData, part: str) -> RawExamples:
    """The ``train`` or ``valid`` examples: the files given, or a seeded hold-out of --data."""
    if not d.data:
        raise DataError("no training data: pass --data FILE (see recipes/ for examples)")
    if d.valid:
        return read_examples(d, d.data if part == "train" else d.valid)
    everything = read_examples(d, d.data)
    kept, held = split_holdout(len(everything.labels), d.valid_fraction, d.split_seed)
    return everything.subset(kept if part == "train" else held)


def _label_order(labels: Sequence[str]) -> list[str]:
    distinct = set(labels)
    try:
        return sorted(distinct, key=lambda s: (float(s), s))  # numeric labels in numeric order
    except ValueError:
        return sorted(distinct)


def encode_all(model: Classifier, raw: RawExamples, where: str) -> list[Example]:
    index = {label: k for k, label in enumerate(model.labels)}
    out = []
    for x, label, line in zip(raw.inputs, raw.labels, raw.lines):
        if label not in index:
            raise DataError(
                f"label {label!r} was not among the training labels {model.labels[:10]}",
                raw.path,
                line,
            )
        try:
            out.append(model.encode(x, index[label]))
        except DataError as e:
            raise DataError(e.message, raw.path, line) from None
    if not out:
        raise DataError(f"{where}: no examples")
    return out


def resolve_data(d: ClassifierData, train: RawExamples) -> Vocab | None:
    """Fill the data config's derived fields from the training examples (labels, character
    vocabulary, numeric width and scale) and build the token vocabulary (None for numbers)."""
    d.labels = _label_order(train.labels)
    if len(d.labels) < 2:
        raise DataError(f"only one label ({d.labels[0]!r}) in the training data", train.path)
    if d.format == "numeric":
        width = len(train.inputs[0])
        if d.step_size < 1 or width % d.step_size:
            raise DataError(
                f"each row has {width} numbers, not a multiple of step_size {d.step_size}",
                train.path,
            )
        d.num_features = width
        d.feature_scale = float(np.abs(np.stack(train.inputs)).max()) or 1.0
        return None
    texts = [t.lower() if d.lowercase else t for t in train.inputs]
    tokens = [t.split()[: d.max_len] if d.level == "word" else list(t) for t in texts]
    vocab = Vocab.build(tokens, level=d.level, max_size=d.max_vocab, min_freq=d.min_freq)
    if d.level == "word":
        d.chars = char_vocab(tokens).itos[len(CHAR_SPECIALS) :]
    return vocab


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------
class BucketedBatches(IndependentBatches):
    """Mixin: each epoch's batches group examples of similar ``_sort_keys`` (lengths), in an
    order drawn from (seed, epoch) so a resumed run sees the same batches. Needs ``train``,
    ``batch_size``, ``seed``, ``_sort_keys`` and ``_epoch, _plan = -1, []``."""

    def batches_per_epoch(self) -> int:
        return math.ceil(len(self.train) / self.batch_size)

    def _plan_for(self, epoch: int) -> list[list[int]]:
        if epoch != self._epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._plan = bucket_batches(self._sort_keys, self.batch_size, rng)
            self._epoch = epoch
        return self._plan

    def start_epoch(self, epoch: int) -> None:
        self._plan_for(epoch)


class ClassificationTraining(BucketedBatches):
    """Shuffled, length-bucketed batches for :func:`rnnkit.train.fit`; epoch e's order comes from
    a generator seeded with (seed, e), so a resumed run sees exactly the same batches."""

    tokens_name = "seq"

    def __init__(
        self,
        model: nn.Module,
        train: list[Example],
        valid: list[Example],
        batch_size: int,
        seed: int,
    ):
        if not train:
            raise DataError("no training examples")
        self.model = model
        self.train = train
        self.valid = valid
        self.batch_size = batch_size
        self.seed = seed
        self._sort_keys = [e.length for e in train]
        self._epoch, self._plan = -1, []

    def batch(self, epoch: int, index: int) -> dict[str, Tensor | None]:
        return collate([self.train[i] for i in self._plan_for(epoch)[index]])

    def training_loss(self, model, batch) -> tuple[Tensor, int]:
        out = model.forward_batch(batch)
        return out.loss, int(batch["lengths"].numel())

    def evaluate(self, model) -> dict[str, float]:
        m = model.evaluate_examples(self.valid)
        return {k: m[k] for k in ("loss", "accuracy", "macro_f1")}


# ---------------------------------------------------------------------------------------------
# Task registry entry
# ---------------------------------------------------------------------------------------------
class _ClassifyTask:
    """Classify whole sequences: text (sentiment, topics) or rows of numbers (digits)."""

    name = "classify"
    sections = {"model": ClassifierConfig, "data": ClassifierData}

    def build(self, configs: dict[str, Any], train_cfg, device):
        model_cfg: ClassifierConfig = configs["model"]
        data_cfg: ClassifierData = configs["data"]
        train_raw = read_split(data_cfg, "train")
        valid_raw = read_split(data_cfg, "valid")
        vocab = resolve_data(data_cfg, train_raw)
        model = Classifier(model_cfg, data_cfg, vocab).to(device)
        if data_cfg.embeddings:
            if model.embedder is None:
                raise DataError("--embeddings needs text input (not format=numeric)")
            load_word_vectors(model.embedder.embedding, vocab, data_cfg.embeddings)
        log.info(
            "data: %d training and %d validation examples, %d classes %s%s",
            len(train_raw.labels),
            len(valid_raw.labels),
            len(data_cfg.labels),
            data_cfg.labels[:10],
            f", vocabulary of {len(vocab)} {data_cfg.level}s" if vocab is not None else "",
        )
        return model, self._training(model, train_raw, valid_raw, train_cfg)

    @staticmethod
    def _training(model, train_raw, valid_raw, train_cfg) -> ClassificationTraining:
        train = encode_all(model, train_raw, "training data")
        valid = encode_all(model, valid_raw, "validation data")
        seed = train_cfg.seed if train_cfg is not None else 0
        batch = train_cfg.batch_size if train_cfg is not None else 32
        return ClassificationTraining(model, train, valid, batch, seed)

    def restore(self, saved: dict[str, Any], vocab, device, train_cfg=None, with_data=False):
        from rnnkit.config import from_dict

        model_cfg = from_dict(ClassifierConfig, saved["model"])
        data_cfg = from_dict(ClassifierData, saved["data"])
        model = Classifier(model_cfg, data_cfg, vocab).to(device)
        training = None
        if with_data:
            training = self._training(
                model, read_split(data_cfg, "train"), read_split(data_cfg, "valid"), train_cfg
            )
        return model, training


TASK = _ClassifyTask()
