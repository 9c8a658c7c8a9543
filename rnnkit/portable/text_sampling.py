"""A language model's text inference above its engine: the sampling loop behind ``generate`` /
``sample_text`` and the record ``score`` returns (standard library only).

Written once for rnnkit's :class:`~rnnkit.tasks.language_model.model.TextModel` (logits from
torch) and the exported runner (logits from onnxruntime, drawn with NumPy); each supplies its
engine through the hooks of :class:`TextSampling`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["TextSampling", "score_record"]


def score_record(text: str, log_prob: float, tokens: int) -> dict[str, Any]:
    """What ``score`` returns for ``text`` of total log-probability ``log_prob`` over ``tokens``
    tokens: nats/token = −log p / n, bits/token = nats / ln 2, perplexity = exp(nats/token)."""
    nats = -log_prob / tokens
    return {
        "text": text,
        "log_prob": log_prob,
        "tokens": tokens,
        "nats_per_token": nats,
        "bits_per_token": nats / math.log(2),
        "perplexity": math.exp(nats),
    }


class TextSampling:
    """``generate`` and ``sample_text``: draw token after token from the engine's logits.

    The class this is mixed into supplies the text side — ``vocab`` (with ``specials``,
    ``eos_id`` and ``level``), ``encode(text, unknown)``, ``decode(ids)`` and
    ``default_context()`` — and the engine:

    * ``_sampler(seed)``: the random generator of one call, seeded unless ``seed`` is None;
    * ``_first_logits(ids)``: ``(next-token logits (V,), state)`` after reading ``ids``;
    * ``_next_logits(token_id, state)``: the same after one more token;
    * ``_draw(logits, banned, temperature, top_k, top_p, generator)``: one token id, never one
      of the ``banned`` ids.
    """

    #: what a prompt with nothing left to read raises (rnnkit's models: its ``DataError``)
    input_error: type[Exception] = ValueError

    def banned_ids(self) -> list[int]:
        """Ids never sampled: the specials, except ``<eos>`` for word models (a line end)."""
        return [
            i
            for i in range(len(self.vocab.specials))
            if i != self.vocab.eos_id or self.vocab.level != "word"
        ]

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
        return self.sample_text(prompt, length, temperature, top_k, top_p, seed, on_text, unknown)[
            0
        ]

    def sample_text(
        self,
        prompt: str = "",
        length: int = 500,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        on_text: Callable[[str], None] | None = None,
        unknown: str | None = None,
        stop: Sequence[str] = (),
    ) -> tuple[str, int, str]:
        """:meth:`generate` that also stops at the first of the ``stop`` strings (cut off, not
        included): returns ``(text, tokens drawn, finish_reason "length" | "stop")``."""
        context = prompt if prompt else self.default_context()
        ids = self.encode(context, unknown)
        if not ids:
            raise self.input_error("the prompt has no characters left after dropping unknown ones")
        generator = self._sampler(seed)
        logits, state = self._first_logits(ids)
        new_ids: list[int] = []
        banned = self.banned_ids()
        stop = [s for s in stop if s]
        shown = 0
        for _ in range(length):
            nxt = self._draw(logits, banned, temperature, top_k, top_p, generator)
            new_ids.append(nxt)
            if on_text is not None:
                text = self.decode(new_ids)
                if not text.endswith("\ufffd"):  # a BPE byte may end mid-character: wait
                    on_text(text[shown:])
                    shown = len(text)
            if stop:
                text = self.decode(new_ids)
                cut = min((text.find(s) for s in stop if s in text), default=-1)
                if cut >= 0:
                    return text[:cut], len(new_ids), "stop"
            logits, state = self._next_logits(nxt, state)
        return self.decode(new_ids), len(new_ids), "length"
