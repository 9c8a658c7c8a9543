"""An exported language model (graphs ``lm_step`` and ``lm_sequence``): generate, score,
complete the word being typed, and the next words of a word model, as ``LanguageModel`` does.

The sampling loop is rnnkit's own (:class:`~rnnkit.portable.text_sampling.TextSampling`); this
module gives it the engine: the graphs' logits and the NumPy draw of :mod:`.sampling`.
"""

from __future__ import annotations

import heapq
import logging
import math
from typing import Any

import numpy as np

from .folder import ExportFolder
from .sampling import log_softmax, sample_next
from .shared import TextSampling, score_record

log = logging.getLogger("rnnkit_runner")


class LanguageMethods(ExportFolder, TextSampling):
    """The inference methods of an exported ``lm`` (or ``music``) model."""

    def _lm_advance(self, ids: list[int], state=None, chunk: int = 512):
        """Feed one sequence; (last logits (V,), state)."""
        state = state or self.zero_state(1)
        logits = None
        for s in range(0, len(ids), chunk):
            piece = np.array([ids[s : s + chunk]], dtype=np.int64)
            if piece.shape[1] == 1:
                out = self.run("lm_step", {"ids": piece[:, 0], **state})
                logits = out["logits"][0]
            else:
                feeds = {"ids": piece, "lengths": np.array([piece.shape[1]]), **state}
                out = self.run("lm_sequence", feeds)
                logits = out["logits"][0, -1]
            state = {n: out[n + "_out"] for n in self.config["state"]}
        return logits, state

    def encode(self, text: str, unknown: str | None = None) -> list[int]:
        """Text → ids: characters, or words with ``<eos>`` for each line break."""
        v = self.vocab
        if v.level == "char":
            toks = list(text)
        else:
            toks = []
            for i, line in enumerate(text.split("\n")):
                if i:
                    toks.append("<eos>")
                toks.extend(line.split())
        unknown = unknown or ("error" if v.level == "char" else "unk")
        if unknown == "unk" and v.level == "word":
            oov = sorted({t for t in toks if t not in v.stoi})
            if oov:
                log.warning("words not in the vocabulary, read as <unk>: %s", ", ".join(oov[:20]))
        return v.encode(toks, unknown)

    def default_context(self) -> str:
        """What generation and scoring condition on when given no prompt: a line start."""
        v = self.vocab
        return "\n" if v.level == "word" or "\n" in v.stoi else v.itos[len(v.specials)]

    def decode(self, ids: list[int]) -> str:
        """Ids → text; at word level ``<eos>`` becomes a line break."""
        v = self.vocab
        if v.level == "char":
            return "".join(v.itos[i] for i in ids)
        text = ""
        for i in ids:
            word = "\n" if i == v.eos_id else v.itos[i]
            text += word if (not text or text.endswith("\n") or word == "\n") else " " + word
        return text

    # -- the engine of generate / sample_text (rnnkit.portable.text_sampling) ---------------
    def _sampler(self, seed: int | None) -> np.random.Generator:
        return np.random.default_rng(seed)

    def _first_logits(self, ids: list[int]):
        return self._lm_advance(ids)

    def _next_logits(self, token_id: int, state):
        return self._lm_advance([token_id], state)

    def _draw(self, logits, banned, temperature, top_k, top_p, generator) -> int:
        logits = logits.copy()
        logits[banned] = -np.inf
        return sample_next(logits, temperature, top_k, top_p, generator)

    def log_probs(self, text: str, context: str | None = None, unknown=None) -> np.ndarray:
        context = self.default_context() if context is None else context
        ctx, ids = self.encode(context, unknown), self.encode(text, unknown)
        if not ids:
            raise ValueError("nothing to score: the text is empty")
        full = ctx + ids
        if not ctx:
            full, ids = ids, ids[1:]
        x = np.array([full[:-1]], dtype=np.int64)
        feeds = {"ids": x, "lengths": np.array([x.shape[1]]), **self.zero_state(1)}
        lp = log_softmax(self.run("lm_sequence", feeds)["logits"][0])
        per_token = lp[np.arange(len(full) - 1), np.array(full[1:])]
        return per_token[len(per_token) - len(ids) :]

    def score(self, text: str, context: str | None = None, unknown=None) -> dict[str, Any]:
        """log p(text) and nats / bits per token, perplexity (as ``LanguageModel.score``)."""
        lp = self.log_probs(text, context, unknown)
        return score_record(text, float(lp.astype(np.float64).sum()), lp.size)

    def complete(self, text: str, k: int = 5, beam_size=None, max_chars: int = 24, unknown=None):
        """The ``k`` likeliest endings of the word being typed (``LanguageModel.complete``)."""
        v = self.vocab
        if v.level != "char":
            raise ValueError("complete() on a word-level model")
        beam_size = beam_size or max(2 * k, 8)
        boundary = lambda ch: not (ch.isalnum() or ch in "'-_")  # noqa: E731
        prefix = ""
        for ch in reversed(text):
            if boundary(ch):
                break
            prefix = ch + prefix
        logits, state = self._lm_advance(self.encode(self.default_context() + text, unknown))
        specials, itos = len(v.specials), v.itos
        bids = np.array([i for i in range(specials, len(itos)) if boundary(itos[i])], np.int64)
        beams = [(0.0, "", logits, state)]
        finished: list[tuple[float, str, str]] = []
        for _ in range(max_chars):
            candidates = []
            for lp, cont, lg, st in beams:
                logp = log_softmax(lg)
                logp[:specials] = -np.inf
                if (prefix + cont) and bids.size:
                    ends = logp[bids]
                    m = float(np.max(ends))
                    lse = m + math.log(float(np.sum(np.exp(ends - m)))) if m > -np.inf else m
                    finished.append((lp + lse, cont, itos[int(bids[int(np.argmax(ends))])]))
                logp[bids] = -np.inf
                top = np.argsort(-logp, kind="stable")[: min(beam_size, logp.size - specials)]
                for idx in top:
                    if logp[idx] > -np.inf:
                        candidates.append((lp + float(logp[idx]), cont + itos[idx], int(idx), st))
            if not candidates:
                break
            best = heapq.nlargest(beam_size, candidates, key=lambda c: c[0])
            if len(finished) >= k and best[0][0] < sorted(f[0] for f in finished)[-k]:
                break
            beams = []
            for lp, cont, idx, st in best:
                lg, st2 = self._lm_advance([idx], st)
                beams.append((lp, cont, lg, st2))
        return [
            {
                "word": prefix + cont,
                "continuation": cont,
                "boundary": b,
                "probability": math.exp(lp),
                "log_prob": lp,
            }
            for lp, cont, b in heapq.nlargest(k, finished, key=lambda f: f[0])
        ]

    def next_words(self, text: str, k: int = 5, unknown=None) -> list[dict[str, Any]]:
        """The ``k`` likeliest next words of a word-level model (``LanguageModel.next_words``)."""
        v = self.vocab
        if v.level != "word":
            raise ValueError("next_words() needs a word-level model; use complete()")
        logits, _ = self._lm_advance(self.encode(self.default_context() + text, unknown))
        logp = log_softmax(logits)
        logp[: len(v.specials)] = -np.inf
        top = np.argsort(-logp, kind="stable")[: min(k, logp.size - len(v.specials))]
        return [
            {"word": v.itos[i], "probability": math.exp(float(logp[i])), "log_prob": float(logp[i])}
            for i in top
        ]
