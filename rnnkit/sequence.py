"""Padded-sequence helpers shared by the time loops: length checks, reversal within lengths, masks.

A batch of sequences is padded to ``(B, T, ...)`` with per-sequence ``lengths`` (B,); both the
reference loop (:mod:`rnnkit.layers`) and the fast path (:mod:`rnnkit.fast`) use these, which is
why they live below both.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["check_lengths", "reverse_padded", "step_mask"]


def check_lengths(lengths, batch_size: int, seq_len: int) -> Tensor:
    """Validate per-sequence lengths and return them as a CPU int64 tensor."""
    if isinstance(lengths, Tensor):
        if lengths.is_floating_point() or lengths.is_complex():
            raise ValueError(f"lengths must be integers; got dtype {lengths.dtype}")
        lengths = lengths.detach().to("cpu", torch.int64)
    else:
        lengths = torch.as_tensor(list(lengths), dtype=torch.int64)
    if lengths.dim() != 1 or lengths.numel() != batch_size:
        raise ValueError(
            f"lengths must have one entry per sequence: expected shape ({batch_size},); "
            f"got {tuple(lengths.shape)}"
        )
    if batch_size and (lengths.min() <= 0 or lengths.max() > seq_len):
        raise ValueError(
            f"lengths must lie in 1..{seq_len} (the padded length T); "
            f"got min {int(lengths.min())}, max {int(lengths.max())}"
        )
    return lengths


def reverse_padded(x: Tensor, lengths: Tensor | None) -> Tensor:
    """Reverse each sequence of ``x (B, T, ...)`` within its own length; padding stays at the end.

    Applying it twice gives ``x`` back, so it also maps reversed outputs to the original order.
    """
    if lengths is None:
        return x.flip(1)
    T = x.shape[1]
    t = torch.arange(T)
    L = lengths.unsqueeze(1)  # (B, 1)
    idx = torch.where(t < L, L - 1 - t, t).to(x.device)  # (B, T)
    idx = idx.view(*idx.shape, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(1, idx)


def step_mask(lengths: Tensor, seq_len: int) -> Tensor:
    """m_t[b] = 1 if step t lies inside sequence b (t < lengths[b]), as a bool ``(T, B, 1)``."""
    steps = torch.arange(seq_len).unsqueeze(1)  # (T, 1)
    return (steps < lengths.unsqueeze(0)).unsqueeze(-1)
