"""The encoder-decoder :class:`Seq2Seq` with attention: forward, greedy and beam decoding."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.attention import build_attention, plot_attention
from rnnkit.cells import RecurrentCell
from rnnkit.data.batching import pad_sequences
from rnnkit.data.parallel import detokenize, read_parallel, tokenize
from rnnkit.data.vocab import SPECIALS, Vocab
from rnnkit.decoding import Hypothesis, beam_search, greedy_decode
from rnnkit.errors import DataError
from rnnkit.inference import (
    EvaluateRequest,
    TranslateRequest,
    TranslateResult,
)
from rnnkit.metrics import bleu_scores
from rnnkit.state import LSTMState
from rnnkit.tasks.base import Output, TaskModel
from rnnkit.tasks.common.recurrent import LAYERS, recurrent_for
from rnnkit.tasks.seq2seq.config import CELLS, LENGTH_BUCKETS
from rnnkit.tasks.seq2seq.data import _sorted_chunks, read_split

if TYPE_CHECKING:
    from rnnkit.tasks.seq2seq.config import Seq2SeqConfig, Seq2SeqData


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------
class Seq2Seq(TaskModel):
    """Recurrent encoder–decoder with optional attention (see the module docstring).

    ``forward(inputs (B, S), targets=(B, T), lengths=(B,))`` → ``Output(logits (B, T, V), loss)``
    under teacher forcing; :meth:`translate` decodes text, :meth:`decode` id sequences.
    """

    def __init__(self, config: Seq2SeqConfig, data_config: Seq2SeqData):
        super().__init__()
        c, d = config, data_config
        if c.cell not in CELLS:
            raise ValueError(f"cell must be one of {CELLS}; got {c.cell!r}")
        if not d.source_vocab or not d.target_vocab:
            raise ValueError("the data config has no vocabularies: build the model via the task")
        if not 0.0 <= c.teacher_forcing <= 1.0:
            raise ValueError(f"teacher_forcing must lie in [0, 1]; got {c.teacher_forcing}")
        self.config = config
        self.data_config = data_config
        self.source_vocab = Vocab(d.source_vocab, SPECIALS, level="word")
        self.target_vocab = Vocab(d.target_vocab, SPECIALS, level="word")
        self.bos, self.eos = self.target_vocab.bos_id, self.target_vocab.eos_id
        E, D = c.embed_size, c.decoder_size
        self.is_lstm = c.cell == "lstm"

        self.source_embedding = nn.Embedding(len(self.source_vocab), E, padding_idx=0)
        self.encoder = recurrent_for(c, E)
        self.memory_size = c.hidden_size * (2 if c.bidirectional else 1)
        self.init_h = nn.Linear(self.memory_size, D)
        self.init_c = nn.Linear(self.memory_size, D) if self.is_lstm else None
        self.attention = build_attention(c.attention, D, self.memory_size, c.attention_size)

        self.target_embedding = nn.Embedding(len(self.target_vocab), E, padding_idx=0)
        # the decoder is one step cell of the same family (LSTMCell, GRUCell, MinGRUCell, ...)
        self.decoder = LAYERS[c.cell].cell_class(E + self.memory_size, D)
        #: the classical cells' input projection is one affine map, hoisted out of the loop
        self.hoists_input = isinstance(self.decoder, RecurrentCell)
        out_in = D + self.memory_size + E
        if c.tie_embeddings and c.output_size != E:
            raise ValueError(
                f"tie_embeddings needs output_size == embed_size; got {c.output_size} and {E}"
            )
        self.pre_output = nn.Linear(out_in, c.output_size)
        self.out = nn.Linear(c.output_size, len(self.target_vocab))
        if c.tie_embeddings:
            self.out.weight = self.target_embedding.weight
        self.drop = nn.Dropout(c.dropout)
        for emb in (self.source_embedding, self.target_embedding):
            # small uniform vectors (torch's N(0, 1) is far too large for a tied softmax)
            nn.init.uniform_(emb.weight, -0.1, 0.1)
            with torch.no_grad():
                emb.weight[0].zero_()

    # -- encoder ----------------------------------------------------------------------------
    def encode(self, source: Tensor, lengths: Tensor) -> dict[str, Any]:
        """The decoding state of a source batch: ``memory (B, S, M)``, ``mask (B, S)``, the
        attention's ``prepared`` keys (or the fixed ``context (B, M)`` without attention) and
        the decoder's initial ``state``."""
        lengths = lengths.cpu()
        x = self.drop(self.source_embedding(source))  # (B, S, E)
        memory, final = self.encoder(x, lengths=lengths)  # (B, S, M)
        summary = self._summary(memory, lengths)  # (B, M)
        h0 = torch.tanh(self.init_h(summary))  # (B, Dd)
        if self.is_lstm:
            directions = 2 if self.config.bidirectional else 1
            c_n = final[1]
            state: Any = LSTMState(h0, self.init_c(torch.cat(list(c_n[-directions:]), dim=-1)))
        else:
            state = self._initial_state(h0)
        S = source.shape[1]
        mask = (torch.arange(S).unsqueeze(0) < lengths.unsqueeze(1)).to(source.device)  # (B, S)
        out: dict[str, Any] = {"state": state, "query": h0}
        if self.attention is None:
            out["context"] = summary
        else:
            out |= {"memory": memory, "mask": mask, "prepared": self.attention.prepare(memory)}
        return out

    def _summary(self, memory: Tensor, lengths: Tensor) -> Tensor:
        """m = [→h_S ; ←h_1]: the top layer's output at each row's last real step (forward)
        and at its first (backward), ``(B, M)``; for any cell, whatever its state holds."""
        H = self.config.hidden_size
        last = (lengths - 1).clamp(min=0).to(memory.device)
        forward = memory[torch.arange(memory.shape[0], device=memory.device), last, :H]
        if not self.config.bidirectional:
            return forward
        return torch.cat([forward, memory[:, 0, H:]], -1)

    def _initial_state(self, h0: Tensor):
        """The decoder's first state for a cell other than the LSTM: h0 where the state is one
        ``(B, D)`` tensor (GRU, RNN, minGRU, ...), else h0 as its first field of that shape
        (QRNN's and SRU's c) and zeros for the rest (all zeros for mLSTM's matrix memory)."""
        zero = self.decoder.init_state(h0.shape[0], h0.device, h0.dtype)
        if isinstance(zero, Tensor):
            return h0
        fields = list(zero)
        if fields[0].shape == h0.shape:
            fields[0] = h0
        return type(zero)(*fields) if hasattr(zero, "_fields") else tuple(fields)

    # -- one decoder step ---------------------------------------------------------------------
    def _context(self, enc: dict[str, Any], query: Tensor) -> tuple[Tensor, Tensor | None]:
        """The attention context of the previous decoder output ``query (B, D)``."""
        if self.attention is None:
            return enc["context"], None
        return self.attention(query, enc["memory"], enc["mask"], enc["prepared"])

    def _logits(self, s: Tensor, context: Tensor, embedded: Tensor) -> Tensor:
        o = torch.tanh(self.pre_output(torch.cat([s, context, embedded], -1)))
        return self.out(self.drop(o))

    def step(self, tokens: Tensor, enc: dict[str, Any]):
        """One decoding step (the :mod:`rnnkit.decoding` contract): previous ``tokens (N,)`` and
        the state from :meth:`encode` → ``(log_probs (N, V), new state, attention (N, S))``."""
        e = self.target_embedding(tokens)  # (N, E)
        context, weights = self._context(enc, enc["query"])
        xp = self.decoder.project_input(torch.cat([e, context], -1))
        s, state = self.decoder.step(xp, enc["state"])
        log_probs = torch.log_softmax(self._logits(s, context, e).float(), -1)
        return log_probs, {**enc, "state": state, "query": s}, weights

    # -- teacher-forced forward ---------------------------------------------------------------
    def forward(
        self, inputs: Tensor, state=None, targets=None, *, lengths=None, target_inputs=None
    ) -> Output:
        """``inputs (B, S)`` source ids, ``targets (B, T)`` = y_1..y_n ``<eos>`` (0-padded) →
        ``Output(logits (B, T, V), loss)``; the decoder reads ``target_inputs`` (default:
        ``<bos>`` followed by ``targets`` shifted right). The loss is the per-token mean
        cross-entropy over real tokens, label-smoothed in training mode."""
        if targets is None:
            raise ValueError("Seq2Seq.forward needs targets (use translate/decode to generate)")
        B, S = inputs.shape
        if lengths is None:
            lengths = torch.full((B,), S, dtype=torch.long)
        if target_inputs is None:
            bos = targets.new_full((B, 1), self.bos)
            target_inputs = torch.cat([bos, targets[:, :-1]], 1).masked_fill(targets == 0, 0)
        enc = self.encode(inputs, lengths)
        ratio = self.config.teacher_forcing if self.training else 1.0
        if ratio < 1.0:
            logits = self._decode_sampled(enc, target_inputs, ratio)
        else:
            logits = self._decode_forced(enc, target_inputs)
        smoothing = self.config.label_smoothing if self.training else 0.0
        n_tokens = (targets != 0).sum().clamp(min=1)
        loss = (
            F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]).float(),
                targets.reshape(-1),
                ignore_index=0,
                reduction="sum",
                label_smoothing=smoothing,
            )
            / n_tokens
        )
        return Output(logits, loss, None)

    def _split_input_weights(self) -> tuple[Tensor, Tensor]:
        E = self.config.embed_size
        w = self.decoder.weight_ih  # (G, E + M): [embedding part | context part]
        return w[:, :E], w[:, E:]

    def _decode_forced(self, enc: dict[str, Any], target_inputs: Tensor) -> Tensor:
        """Teacher forcing: every step reads the reference word."""
        embedded = self.drop(self.target_embedding(target_inputs))  # (B, T, E)
        if self.hoists_input:
            w_e, w_c = self._split_input_weights()
            xe = F.linear(embedded, w_e, self.decoder.bias_ih)  # (B, T, G): hoisted
            fixed = F.linear(enc["context"], w_c) if self.attention is None else None
        # the per-step inputs: W_e e_t + b (hoisted) or e_t; unbind, not [:, t], keeps the
        # backward pass linear in T
        steps = (xe if self.hoists_input else embedded).unbind(1)
        state, query, states, contexts = enc["state"], enc["query"], [], []
        for x_t in steps:
            context, _ = self._context(enc, query)
            if self.hoists_input:
                xp = x_t + (fixed if fixed is not None else F.linear(context, w_c))
            else:
                xp = self.decoder.project_input(torch.cat([x_t, context], -1))
            query, state = self.decoder.step(xp, state)
            states.append(query)
            contexts.append(context)
        return self._logits(torch.stack(states, 1), torch.stack(contexts, 1), embedded)

    def _decode_sampled(self, enc: dict[str, Any], target_inputs: Tensor, ratio: float) -> Tensor:
        """Teacher forcing at ``ratio``: each row reads its own previous argmax otherwise."""
        B, T = target_inputs.shape
        tokens, state, query, steps = target_inputs[:, 0], enc["state"], enc["query"], []
        for t in range(T):
            e = self.drop(self.target_embedding(tokens))  # (B, E)
            context, _ = self._context(enc, query)
            query, state = self.decoder.step(
                self.decoder.project_input(torch.cat([e, context], -1)), state
            )
            logits = self._logits(query, context, e)  # (B, V)
            steps.append(logits)
            if t + 1 < T:
                own = logits.detach().argmax(-1)
                gold = target_inputs[:, t + 1]
                use_gold = torch.rand(B, device=gold.device) < ratio
                tokens = torch.where(use_gold | (gold == 0), gold, own)
        return torch.stack(steps, 1)

    def forward_batch(self, batch: dict[str, Tensor]) -> Output:
        dev = self.device
        return self(
            batch["source"].to(dev),
            targets=batch["target_out"].to(dev),
            lengths=batch["lengths"],
            target_inputs=batch["target_in"].to(dev),
        )

    # -- decoding ---------------------------------------------------------------------------
    def encode_source(self, text: str, where: str = "") -> tuple[list[str], list[int]]:
        tokens = tokenize(text, self.data_config.lowercase)
        if not tokens:
            raise DataError(f"{where}the text has no words to translate")
        return tokens, self.source_vocab.encode(tokens, unknown="unk")

    @torch.no_grad()
    def decode(
        self,
        sources: Sequence[Sequence[int]],
        beam_size: int = 1,
        max_len: int | None = None,
        length_penalty: float = 1.0,
        batch_size: int = 128,
    ) -> list[Hypothesis]:
        """Translate source id sequences (greedy for ``beam_size=1``, beam search otherwise),
        in batches of similar lengths of about ``batch_size`` decoded rows (sentences × beam);
        ``max_len`` defaults to 2·S + 10 per batch (S its longest source)."""
        if beam_size < 1:
            raise ValueError(f"beam size must be at least 1; got {beam_size}")
        self.eval()
        out: list[Hypothesis | None] = [None] * len(sources)
        rows = max(1, batch_size // beam_size) if beam_size > 1 else batch_size
        for idx in _sorted_chunks([len(s) for s in sources], rows):
            batch = [torch.tensor(sources[i], dtype=torch.long) for i in idx]
            source, lengths = pad_sequences(batch, 0)
            enc = self.encode(source.to(self.device), lengths.to(torch.long))
            limit = max_len or min(200, 2 * int(lengths.max()) + 10)
            if beam_size == 1:
                hyps = greedy_decode(self.step, enc, len(idx), self.bos, self.eos, limit)
            else:
                hyps = beam_search(
                    self.step, enc, len(idx), self.bos, self.eos, beam_size, limit, length_penalty
                )
            for i, h in zip(idx, hyps):
                if h.attention is not None:
                    h.attention = h.attention[:, : len(sources[i])]
                out[i] = h
        return out  # type: ignore[return-value]

    #: the requests :meth:`infer` answers
    answers = (TranslateRequest, EvaluateRequest)

    def answer(self, request: TranslateRequest) -> TranslateResult:
        """The translation of each text of a :class:`~rnnkit.inference.TranslateRequest`."""
        r = request
        options = {"max_len": r.max_len, "length_penalty": r.length_penalty}
        return TranslateResult(
            self.translate(r.texts, r.beam_size, attention=r.attention, **options)
        )

    def translate(
        self,
        texts: Sequence[str],
        beam_size: int = 5,
        max_len: int | None = None,
        length_penalty: float = 1.0,
        batch_size: int = 128,
        attention: bool = False,
    ) -> list[dict[str, Any]]:
        """Translate texts: for each, ``source``, ``translation`` (detokenised), ``tokens``,
        ``source_tokens``, ``score`` (what the search maximised), ``log_prob``, and with
        ``attention=True`` the weights ``(len(tokens), len(source_tokens))`` as nested lists."""
        encoded = [self.encode_source(t, f"input {i + 1}: ") for i, t in enumerate(texts)]
        hyps = self.decode(
            [ids for _, ids in encoded], beam_size, max_len, length_penalty, batch_size
        )
        results = []
        for text, (src_tokens, _), h in zip(texts, encoded, hyps):
            words = [self.target_vocab.itos[i] for i in h.tokens]
            r = {
                "source": text,
                "translation": detokenize(words),
                "tokens": words,
                "source_tokens": src_tokens,
                "score": h.score,
                "log_prob": h.log_prob,
                "beam": beam_size,
            }
            if attention:
                r["attention"] = h.attention.tolist() if h.attention is not None else None
            results.append(r)
        return results

    def hypotheses_text(self, hyps: Sequence[Hypothesis]) -> list[str]:
        return [detokenize([self.target_vocab.itos[i] for i in h.tokens]) for h in hyps]

    # -- evaluation -------------------------------------------------------------------------
    def reference_text(self, text: str) -> str:
        return text.lower() if self.data_config.lowercase else text

    def evaluate_pairs(
        self,
        sources: Sequence[str],
        references: Sequence[str],
        beams: Sequence[int] = (1, 5),
        length_penalty: float = 1.0,
        buckets: Sequence[int] = LENGTH_BUCKETS,
    ) -> dict[str, Any]:
        """BLEU of each beam size on the pairs, overall (with its parts) and by source-length
        bucket; ``hypotheses`` per beam size."""
        ids = [self.encode_source(s, f"sentence {i + 1}: ")[1] for i, s in enumerate(sources)]
        refs = [self.reference_text(r) for r in references]
        out: dict[str, Any] = {"sentences": len(sources), "by_beam": {}}
        for beam in beams:
            hyps = self.hypotheses_text(self.decode(ids, beam, length_penalty=length_penalty))
            out["by_beam"][str(beam)] = {
                **bleu_scores(hyps, [[r] for r in refs]),
                "by_length": bleu_by_length([len(x) for x in ids], hyps, refs, buckets),
                "hypotheses": hyps,
            }
        return out

    def evaluate_file(
        self,
        path: str | None = None,
        confusion: str | None = None,
        encoding: str | None = None,
        beams: Sequence[int] = (1, 5),
    ) -> dict[str, Any]:
        """BLEU (greedy and beam 5) on a TSV of ``source<TAB>reference`` lines, or on the run's
        validation pairs (``path=None``). ``confusion`` is accepted for the CLI and ignored."""
        d = self.data_config
        if path is None:
            sources, refs, where = read_split(d, "valid")
        else:
            sources, refs = read_parallel(path, None, encoding or d.encoding)
            where = str(path)
        result = self.evaluate_pairs(sources, refs, beams)
        for r in result["by_beam"].values():
            r.pop("hypotheses")
        return {"data": where, **result}

    @staticmethod
    def format_evaluation(result: dict[str, Any]) -> str:
        lines = [f"{result['data']}: {result['sentences']:,} sentences"]
        for beam, r in result["by_beam"].items():
            kind = "greedy" if beam == "1" else f"beam {beam}"
            prec = "/".join(f"{p:.1f}" for p in r["precisions"])
            lines.append(f"  {kind:>8}: BLEU {r['bleu']:.2f} ({prec}, BP {r['bp']:.3f})")
            lines.append(
                "            by source length: "
                + ", ".join(f"{b['bucket']}: {b['bleu']:.1f} (n={b['n']})" for b in r["by_length"])
            )
        return "\n".join(lines)

    def plot_attention(self, result: dict[str, Any], path: str) -> None:
        """Heatmap of one :meth:`translate` result made with ``attention=True``."""
        if result.get("attention") is None:
            raise DataError("this model has no attention to draw (it was trained with none)")
        if not result["tokens"]:
            raise DataError("the translation is empty: nothing to draw")
        plot_attention(
            result["attention"],
            result["source_tokens"],
            result["tokens"],
            path,
            title=result["translation"][:80],
        )


def format_translation(result: dict[str, Any]) -> str:
    """The translation, then its score and the input, on one line."""
    return f"{result['translation']}\t(score {result['score']:.3f}; {result['source']})"


def bleu_by_length(
    source_lengths: Sequence[int],
    hypotheses: Sequence[str],
    references: Sequence[str],
    buckets: Sequence[int] = LENGTH_BUCKETS,
) -> list[dict[str, Any]]:
    """Corpus BLEU of the sentences in each source-length bucket: ≤ b_1, b_1+1 .. b_2, …,
    > b_last; each entry ``{"bucket", "low", "high", "n", "bleu"}`` (``high`` None = no limit)."""
    edges = [0, *buckets, None]
    out = []
    for low, high in zip(edges[:-1], edges[1:]):
        idx = [i for i, n in enumerate(source_lengths) if n > low and (high is None or n <= high)]
        label = f"{low + 1}-{high}" if high is not None else f"{low + 1}+"
        bleu = (
            bleu_scores([hypotheses[i] for i in idx], [[references[i]] for i in idx])["bleu"]
            if idx
            else float("nan")
        )
        out.append({"bucket": label, "low": low + 1, "high": high, "n": len(idx), "bleu": bleu})
    return out
