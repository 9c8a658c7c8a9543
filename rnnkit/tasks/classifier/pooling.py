"""Pooling a sequence of states into one vector: last, mean, max and attention."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from rnnkit.tasks.classifier.config import POOLINGS


def pool_sequence(
    y: Tensor,
    lengths: Tensor,
    mode: str,
    bidirectional: bool = False,
    attention: AttentionPooling | None = None,
) -> Tensor:
    """One vector per sequence from ``y (B, T, F)`` over each sequence's first ``lengths[b]``
    steps (see the module docstring for the four modes); ``(B, F)``."""
    B, T, Fdim = y.shape
    lengths = lengths.to(y.device)
    mask = torch.arange(T, device=y.device).unsqueeze(0) < lengths.unsqueeze(1)  # (B, T)
    if mode == "last":
        last = y[torch.arange(B, device=y.device), lengths - 1]  # (B, F)
        if not bidirectional:
            return last
        H = Fdim // 2
        return torch.cat([last[:, :H], y[:, 0, H:]], -1)  # backward direction ends at step 1
    if mode == "mean":
        return (y * mask.unsqueeze(2)).sum(1) / lengths.unsqueeze(1).to(y.dtype)
    if mode == "max":
        return y.masked_fill(~mask.unsqueeze(2), -math.inf).amax(1)
    if mode == "attention":
        if attention is None:
            raise ValueError("attention pooling needs an AttentionPooling module")
        return attention(y, mask)
    raise ValueError(f"pooling must be one of {POOLINGS}; got {mode!r}")


class AttentionPooling(nn.Module):
    """u_t = tanh(W y_t + b), a_t = v·u_t, α = softmax over real steps, z = Σ_t α_t y_t."""

    def __init__(self, input_size: int, attention_size: int):
        super().__init__()
        self.proj = nn.Linear(input_size, attention_size)
        self.score = nn.Linear(attention_size, 1, bias=False)

    def weights(self, y: Tensor, mask: Tensor) -> Tensor:
        """α ``(B, T)``: zero on padding, summing to one over each sequence."""
        a = self.score(torch.tanh(self.proj(y))).squeeze(-1)  # (B, T)
        return torch.softmax(a.masked_fill(~mask, -math.inf), dim=1)

    def forward(self, y: Tensor, mask: Tensor) -> Tensor:
        return torch.einsum("bt,btf->bf", self.weights(y, mask), y)  # (B, F)
