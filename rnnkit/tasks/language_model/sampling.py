"""Drawing the next token from logits: temperature, top-k and nucleus (top-p) sampling."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor


def sample_rows(
    logits: Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generators: Sequence[torch.Generator | None] | torch.Generator | None = (None,),
) -> list[int]:
    """Draw one token id per row of ``logits (B, V)``, row ``b`` with ``generators[b]``; one
    generator (or None) for all rows draws them in a single call.

    p ∝ exp(logits / T); top-k keeps the k largest; top-p (nucleus) keeps the smallest set of
    tokens whose probability reaches p. ``temperature == 0`` returns the argmax. Every step is
    row by row, so a row's draw does not depend on the other rows of the batch.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0; got {temperature}")
    if temperature == 0:
        return logits.argmax(-1).tolist()
    scaled = logits.float() / temperature
    overflow = (torch.isnan(scaled) | torch.isposinf(scaled)).any(-1)  # a tiny T overflowed
    if overflow.any():
        shifted = (logits.float() - logits.float().amax(-1, keepdim=True)) / temperature
        scaled = torch.where(overflow.unsqueeze(-1), shifted, scaled)
    if top_k is not None and top_k > 0:
        kth = torch.topk(scaled, min(top_k, scaled.shape[-1]), dim=-1).values[:, -1:]
        scaled = scaled.masked_fill(scaled < kth, -math.inf)
    if top_p is not None and 0 < top_p < 1:
        probs_sorted, order = torch.sort(torch.softmax(scaled, -1), dim=-1, descending=True)
        cumulative = probs_sorted.cumsum(-1)
        drop = cumulative - probs_sorted >= top_p  # tokens after the nucleus is complete
        scaled = scaled.masked_fill(drop.scatter(-1, order, drop), -math.inf)
    probs = torch.softmax(scaled, -1)
    if generators is None or isinstance(generators, torch.Generator):
        return torch.multinomial(probs, 1, generator=generators).view(-1).tolist()
    return [int(torch.multinomial(probs[b], 1, generator=g)) for b, g in enumerate(generators)]


def sample_next(
    logits: Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> int:
    """Draw one token id from ``logits (V,)``: :func:`sample_rows` on a batch of one."""
    return sample_rows(logits.unsqueeze(0), temperature, top_k, top_p, [generator])[0]
