"""Word completion: what a keyboard's suggestion bar shows after a text.

* :func:`complete_word` finishes the word being typed: a beam search over characters (char
  models) or subword tokens (:func:`complete_subwords`, BPE models) until a word boundary;
* :func:`next_words` ranks whole next words straight from a word model's softmax.

Each takes ``(logits, state)`` (or logits) after the text when the caller already holds them —
a keyboard session of the server carries that state, so typing never re-reads the text.
"""

from __future__ import annotations

import heapq
import math
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    from rnnkit.tasks.language_model.model import TextModel

__all__ = [
    "complete_subwords",
    "complete_word",
    "is_word_boundary",
    "next_words",
    "typed_prefix",
]


def is_word_boundary(ch: str) -> bool:
    """Whether ``ch`` ends a word (not a letter, digit, apostrophe, hyphen or underscore)."""
    return not (ch.isalnum() or ch in "'-_")


def typed_prefix(text: str) -> str:
    """The part of the word being typed at the end of ``text``: what follows its last word
    boundary (``""`` right after one)."""
    start = len(text)
    while start and not is_word_boundary(text[start - 1]):
        start -= 1
    return text[start:]


def _read(model: TextModel, text: str, unknown: str | None) -> tuple[Tensor, Any]:
    """(next logits, state) after ``default_context() + text``: conditioned exactly as
    ``score()`` is, so p(word) = exp(score(text + word) − score(text))."""
    return model.advance(model.encode(model.default_context() + text, unknown))


def _completion(prefix: str, cont: str, boundary: str, log_prob: float) -> dict[str, Any]:
    """One suggestion: the whole ``word``, the ``continuation`` to type, the likeliest
    ``boundary`` after it, its ``probability`` and ``log_prob``."""
    return {
        "word": prefix + cont,
        "continuation": cont,
        "boundary": boundary,
        "probability": math.exp(log_prob),
        "log_prob": log_prob,
    }


@torch.no_grad()
def complete_word(
    model: TextModel,
    text: str,
    k: int = 5,
    beam_size: int | None = None,
    max_chars: int = 24,
    unknown: str | None = None,
    context: tuple[Tensor, Any] | None = None,
) -> list[dict[str, Any]]:
    """The ``k`` most likely ways to finish the word being typed at the end of ``text`` (as
    ``TextModel.complete``).

    Beam search over characters until each candidate emits a word boundary (space,
    punctuation, line end). A completion's probability is p(continuation + boundary | text):
    the probability that the word is exactly this one, summed over every boundary character
    that may follow. Returns dicts with ``word`` (the whole word), ``continuation`` (what to
    type), ``boundary`` (the likeliest character after it), ``probability`` and ``log_prob``.
    ``context`` is ``(next logits, state)`` after reading ``default_context() + text``, when
    the caller already holds it (a keyboard session), so the text is not read again.
    """
    if model.vocab.level == "bpe":
        return complete_subwords(
            model, text, k, beam_size or max(2 * k, 8), max_chars, unknown, context
        )
    if model.vocab.level != "char":
        raise ValueError("complete() on a word-level model: use next_words()")
    model.eval()
    beam_size = beam_size or max(2 * k, 8)
    prefix = typed_prefix(text)
    logits, state = context or _read(model, text, unknown)
    specials = len(model.vocab.specials)
    itos = model.vocab.itos
    boundary_ids = torch.tensor(
        [i for i in range(specials, len(itos)) if is_word_boundary(itos[i])], device=model.device
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
            lg, st2 = model.advance([idx], st)
            beams.append((lp, cont, lg, st2))
    top_k = heapq.nlargest(k, finished, key=lambda f: f[0])
    return [_completion(prefix, cont, boundary, lp) for lp, cont, boundary in top_k]


@torch.no_grad()
def complete_subwords(
    model: TextModel, text: str, k: int, beam_size: int, max_chars: int, unknown, context=None
) -> list[dict[str, Any]]:
    """``complete()`` for BPE models: beam search over subword tokens until the decoded
    continuation reaches a word boundary. A completion's probability is that of the token path
    spelling the word up to (and through the token holding) its boundary. ``context``: as for
    ``complete()``, the (logits, state) after the text when the caller holds them."""
    model.eval()
    prefix = typed_prefix(text)
    logits, state = context or _read(model, text, unknown)
    specials = len(model.vocab.specials)
    beams = [(0.0, [], logits, state)]
    finished: dict[str, tuple[float, str]] = {}
    for _ in range(max_chars):
        candidates = []
        for lp, ids, lg, st in beams:
            logp = torch.log_softmax(lg.float(), -1)
            logp[:specials] = -math.inf
            top = torch.topk(logp, min(beam_size, logp.numel() - specials))
            for value, idx in zip(top.values.tolist(), top.indices.tolist()):
                cont = model.vocab.decode(ids + [idx])
                cut = next((i for i, ch in enumerate(cont) if is_word_boundary(ch)), None)
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
            lg, st2 = model.advance([ids[-1]], st)
            beams.append((lp, ids, lg, st2))
    top_k = heapq.nlargest(k, finished.items(), key=lambda f: f[1][0])
    return [_completion(prefix, cont, boundary, lp) for cont, (lp, boundary) in top_k]


@torch.no_grad()
def next_words(
    model: TextModel,
    text: str,
    k: int = 5,
    unknown: str | None = None,
    logits: Tensor | None = None,
    prefix: str = "",
) -> list[dict[str, Any]]:
    """The ``k`` most likely next words after ``text`` (word-level models; as
    ``TextModel.next_words``): a phone keyboard's suggestion bar. Probabilities come straight
    from the model's softmax over the whole vocabulary, so they sum to at most 1; special
    symbols are never suggested. ``logits`` are the next-word logits after
    ``default_context() + text`` when the caller holds them (a session); ``prefix`` keeps only
    the words that start with it (the word being typed), each with the ``continuation`` still
    to type."""
    if model.vocab.level != "word":
        raise ValueError("next_words() needs a word-level model; use complete() for characters")
    model.eval()
    if logits is None:
        logits, _ = model.advance(model.encode(model.default_context() + text, unknown))
    logp = torch.log_softmax(logits.float(), -1)
    logp[: len(model.vocab.specials)] = -math.inf
    if prefix:
        keep = torch.tensor([w.startswith(prefix) for w in model.vocab.itos], device=logp.device)
        logp = logp.masked_fill(~keep, -math.inf)
    top = torch.topk(logp, min(k, logp.numel() - len(model.vocab.specials)))
    return [
        {
            "word": model.vocab.itos[i],
            "continuation": model.vocab.itos[i][len(prefix) :],
            "probability": math.exp(v),
            "log_prob": v,
        }
        for v, i in zip(top.values.tolist(), top.indices.tolist())
        if v > -math.inf
    ]
