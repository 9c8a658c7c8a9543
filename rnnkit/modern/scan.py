"""The log-space parallel scan of a first-order linear recurrence (Heinsen 2023), and its chunks.

For h_t = a_t ⊙ h_{t−1} + b_t (t = 1..T, elementwise) with a_t > 0 and b_t > 0 given as logs,
unrolling gives

    h_t = A_t ⊙ (h_0 + Σ_{s≤t} b_s / A_s),    A_t = Π_{r≤t} a_r,

and in logs, with a*_t = Σ_{r≤t} log a_r (a cumulative sum),

    log(h_t − A_t h_0) = a*_t + log Σ_{s≤t} exp(log b_s − a*_s)      (a logcumsumexp)

so the whole sequence costs one cumsum, one logcumsumexp and one exp, each parallel over time.
The initial state enters as the separate term A_t ⊙ h_0 = exp(a*_t) ⊙ h_0, so h_0 may be zero or
negative (its log is never taken) and its gradient is the plain product A_t.

logcumsumexp is computed stably (running maximum), but a*_t falls linearly with t, so the sum
a*_t + (·) cancels two numbers of size |a*_t|: in float32 the relative error of h grows like
ε·|a*_t|. :func:`chunked_log_scan` restarts the cumulative sums every ``chunk_size`` steps,
carrying the state between chunks, which bounds both that error and the working memory.

Lengths: a padded step with log a = 0 and log b = −∞ leaves the state unchanged, which is how
the cells freeze a finished sequence (:func:`freeze_padding`).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["log_scan", "chunked_log_scan", "linear_scan_loop", "freeze_padding", "time_mask"]


def log_scan(log_a: Tensor, log_b: Tensor, h0: Tensor | None = None) -> Tensor:
    """h_t = a_t ⊙ h_{t−1} + b_t over ``dim=1`` from logs ``(B, T, H)``; returns h ``(B, T, H)``.

    h_t = exp(a*_t + logcumsumexp(log b − a*)_t) + exp(a*_t) ⊙ h_0 with a* = cumsum(log a);
    ``h0 (B, H)`` or None (zero).
    """
    a_star = log_a.cumsum(1)  # (B, T, H)
    h = torch.exp(a_star + torch.logcumsumexp(log_b - a_star, 1))
    if h0 is not None:
        h = h + torch.exp(a_star) * h0.unsqueeze(1)
    return h


def chunked_log_scan(
    log_a: Tensor, log_b: Tensor, h0: Tensor | None = None, chunk_size: int | None = None
) -> Tensor:
    """:func:`log_scan` over consecutive chunks of ``chunk_size`` steps, the state carried.

    Equal to the unchunked scan in exact arithmetic; memory for the scan's temporaries is
    O(B · chunk_size · H) and the float error of each chunk is that of a length-``chunk_size``
    scan. ``chunk_size=None`` (or ≥ T) is one chunk.
    """
    T = log_a.shape[1]
    if chunk_size is None or chunk_size >= T:
        return log_scan(log_a, log_b, h0)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive number of steps; got {chunk_size}")
    outs = []
    for start in range(0, T, chunk_size):
        h = log_scan(log_a[:, start : start + chunk_size], log_b[:, start : start + chunk_size], h0)
        h0 = h[:, -1]
        outs.append(h)
    return torch.cat(outs, 1)


def linear_scan_loop(a: Tensor, b: Tensor, h0: Tensor) -> Tensor:
    """The same recurrence h_t = a_t ⊙ h_{t−1} + b_t one step at a time (the scans' oracle)."""
    outs = []
    h = h0
    for a_t, b_t in zip(a.unbind(1), b.unbind(1)):
        h = a_t * h + b_t
        outs.append(h)
    return torch.stack(outs, 1)


def time_mask(lengths: Tensor | None, seq_len: int, device=None) -> Tensor | None:
    """``(B, T, 1)`` boolean mask, True at the valid steps t < lengths[b]; None without lengths."""
    if lengths is None:
        return None
    steps = torch.arange(seq_len, device=device)
    return (steps.unsqueeze(0) < lengths.to(device).unsqueeze(1)).unsqueeze(-1)


def freeze_padding(log_a: Tensor, log_b: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """Make the padded steps identities: log a = 0 and log b = −∞ where ``mask`` is False."""
    if mask is None:
        return log_a, log_b
    return log_a.masked_fill(~mask, 0.0), log_b.masked_fill(~mask, float("-inf"))
