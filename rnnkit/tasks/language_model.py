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

import contextlib
import heapq
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.config import field_meta as _opt
from rnnkit.data.batching import StreamBatches
from rnnkit.data.readers import TINY_SHAKESPEARE, bundled_path, read_text, split_text
from rnnkit.data.vocab import EOS, Vocab
from rnnkit.distributed import Dist
from rnnkit.errors import DataError
from rnnkit.layers import GRU, LSTM, RNN
from rnnkit.regularizers import norm_stabilizer
from rnnkit.state import detach_state
from rnnkit.tasks.base import Output

__all__ = [
    "LanguageModelConfig",
    "LanguageModelData",
    "LanguageModel",
    "WindowLanguageModel",
    "TextModel",
    "build_language_model",
    "LanguageModelTraining",
    "TASK",
]

log = logging.getLogger(__name__)

LAYERS = {"lstm": LSTM, "gru": GRU, "rnn": RNN}


@dataclass
class LanguageModelConfig:
    """Architecture of a recurrent language model."""

    model: str = field(
        default="rnn",
        metadata=_opt(
            "rnn (recurrent) or window (feed-forward over the previous N tokens)", ("rnn", "window")
        ),
    )
    window: int = field(default=8, metadata=_opt("window model: how many previous tokens it sees"))
    cell: str = field(default="lstm", metadata=_opt("recurrent cell", ("lstm", "gru", "rnn")))
    embed_size: int = field(default=64, metadata=_opt("embedding width"))
    hidden_size: int = field(default=384, metadata=_opt("recurrent state width"))
    num_layers: int = field(default=1, metadata=_opt("stacked recurrent layers"))
    dropout: float = field(
        default=0.1, metadata=_opt("dropout on embeddings, between layers and before the decoder")
    )
    dropout_mode: str = field(
        default="standard",
        metadata=_opt(
            "standard or variational (one mask per sequence)", ("standard", "variational")
        ),
    )
    embed_dropout: float = field(
        default=0.0, metadata=_opt("drop whole embedding rows (words) with this probability")
    )
    weight_drop: float = field(
        default=0.0, metadata=_opt("DropConnect on hidden-to-hidden weights")
    )
    zoneout: float = field(default=0.0, metadata=_opt("zoneout probability"))
    layer_norm: bool = field(default=False, metadata=_opt("layer-normalised cells"))
    peephole: bool = field(default=False, metadata=_opt("peephole connections (LSTM)"))
    forget_bias: float = field(default=0.0, metadata=_opt("initial forget-gate bias (LSTM)"))
    nonlinearity: str = field(default="tanh", metadata=_opt("RNN nonlinearity", ("tanh", "relu")))
    init: str = field(
        default="default",
        metadata=_opt("RNN init: default or identity (IRNN)", ("default", "identity")),
    )
    reset_after: bool = field(
        default=True, metadata=_opt("GRU form: torch's (true) or Cho 2014 (false)")
    )
    tie_weights: bool = field(
        default=False,
        metadata=_opt("share the embedding and decoder matrix (needs embed_size == hidden_size)"),
    )
    norm_stabilizer: float = field(
        default=0.0,
        metadata=_opt("β of the norm-stabiliser penalty β·mean_t (‖h_t‖ − ‖h_{t−1}‖)² (0 = off)"),
    )
    init_range: float | None = field(
        default=None, metadata=_opt("if set, every weight ~ U(-r, r) (Zaremba et al.)")
    )
    time_reduction: str = field(
        default="mean",
        metadata=_opt("loss over time steps: mean, or sum (Zaremba et al.)", ("mean", "sum")),
    )
    softmax: str = field(
        default="full",
        metadata=_opt(
            "output layer: full softmax, or adaptive (Grave et al. 2017; word and BPE models)",
            ("full", "adaptive"),
        ),
    )
    cutoffs: str = field(
        default="2000,10000",
        metadata=_opt("adaptive softmax: ids where the head ends and each tail cluster ends"),
    )


@dataclass
class LanguageModelData:
    """Where the text comes from and how it is cut into training windows."""

    data: str | None = field(
        default=None,
        metadata=_opt(
            "training text file, or a folder made by `rnnkit prepare lm` (default: bundled "
            "Tiny Shakespeare); a text file over 64 MB, or any at --level bpe, is prepared into "
            "a cache folder first"
        ),
    )
    data_dir: str | None = field(
        default=None,
        metadata=_opt("directory with *train.txt and *valid.txt (e.g. PTB's ptb.train.txt)"),
    )
    valid: str | None = field(
        default=None,
        metadata=_opt("validation text file (default: the last valid_fraction of data)"),
    )
    valid_fraction: float = field(
        default=0.1, metadata=_opt("share of data held out when no --valid file")
    )
    encoding: str = field(default="utf-8", metadata=_opt("text encoding of the files"))
    level: str = field(
        default="char",
        metadata=_opt("char, word or bpe (byte-level subwords) tokens", ("char", "word", "bpe")),
    )
    bptt: int = field(default=64, metadata=_opt("truncated-BPTT window (time steps per update)"))
    max_vocab: int | None = field(
        default=None, metadata=_opt("word level: keep the most frequent N words")
    )
    min_freq: int = field(default=1, metadata=_opt("word level: drop words rarer than this"))
    vocab_size: int = field(default=8000, metadata=_opt("bpe level: vocabulary to train"))


def tokenize_text(text: str, level: str) -> list[str]:
    """Characters, or words with ``<eos>`` at every line break (the PTB convention)."""
    if level == "char":
        return list(text)
    out: list[str] = []
    for i, line in enumerate(text.split("\n")):
        if i:
            out.append(EOS)
        out.extend(line.split())
    return out


class TextModel(nn.Module):
    """Inference over text shared by every language model (recurrent or windowed).

    Subclasses define ``forward(inputs (B, T), state, targets) -> Output`` whose ``state``
    summarises everything read so far, and ``decoder`` (for the device).
    """

    config: LanguageModelConfig
    vocab: Vocab

    @property
    def device(self) -> torch.device:
        return self.embedding.weight.device

    # -- text helpers -------------------------------------------------------------------------
    def tokens(self, text: str) -> list[str]:
        return tokenize_text(text, self.vocab.level)

    def encode(self, text: str, unknown: str | None = None) -> list[int]:
        """Text → ids. Characters outside a char vocabulary are an error (or ``unknown="drop"``);
        out-of-vocabulary words map to ``<unk>`` with a warning that names them; byte-level BPE
        encodes any text."""
        if self.vocab.level == "bpe":
            return self.vocab.encode(text)
        toks = self.tokens(text)
        if unknown is None:
            unknown = "error" if self.vocab.level == "char" else "unk"
        if unknown == "unk" and self.vocab.level == "word":
            oov = sorted({t for t in toks if t not in self.vocab})
            if oov:
                log.warning("words not in the vocabulary, read as <unk>: %s", ", ".join(oov[:20]))
        try:
            return self.vocab.encode(toks, unknown=unknown)
        except DataError as e:
            raise DataError(f"{e.message}; pass --drop-unknown to leave them out") from None

    def default_context(self) -> str:
        """What generation and scoring condition on when given no prompt: a line start."""
        if self.vocab.level in ("word", "bpe") or "\n" in self.vocab:
            return "\n"
        return self.vocab.itos[len(self.vocab.specials)]

    def _render(self, ids: list[int]) -> str:
        """Ids → text; at word level ``<eos>`` becomes a line break; BPE decodes its bytes."""
        if self.vocab.level == "bpe":
            return self.vocab.decode(ids)
        if self.vocab.level == "char":
            return "".join(self.vocab.itos[i] for i in ids)
        text = ""
        for i in ids:
            word = "\n" if i == self.vocab.eos_id else self.vocab.itos[i]
            text += word if (not text or text.endswith("\n") or word == "\n") else " " + word
        return text

    @torch.no_grad()
    def _advance(self, ids: list[int], state=None, chunk: int = 512):
        """Feed ``ids`` (one sequence) through the model; returns (last logits (V,), state)."""
        logits = None
        for s in range(0, len(ids), chunk):
            x = torch.tensor([ids[s : s + chunk]], device=self.device)
            out = self(x, state)
            logits, state = out.logits[0, -1], out.state
        return logits, state

    # -- inference ----------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        prompt: str = "",
        length: int = 500,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        on_text: Callable[[str], None] | None = None,
        unknown: str | None = None,
    ) -> str:
        """Sample ``length`` tokens after ``prompt``; returns the new text (prompt excluded).

        x_{t+1} ~ softmax(logits / T) restricted to the top-k tokens and/or the smallest set whose
        probability reaches p; temperature 0 is greedy (argmax). ``on_text`` receives each
        token's text as it is sampled (streaming).
        """
        self.eval()
        context = prompt if prompt else self.default_context()
        ids = self.encode(context, unknown)
        if not ids:
            raise DataError("the prompt has no characters left after dropping unknown ones")
        gen = torch.Generator(device=self.device)
        gen.manual_seed(seed if seed is not None else torch.seed())
        logits, state = self._advance(ids)
        new_ids: list[int] = []
        banned = [
            i
            for i in range(len(self.vocab.specials))
            if i != self.vocab.eos_id or self.vocab.level != "word"
        ]  # words may end a line; nothing else special
        shown = 0
        for _ in range(length):
            logits = logits.clone()
            logits[banned] = -math.inf
            nxt = sample_next(logits, temperature, top_k, top_p, gen)
            new_ids.append(nxt)
            if on_text is not None:
                text = self._render(new_ids)
                if not text.endswith("\ufffd"):  # a BPE byte may end mid-character: wait
                    on_text(text[shown:])
                    shown = len(text)
            logits, state = self._advance([nxt], state)
        return self._render(new_ids)

    @torch.no_grad()
    def log_probs(
        self, text: str, context: str | None = None, unknown: str | None = None
    ) -> Tensor:
        """log p(x_t | context, x_<t) for every token of ``text`` (context not scored)."""
        self.eval()
        context = self.default_context() if context is None else context
        ctx, ids = self.encode(context, unknown), self.encode(text, unknown)
        if not ids:
            raise DataError("nothing to score: the text is empty")
        full = ctx + ids
        if not ctx:  # no context: the first token has nothing to be predicted from
            full, ids = ids, ids[1:]
        x = torch.tensor([full[:-1]], device=self.device)
        targets = torch.tensor([full[1:]], device=self.device)
        per_token = self.target_log_probs(x, targets)[0][0]  # (len-1,)
        return per_token[len(per_token) - len(ids) :]

    def target_log_probs(self, inputs: Tensor, targets: Tensor, state=None):
        """``(log p(targets | inputs), state)``: per-token log-probabilities ``(B, T)``."""
        out = self(inputs, state)
        lp = torch.log_softmax(out.logits.float(), -1)  # (B, T, V)
        return lp.gather(2, targets.unsqueeze(2)).squeeze(2), out.state

    def score(
        self, text: str, context: str | None = None, unknown: str | None = None
    ) -> dict[str, Any]:
        """Total log-probability of ``text`` and its per-token rates.

        log p(text) = Σ_t log p(x_t | x_<t); nats/token = −log p / n; bits = nats / ln 2;
        perplexity = exp(nats/token). The first token is conditioned on ``context`` (a line start
        by default).
        """
        lp = self.log_probs(text, context, unknown)
        total = float(lp.sum())
        n = lp.numel()
        nats = -total / n
        return {
            "text": text,
            "log_prob": total,
            "tokens": n,
            "nats_per_token": nats,
            "bits_per_token": nats / math.log(2),
            "perplexity": math.exp(nats),
        }

    @torch.no_grad()
    def complete(
        self,
        text: str,
        k: int = 5,
        beam_size: int | None = None,
        max_chars: int = 24,
        unknown: str | None = None,
    ) -> list[dict[str, Any]]:
        """The ``k`` most likely ways to finish the word being typed at the end of ``text``.

        Beam search over characters until each candidate emits a word boundary (space,
        punctuation, line end). A completion's probability is p(continuation + boundary | text):
        the probability that the word is exactly this one, summed over every boundary character
        that may follow. Returns dicts with ``word`` (the whole word), ``continuation`` (what to
        type), ``boundary`` (the likeliest character after it), ``probability`` and ``log_prob``.
        """
        if self.vocab.level == "bpe":
            return self._complete_subwords(text, k, beam_size or max(2 * k, 8), max_chars, unknown)
        if self.vocab.level != "char":
            raise ValueError("complete() on a word-level model: use next_words()")
        self.eval()
        beam_size = beam_size or max(2 * k, 8)
        prefix = ""
        for ch in reversed(text):
            if _is_boundary(ch):
                break
            prefix = ch + prefix
        # condition exactly as score() does, so p(word) = exp(score(text + word) − score(text))
        logits, state = self._advance(self.encode(self.default_context() + text, unknown))
        specials = len(self.vocab.specials)
        itos = self.vocab.itos
        boundary_ids = torch.tensor(
            [i for i in range(specials, len(itos)) if _is_boundary(itos[i])], device=self.device
        )
        beams = [(0.0, "", logits, state)]  # (log prob, continuation, next logits, state)
        finished: list[tuple[float, str, str]] = []
        for _ in range(max_chars):
            candidates = []
            for lp, cont, lg, st in beams:
                logp = torch.log_softmax(lg.float(), -1)
                logp[:specials] = -math.inf
                if (prefix + cont) and boundary_ids.numel():
                    # the word ends here: any boundary character may follow, so sum them all
                    ends = logp[boundary_ids]
                    finished.append(
                        (
                            lp + float(torch.logsumexp(ends, 0)),
                            cont,
                            itos[int(boundary_ids[int(ends.argmax())])],
                        )
                    )
                logp[boundary_ids] = -math.inf
                top = torch.topk(logp, min(beam_size, logp.numel() - specials))
                for value, idx in zip(top.values.tolist(), top.indices.tolist()):
                    if value > -math.inf:
                        candidates.append((lp + value, cont + itos[idx], idx, st))
            if not candidates:
                break
            best = heapq.nlargest(beam_size, candidates, key=lambda c: c[0])
            if len(finished) >= k and best[0][0] < sorted(f[0] for f in finished)[-k]:
                break  # no open beam can beat the k-th finished word any more
            beams = []
            for lp, cont, idx, st in best:
                lg, st2 = self._advance([idx], st)
                beams.append((lp, cont, lg, st2))
        top_k = heapq.nlargest(k, finished, key=lambda f: f[0])
        return [
            {
                "word": prefix + cont,
                "continuation": cont,
                "boundary": boundary,
                "probability": math.exp(lp),
                "log_prob": lp,
            }
            for lp, cont, boundary in top_k
        ]

    @torch.no_grad()
    def _complete_subwords(self, text, k, beam_size, max_chars, unknown) -> list[dict[str, Any]]:
        """:meth:`complete` for BPE models: beam search over subword tokens until the decoded
        continuation reaches a word boundary. A completion's probability is that of the token
        path spelling the word up to (and through the token holding) its boundary."""
        self.eval()
        prefix = ""
        for ch in reversed(text):
            if _is_boundary(ch):
                break
            prefix = ch + prefix
        logits, state = self._advance(self.encode(self.default_context() + text, unknown))
        specials = len(self.vocab.specials)
        beams = [(0.0, [], logits, state)]
        finished: dict[str, tuple[float, str]] = {}
        for _ in range(max_chars):
            candidates = []
            for lp, ids, lg, st in beams:
                logp = torch.log_softmax(lg.float(), -1)
                logp[:specials] = -math.inf
                top = torch.topk(logp, min(beam_size, logp.numel() - specials))
                for value, idx in zip(top.values.tolist(), top.indices.tolist()):
                    cont = self.vocab.decode(ids + [idx])
                    cut = next((i for i, ch in enumerate(cont) if _is_boundary(ch)), None)
                    if cut is None:
                        candidates.append((lp + value, ids + [idx], st))
                    elif prefix + cont[:cut]:
                        word, score = cont[:cut], lp + value
                        if word not in finished or finished[word][0] < score:
                            finished[word] = (score, cont[cut])
            if not candidates:
                break
            best = heapq.nlargest(beam_size, candidates, key=lambda c: c[0])
            kth = sorted((f[0] for f in finished.values()), reverse=True)[k - 1 : k]
            if kth and best[0][0] < kth[0]:
                break
            beams = []
            for lp, ids, st in best:
                lg, st2 = self._advance([ids[-1]], st)
                beams.append((lp, ids, lg, st2))
        top_k = heapq.nlargest(k, finished.items(), key=lambda f: f[1][0])
        return [
            {
                "word": prefix + cont,
                "continuation": cont,
                "boundary": boundary,
                "probability": math.exp(lp),
                "log_prob": lp,
            }
            for cont, (lp, boundary) in top_k
        ]

    @torch.no_grad()
    def next_words(self, text: str, k: int = 5, unknown: str | None = None) -> list[dict[str, Any]]:
        """The ``k`` most likely next words after ``text`` (word-level models): a phone
        keyboard's suggestion bar. Probabilities come straight from the model's softmax over the
        whole vocabulary, so they sum to at most 1; special symbols are never suggested."""
        if self.vocab.level != "word":
            raise ValueError("next_words() needs a word-level model; use complete() for characters")
        self.eval()
        logits, _ = self._advance(self.encode(self.default_context() + text, unknown))
        logp = torch.log_softmax(logits.float(), -1)
        logp[: len(self.vocab.specials)] = -math.inf
        top = torch.topk(logp, min(k, logp.numel() - len(self.vocab.specials)))
        return [
            {"word": self.vocab.itos[i], "probability": math.exp(v), "log_prob": v}
            for v, i in zip(top.values.tolist(), top.indices.tolist())
        ]

    @torch.no_grad()
    def evaluate_ids(self, ids: list[int] | Tensor, chunk: int = 1024) -> dict[str, float]:
        """Mean cross-entropy over ``ids`` read in order as one stream, state carried throughout.

        Every token after the first is predicted from everything before it.
        """
        self.eval()
        if not isinstance(ids, np.ndarray):  # a memory map stays one: chunks are converted
            ids = torch.as_tensor(ids, dtype=torch.long)
        count = ids.shape[0]
        total, n, state = 0.0, 0, None
        for s in range(0, count - 1, chunk):
            piece = torch.as_tensor(np.asarray(ids[s : s + 1 + chunk], dtype=np.int64))
            x = piece[:-1].unsqueeze(0).to(self.device)
            y = piece[1:].unsqueeze(0).to(self.device)
            lp, state = self.target_log_probs(x, y, state)
            total -= float(lp.double().sum())
            n += y.numel()
        loss = total / max(n, 1)
        return {"loss": loss, "bits": loss / math.log(2), "perplexity": math.exp(loss), "tokens": n}

    def evaluate_text(self, text: str) -> dict[str, float]:
        """:meth:`evaluate_ids` on a text (unknown symbols read as ``<unk>``)."""
        if self.vocab.level == "bpe":
            ids = self.vocab.encode(text)
        else:
            ids = self.vocab.encode(self.tokens(text), unknown="unk")
        if len(ids) < 2:
            raise DataError("need at least two tokens to evaluate")
        return self.evaluate_ids(ids)


class LanguageModel(TextModel):
    """Embedding → rnnkit recurrent layer → dropout → decoder; ``forward`` returns logits."""

    def __init__(self, config: LanguageModelConfig, vocab: Vocab):
        super().__init__()
        self.config = config
        self.vocab = vocab
        c = config
        V = len(vocab)
        if c.tie_weights and c.embed_size != c.hidden_size:
            raise ValueError(
                f"tie_weights shares one matrix between embedding and decoder, so embed_size "
                f"({c.embed_size}) must equal hidden_size ({c.hidden_size})"
            )
        self.embedding = nn.Embedding(V, c.embed_size)
        options: dict[str, Any] = {"layer_norm": c.layer_norm}
        if c.cell == "lstm":
            options |= {"peephole": c.peephole, "forget_bias": c.forget_bias}
        elif c.cell == "rnn":
            options |= {"nonlinearity": c.nonlinearity, "init": c.init}
        else:
            options |= {"reset_after": c.reset_after}
        self.rnn = LAYERS[c.cell](
            c.embed_size,
            c.hidden_size,
            num_layers=c.num_layers,
            batch_first=True,
            dropout=c.dropout if c.num_layers > 1 else 0.0,
            dropout_mode=c.dropout_mode,
            weight_drop=c.weight_drop,
            zoneout=c.zoneout,
            **options,
        )
        self.drop = nn.Dropout(c.dropout)
        if c.softmax == "adaptive":
            if c.tie_weights:
                raise ValueError("tie_weights needs the full softmax's decoder matrix")
            cutoffs = adaptive_cutoffs(c.cutoffs, V)
            if c.hidden_size // 4 ** len(cutoffs) < 1:
                raise ValueError(
                    f"hidden_size {c.hidden_size} is too small for {len(cutoffs)} tail "
                    f"cluster(s): cluster i is projected to hidden_size / 4^i"
                )
            self.decoder = None
            self.adaptive = nn.AdaptiveLogSoftmaxWithLoss(c.hidden_size, V, cutoffs, div_value=4.0)
        else:
            self.decoder = nn.Linear(c.hidden_size, V)
        if c.tie_weights:
            self.decoder.weight = self.embedding.weight  # Press & Wolf 2017
        if c.init_range:
            for p in self.parameters():
                nn.init.uniform_(p, -c.init_range, c.init_range)

    # -- core ---------------------------------------------------------------------------------
    def forward(self, inputs: Tensor, state=None, targets: Tensor | None = None) -> Output:
        """``inputs (B, T)`` ids → ``Output(logits (B, T, V), loss, state)``.

        The loss is the cross-entropy of ``targets (B, T)`` averaged over every token
        (``time_reduction="mean"``) or summed over time and averaged over the batch ("sum").
        """
        if inputs.dim() != 2:
            raise ValueError(
                f"expected token ids of shape (batch, seq_len); got {tuple(inputs.shape)}"
            )
        emb = self.embedding(inputs)  # (B, T, E)
        emb = self._embedding_dropout(emb)
        y, new_state = self.rnn(emb, state)  # (B, T, H)
        penalty = None
        if self.training and self.config.norm_stabilizer and targets is not None:
            h0 = None if state is None else (state[0] if isinstance(state, tuple) else state)[-1]
            penalty = norm_stabilizer(y, self.config.norm_stabilizer, initial=h0)
        state = new_state
        y = self._output_dropout(y)
        if self.decoder is None:  # adaptive softmax: the loss never forms the (B, T, V) logits
            return self._adaptive_output(y, state, targets, penalty, inputs.shape[1])
        logits = self.decoder(y)  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
            if self.config.time_reduction == "sum":
                loss = loss * inputs.shape[1]
            if penalty is not None:
                loss = loss + penalty
        return Output(logits, loss, state)

    def _adaptive_output(self, y, state, targets, penalty, steps) -> Output:
        """Adaptive softmax (Grave et al. 2017): p(w) = p_head(w) for frequent words, else
        p_head(cluster c) · p_c(w), each tail cluster projected to hidden_size / 4^i first.
        With targets the loss is −mean log p(target) and ``logits`` is None (the cost it saves);
        without, ``logits`` are the log-probabilities ``(B, T, V)`` (softmax of them is p)."""
        B, T, H = y.shape
        if targets is None:
            with self._full_precision(y) as y:
                logp = self.adaptive.log_prob(y.reshape(-1, H)).view(B, T, -1)
            return Output(logp, None, state)
        with self._full_precision(y) as y:
            loss = self.adaptive(y.reshape(-1, H), targets.reshape(-1)).loss
        if self.config.time_reduction == "sum":
            loss = loss * steps
        if penalty is not None:
            loss = loss + penalty
        return Output(None, loss, state)

    def target_log_probs(self, inputs: Tensor, targets: Tensor, state=None):
        if self.decoder is not None:
            return super().target_log_probs(inputs, targets, state)
        emb = self.embedding(inputs)  # (B, T, E)
        y, state = self.rnn(emb, state)  # (B, T, H)
        B, T, H = y.shape
        with self._full_precision(y) as y:
            out = self.adaptive(y.reshape(-1, H), targets.reshape(-1)).output
        return out.view(B, T), state

    @contextlib.contextmanager
    def _full_precision(self, y: Tensor):
        """The adaptive softmax in its weights' dtype: outside autocast, whose bf16 cluster
        outputs would not fit its fp32 buffers."""
        with torch.autocast(y.device.type, enabled=False):
            yield y.to(self.adaptive.head.weight.dtype)

    def _embedding_dropout(self, emb: Tensor) -> Tensor:
        c = self.config
        if not (self.training and (c.dropout or c.embed_dropout)):
            return emb
        if c.embed_dropout:  # one decision per (sequence, position): drop the whole word vector
            keep = torch.empty(emb.shape[:2] + (1,), device=emb.device, dtype=emb.dtype)
            emb = emb * keep.bernoulli_(1 - c.embed_dropout) / (1 - c.embed_dropout)
        return self._feature_dropout(emb)

    def _output_dropout(self, y: Tensor) -> Tensor:
        if not (self.training and self.config.dropout):
            return y
        return self._feature_dropout(y)

    def _feature_dropout(self, x: Tensor) -> Tensor:
        """Standard dropout (a new mask every step) or variational (one mask per sequence)."""
        p = self.config.dropout
        if not p:
            return x
        if self.config.dropout_mode == "variational":
            mask = torch.empty_like(x[:, :1]).bernoulli_(1 - p) / (1 - p)  # (B, 1, F)
            return x * mask
        return F.dropout(x, p, True)


class WindowLanguageModel(TextModel):
    """The fixed-window baseline (Bengio et al. 2003): a feed-forward net over the previous N tokens.

    h_t = tanh(W [e(x_{t−N+1}); …; e(x_t)] + b), p(x_{t+1}) = softmax(U h_t + c). Positions
    before the start read ``<pad>``. Its ``state`` is simply the last N−1 token ids (B, N−1), so
    the same trainer and inference code serve it; unlike an RNN it can never see further back.
    """

    def __init__(self, config: LanguageModelConfig, vocab: Vocab):
        super().__init__()
        if config.window < 1:
            raise ValueError(f"window must be at least 1; got {config.window}")
        self.config = config
        self.vocab = vocab
        c = config
        self.embedding = nn.Embedding(len(vocab), c.embed_size)
        self.hidden = nn.Linear(c.window * c.embed_size, c.hidden_size)
        self.drop = nn.Dropout(c.dropout)
        self.decoder = nn.Linear(c.hidden_size, len(vocab))
        if c.tie_weights:
            if c.embed_size != c.hidden_size:
                raise ValueError(
                    f"tie_weights needs embed_size ({c.embed_size}) == hidden_size ({c.hidden_size})"
                )
            self.decoder.weight = self.embedding.weight

    def forward(self, inputs: Tensor, state=None, targets: Tensor | None = None) -> Output:
        N = self.config.window
        B = inputs.shape[0]
        if state is None:
            pad = self.vocab.pad_id if self.vocab.pad_id is not None else 0
            state = inputs.new_full((B, N - 1), pad)
        seq = torch.cat([state, inputs], 1)  # (B, N−1+T)
        windows = seq.unfold(1, N, 1)  # (B, T, N): the N tokens ending at each position
        emb = self.embedding(windows).flatten(2)  # (B, T, N·E)
        h = self.drop(torch.tanh(self.hidden(self.drop(emb))))  # (B, T, H)
        logits = self.decoder(h)  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
            if self.config.time_reduction == "sum":
                loss = loss * inputs.shape[1]
        return Output(logits, loss, seq[:, seq.shape[1] - (N - 1) :])


def build_language_model(config: LanguageModelConfig, vocab: Vocab) -> TextModel:
    """The model ``config.model`` names: recurrent (default) or the fixed-window baseline."""
    return (
        WindowLanguageModel(config, vocab)
        if config.model == "window"
        else LanguageModel(config, vocab)
    )


def adaptive_cutoffs(spec: str, vocab_size: int) -> list[int]:
    """``"2000,10000"`` → cluster edges below ``vocab_size − 1`` (those beyond are dropped)."""
    try:
        edges = [int(x) for x in str(spec).replace(" ", "").split(",") if x]
    except ValueError:
        raise ValueError(f"cutoffs must be comma-separated integers; got {spec!r}") from None
    if edges != sorted(set(edges)) or any(e < 1 for e in edges):
        raise ValueError(f"cutoffs must be increasing positive integers; got {spec!r}")
    kept = [e for e in edges if e < vocab_size - 1]
    if not kept:
        raise ValueError(
            f"the vocabulary of {vocab_size} is too small for cutoffs {spec!r}: the adaptive "
            "softmax needs a first cutoff below vocab_size - 1"
        )
    return kept


def _is_boundary(ch: str) -> bool:
    return not (ch.isalnum() or ch in "'-_")


def sample_next(
    logits: Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> int:
    """Draw one token id from ``logits (V,)``.

    p ∝ exp(logits / T); top-k keeps the k largest; top-p (nucleus) keeps the smallest set of
    tokens whose probability reaches p. ``temperature == 0`` returns the argmax.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0; got {temperature}")
    if temperature == 0:
        return int(torch.argmax(logits))
    logits = logits.float() / temperature
    if top_k is not None and top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.numel())).values[-1]
        logits = logits.masked_fill(logits < kth, -math.inf)
    if top_p is not None and 0 < top_p < 1:
        probs_sorted, order = torch.sort(torch.softmax(logits, -1), descending=True)
        cumulative = probs_sorted.cumsum(0)
        drop = cumulative - probs_sorted >= top_p  # tokens after the nucleus is complete
        logits = logits.masked_fill(drop.scatter(0, order, drop), -math.inf)
    probs = torch.softmax(logits, -1)
    return int(torch.multinomial(probs, 1, generator=generator))


class LanguageModelTraining:
    """Truncated-BPTT training over stream batches, for :func:`rnnkit.train.fit`.

    Each epoch starts from a zero state at a slightly different offset into the text (so window
    boundaries move between epochs); within an epoch the state flows from window to window and is
    detached at each boundary.

    Under ``torchrun`` the ``batch_size`` streams are split between the ranks: rank r trains on
    streams r·b … (r+1)·b − 1 (b = batch_size / world size), its own contiguous slices of the
    text, so each rank's carried state stays consistent and DDP's gradient average equals the
    single-process gradient of the whole batch.
    """

    tokens_name = "tok"

    def __init__(
        self, model: LanguageModel, train_ids: Tensor, valid_ids: Tensor, batch_size: int, bptt: int
    ):
        self.model = model
        self.train_ids = train_ids
        self.valid_ids = valid_ids
        self.batch_size = batch_size
        self.bptt = bptt
        self.state = None
        group = Dist()
        if batch_size % group.world:
            raise DataError(
                f"batch_size {batch_size} is the global batch and must divide evenly between "
                f"{group.world} processes"
            )
        per_rank = batch_size // group.world
        self._rows = slice(group.rank * per_rank, (group.rank + 1) * per_rank)
        self._epoch = -1
        self._streams: StreamBatches | None = None
        # the fewest full windows any epoch offset yields: every epoch has this many steps
        self._per_epoch = StreamBatches(
            train_ids[bptt:], batch_size, bptt, drop_last=True
        ).num_windows
        if self._per_epoch < 1:
            raise DataError(
                f"the training text has {train_ids.numel()} tokens: too short for batch_size "
                f"{batch_size} × bptt {bptt}; need at least {batch_size * (2 * bptt + 1)}"
            )

    def batches_per_epoch(self) -> int:
        return self._per_epoch

    def _offset(self, epoch: int) -> int:
        return (epoch * 7919) % self.bptt  # deterministic, so a resumed run sees the same data

    def _streams_for(self, epoch: int) -> StreamBatches:
        if self._epoch != epoch or self._streams is None:
            self._streams = StreamBatches(
                self.train_ids[self._offset(epoch) :], self.batch_size, self.bptt, drop_last=True
            )
            self._epoch = epoch
        return self._streams

    def start_epoch(self, epoch: int) -> None:
        self.state = None

    def batch(self, epoch: int, index: int):
        inputs, targets = self._streams_for(epoch).window(index)
        return inputs[self._rows], targets[self._rows]  # this rank's streams

    def training_loss(self, model: LanguageModel, batch) -> tuple[Tensor, int]:
        inputs, targets = (t.to(self.model.device) for t in batch)
        out = model(inputs, self.state, targets)
        self.state = detach_state(out.state)  # carry the values, cut the graph
        return out.loss, targets.numel()

    def evaluate(self, model: LanguageModel) -> dict[str, float]:
        m = model.evaluate_ids(self.valid_ids)
        return {"loss": m["loss"], "bits": m["bits"], "perplexity": m["perplexity"]}

    def carried_state(self) -> dict[str, Tensor]:
        if self.state is None:
            return {}
        if isinstance(self.state, tuple):
            return {"h": self.state[0], "c": self.state[1]}
        return {"h": self.state}

    def load_carried_state(self, saved: dict[str, Tensor]) -> None:
        if not saved:
            self.state = None
        elif "c" in saved:
            self.state = (saved["h"], saved["c"])
        else:
            self.state = saved["h"]


def _find_split(directory: Path, split: str) -> Path:
    matches = sorted(directory.glob(f"*{split}.txt"))
    if not matches:
        raise DataError(f"no *{split}.txt file in the data directory", path=directory)
    return matches[0]


def read_corpus(data: LanguageModelData) -> tuple[str, str, str]:
    """(train text, validation text, a description of where they came from)."""
    if data.data_dir:
        directory = Path(data.data_dir)
        if not directory.is_dir():
            raise DataError("--data-dir is not a directory", path=directory)
        train_path, valid_path = _find_split(directory, "train"), _find_split(directory, "valid")
        train = read_text(train_path, data.encoding)
        valid = read_text(valid_path, data.encoding)
        return train, valid, f"{train_path} (validation: {valid_path})"
    path = Path(data.data) if data.data else bundled_path(TINY_SHAKESPEARE)
    text = read_text(path, data.encoding)
    if data.valid:
        train, valid = text, read_text(data.valid, data.encoding)
        where = f"{path} (validation: {data.valid})"
    else:
        train, valid = split_text(text, data.valid_fraction)
        where = f"{path} (last {data.valid_fraction:.0%} held out for validation)"
    if len(valid) < 2:
        raise DataError(f"the validation text is too short ({len(valid)} characters)", path=path)
    return train, valid, where


class _LanguageModelTask:
    """Language model: predict the next character or word (char-LSTM on Tiny Shakespeare by default)."""

    name = "lm"
    sections = {"model": LanguageModelConfig, "data": LanguageModelData}
    # the main job: 16 epochs or 8 minutes, whichever comes first (the cosine schedule spans the
    # budget), so `rnnkit train lm` ends in time on a laptop and trains fully on a GPU. A 1 × 384
    # LSTM with light dropout, lr 3e-3 and 64 × 64-step windows was the best of the settings tried
    # for both a 3-minute and a 16-epoch budget (README, "Character language model")
    defaults = {
        "train": {"epochs": 16, "minutes": 8.0, "eval_every": 400, "lr": 3e-3, "batch_size": 64}
    }

    def build(self, configs: dict[str, Any], train_cfg, device):
        model_cfg: LanguageModelConfig = configs["model"]
        data_cfg: LanguageModelData = configs["data"]
        prepared = self._prepared(data_cfg, train_cfg)
        if prepared is not None:  # a prepared folder (or a large file's cache): memory maps
            from rnnkit.data.prepared import load_vocabulary

            data_cfg.level = prepared.level  # the folder decides; saved so the run says so
            vocab = load_vocabulary(prepared.path / prepared.meta["tokenizer"])
            log.info("data: %r; vocabulary of %d %s tokens", prepared, len(vocab), prepared.level)
            model = build_language_model(model_cfg, vocab).to(device)
            return model, self._prepared_training(model, prepared, data_cfg, train_cfg)
        train_text, valid_text, where = read_corpus(data_cfg)
        if data_cfg.level == "word":
            words = tokenize_text(train_text, "word")
            vocab = Vocab.build(
                words, level="word", max_size=data_cfg.max_vocab, min_freq=data_cfg.min_freq
            )
        else:
            vocab = Vocab.build(train_text, level="char")
        log.info("data: %s; vocabulary of %d %ss", where, len(vocab), data_cfg.level)
        model = build_language_model(model_cfg, vocab).to(device)
        training = self._training(model, vocab, train_text, valid_text, data_cfg, train_cfg)
        return model, training

    @staticmethod
    def _prepared(data_cfg, train_cfg=None):
        from rnnkit.tasks.prepared_lm import open_prepared

        return open_prepared(data_cfg, progress=getattr(train_cfg, "progress", True))

    @staticmethod
    def _prepared_training(model, prepared, data_cfg, train_cfg):
        from rnnkit.tasks.prepared_lm import PreparedLanguageModelTraining

        return PreparedLanguageModelTraining(
            model, prepared.train, prepared.valid, train_cfg.batch_size, data_cfg.bptt
        )

    def _training(self, model, vocab, train_text, valid_text, data_cfg, train_cfg):
        train_ids = torch.tensor(vocab.encode(model.tokens(train_text), unknown="unk"))
        valid_ids = torch.tensor(vocab.encode(model.tokens(valid_text), unknown="unk"))
        return LanguageModelTraining(
            model, train_ids, valid_ids, train_cfg.batch_size, data_cfg.bptt
        )

    def restore(self, saved: dict[str, Any], vocab: Vocab, device, train_cfg=None, with_data=False):
        from rnnkit.config import from_dict

        model_cfg = from_dict(LanguageModelConfig, saved["model"])
        model = build_language_model(model_cfg, vocab).to(device)
        training = None
        if with_data:
            data_cfg = from_dict(LanguageModelData, saved["data"])
            prepared = self._prepared(data_cfg, train_cfg)
            if prepared is not None:
                return model, self._prepared_training(model, prepared, data_cfg, train_cfg)
            train_text, valid_text, _ = read_corpus(data_cfg)
            training = self._training(model, vocab, train_text, valid_text, data_cfg, train_cfg)
        return model, training


TASK = _LanguageModelTask()
