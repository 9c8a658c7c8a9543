"""Drawing the next token from logits: temperature, top-k and nucleus (top-p) sampling."""

from __future__ import annotations

import math

import torch
from torch import Tensor


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
    scaled = logits.float() / temperature
    if torch.isnan(scaled).any() or torch.isposinf(scaled).any():  # a tiny T overflowed
        scaled = (logits.float() - logits.float().max()) / temperature
    logits = scaled
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
