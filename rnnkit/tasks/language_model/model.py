"""The text models: :class:`TextModel` (generate, score, complete) and its two cores."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.data.vocab import Vocab
from rnnkit.decoding import concat_states
from rnnkit.errors import DataError
from rnnkit.inference import (
    CompleteRequest,
    CompleteResult,
    EvaluateRequest,
    EvaluateResult,
    GenerateRequest,
    GenerateResult,
    ScoreRequest,
    ScoreResult,
)
from rnnkit.portable.text_sampling import TextSampling, score_record
from rnnkit.regularizers import norm_stabilizer
from rnnkit.state import map_state
from rnnkit.tasks.base import Output, TaskModel
from rnnkit.tasks.common.recurrent import recurrent_for
from rnnkit.tasks.language_model.completion import complete_word
from rnnkit.tasks.language_model.completion import next_words as suggest_next_words
from rnnkit.tasks.language_model.config import tokenize_text
from rnnkit.tasks.language_model.sampling import sample_next
from rnnkit.tasks.language_model.softmax import AdaptiveSoftmax

if TYPE_CHECKING:
    from rnnkit.tasks.language_model.config import LanguageModelConfig

log = logging.getLogger(__name__)


class TextModel(TaskModel, TextSampling):
    """Inference over text shared by every language model (recurrent or windowed).

    Subclasses define ``forward(inputs (B, T), state, targets) -> Output`` whose ``state``
    summarises everything read so far, and ``decoder`` (for the device).
    """

    config: LanguageModelConfig
    vocab: Vocab

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

    def decode(self, ids: list[int]) -> str:
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
    def advance(self, ids: list[int], state=None, chunk: int = 512):
        """Feed ``ids`` (one sequence) through the model; returns (last logits (V,), state)."""
        logits = None
        for s in range(0, len(ids), chunk):
            x = torch.tensor([ids[s : s + chunk]], device=self.device)
            out = self(x, state)
            logits, state = out.logits[0, -1], out.state
        return logits, state

    # -- stepping: the batched pieces generation is made of ---------------------------------
    #: which dimension of every state tensor is the batch (the layers' (L, B, H) by default)
    state_batch_dim: int = 1

    @torch.no_grad()
    def prime(self, prompts: Sequence[Sequence[int]]) -> tuple[Any, Tensor]:
        """Read a batch of token-id prompts (any lengths, each ≥ 1 id): returns the batched
        ``state`` after each prompt and the logits of the next token, ``(B, V)``."""
        if not prompts or any(len(p) == 0 for p in prompts):
            raise ValueError("prime() needs at least one prompt, each of at least one token id")
        runs = [self.advance(list(p)) for p in prompts]
        state = concat_states([st for _, st in runs], self.state_batch_dim)
        return state, torch.stack([lg for lg, _ in runs])

    @torch.no_grad()
    def step(self, ids: Tensor, state: Any) -> tuple[Tensor, Any]:
        """Feed one token per row, ``ids (B,)``: returns the next logits ``(B, V)`` and state."""
        out = self(ids.view(-1, 1).to(self.device), state)
        return out.logits[:, -1], out.state

    def select_state(self, state: Any, rows: Sequence[int] | Tensor) -> Any:
        """The rows ``rows`` of a batched ``state`` (to drop finished streams or reorder)."""
        rows = torch.as_tensor(rows, dtype=torch.int64, device=self.device)
        return map_state(lambda t: t.index_select(self.state_batch_dim, rows), state)

    # -- the engine of generate / sample_text (rnnkit.portable.text_sampling) -----------------
    input_error = DataError

    def _sampler(self, seed: int | None) -> torch.Generator:
        gen = torch.Generator(device=self.device)
        gen.manual_seed(seed if seed is not None else torch.seed())
        return gen

    def _first_logits(self, ids: list[int]) -> tuple[Tensor, Any]:
        self.eval()
        state, logits = self.prime([ids])
        return logits[0], state

    def _next_logits(self, token_id: int, state: Any) -> tuple[Tensor, Any]:
        logits, state = self.step(torch.tensor([token_id]), state)
        return logits[0], state

    def _draw(self, logits: Tensor, banned, temperature, top_k, top_p, generator) -> int:
        logits = logits.clone()
        logits[banned] = -math.inf
        return sample_next(logits, temperature, top_k, top_p, generator)

    #: the requests :meth:`infer` answers
    answers = (GenerateRequest, ScoreRequest, CompleteRequest, EvaluateRequest)

    def answer(self, request, on_text: Callable[[str], None] | None = None):
        """Generate, score, complete or evaluate (:mod:`rnnkit.inference`); for a
        :class:`GenerateRequest`, ``on_text`` receives each sampled token's text (streaming)."""
        if isinstance(request, GenerateRequest):
            r = request
            text, tokens, reason = self.sample_text(
                r.prompt,
                r.max_tokens,
                r.temperature,
                r.top_k,
                r.top_p,
                r.seed,
                on_text,
                unknown=r.unknown,
                stop=r.stop,
            )
            return GenerateResult(
                r.prompt, text, r.temperature, r.top_k, r.top_p, r.seed, tokens, reason
            )
        if isinstance(request, ScoreRequest):
            scores = [self.score(t, request.context, request.unknown) for t in request.texts]
            order = sorted(range(len(scores)), key=lambda i: -scores[i]["log_prob"])
            for rank, i in enumerate(order, 1):
                scores[i]["rank"] = rank
            return ScoreResult(scores)
        if isinstance(request, CompleteRequest):
            if self.vocab.level == "word":
                found = self.next_words(request.text, request.k, request.unknown)
            else:
                found = self.complete(request.text, request.k, unknown=request.unknown)
            return CompleteResult(request.text, found)
        return self._evaluate(request)

    def _evaluate(self, request: EvaluateRequest) -> EvaluateResult:
        """Loss, bits and perplexity on ``request.data`` read in order with the state carried,
        or on the validation split of the run's corpus (``data_config``, set by the task)."""
        if request.data is not None:
            from rnnkit.data.readers import read_text

            text, where = read_text(request.data, request.encoding), request.data
        elif getattr(self, "data_config", None) is not None:
            from rnnkit.tasks.language_model.prepared import open_prepared
            from rnnkit.tasks.language_model.task import read_corpus

            prepared = open_prepared(self.data_config, progress=False)
            if prepared is not None:  # the memory-mapped validation ids of a prepared folder
                m = self.evaluate_ids(prepared.valid)
                keys = ("tokens", "loss", "bits", "perplexity")
                where = f"validation split of {prepared.path}"
                return EvaluateResult({"data": where} | {k: m[k] for k in keys})
            _, text, where = read_corpus(self.data_config)
            where = f"validation split of {where}"
        else:
            raise ValueError("this model has no corpus of its own: give the data to evaluate")
        m = self.evaluate_text(text)
        keys = ("tokens", "loss", "bits", "perplexity")
        return EvaluateResult({"data": str(where)} | {k: m[k] for k in keys})

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
        return score_record(text, float(lp.sum()), lp.numel())

    #: the word being typed, finished; the next words (both in :mod:`.completion`)
    complete = complete_word
    next_words = suggest_next_words

    @torch.no_grad()
    def evaluate_ids(self, ids: list[int] | Tensor, chunk: int = 1024) -> dict[str, float]:
        """Mean cross-entropy over ``ids`` read in order as one stream, state carried throughout.

        Every token after the first is predicted from everything before it.
        """
        self.eval()
        if not isinstance(ids, np.ndarray):  # a memory map stays one: chunks are converted
            ids = torch.as_tensor(ids, dtype=torch.long)
        total, n, state = 0.0, 0, None
        for s in range(0, ids.shape[0] - 1, chunk):
            piece = ids[s : s + 1 + chunk]
            if isinstance(piece, np.ndarray):
                piece = torch.from_numpy(piece.astype(np.int64))
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
        self.rnn = recurrent_for(c, c.embed_size)
        self.drop = nn.Dropout(c.dropout)
        self.adaptive: AdaptiveSoftmax | None = None
        if c.softmax == "adaptive":
            if c.tie_weights:
                raise ValueError("tie_weights needs the full softmax's decoder matrix")
            self.decoder = None
            self.adaptive = AdaptiveSoftmax(c.hidden_size, V, c.cutoffs)
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
        if self.adaptive is not None:  # the loss never forms the (B, T, V) logits
            if targets is None:  # log-probabilities: their softmax is p
                return Output(self.adaptive.log_prob(y), None, state)
            logits, loss = None, self.adaptive.loss(y, targets)
        else:
            logits = self.decoder(y)  # (B, T, V)
            loss = None
            if targets is not None:
                loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        if loss is not None:
            if self.config.time_reduction == "sum":
                loss = loss * inputs.shape[1]
            if penalty is not None:
                loss = loss + penalty
        return Output(logits, loss, state)

    def target_log_probs(self, inputs: Tensor, targets: Tensor, state=None):
        if self.adaptive is None:
            return super().target_log_probs(inputs, targets, state)
        y, state = self.rnn(self.embedding(inputs), state)  # (B, T, H)
        return self.adaptive.target_log_prob(y, targets), state

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

    state_batch_dim = 0

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
