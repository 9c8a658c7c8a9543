"""Attention over a set of keys: additive (Bahdanau) and multiplicative (Luong dot / general).

A decoder state (the *query* q, ``(B, Dq)``) scores every key k_1..k_S (encoder states, image
regions; ``(B, S, Dk)``), the scores become weights with a softmax over the real positions, and
the weights average the keys into a context vector::

    e_s = score(q, k_s)
    α_s = exp(e_s) / Σ_{s' real} exp(e_{s'})        (α_s = 0 exactly where the mask is False)
    c   = Σ_s α_s k_s

with, for the three kinds:

* ``additive`` (Bahdanau, Cho & Bengio 2015):   score(q, k) = vᵀ tanh(W_q q + W_k k + b);
* ``dot`` (Luong, Pham & Manning 2015):          score(q, k) = qᵀ k          (needs Dq = Dk);
* ``general`` (Luong et al. 2015):               score(q, k) = qᵀ W k.

The key side of every score (W_k k for additive, W k for general) does not depend on the query,
so :meth:`Attention.prepare` computes it once per batch and a decoder passes it to every step as
``prepared``; a step then costs one small matrix product on the query plus the (B, S) scores.

:func:`plot_attention` draws a weight matrix (one row per output token) as a heatmap PNG.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from rnnkit.checks import check_positive
from rnnkit.figures import save_heatmap

__all__ = [
    "ATTENTION_KINDS",
    "AdditiveAttention",
    "Attention",
    "DotAttention",
    "GeneralAttention",
    "build_attention",
    "plot_attention",
]

ATTENTION_KINDS = ("additive", "dot", "general", "none")


class Attention(nn.Module):
    """The shared contract: :meth:`prepare` the keys once, then call once per query.

    ``forward(query (B, Dq), keys (B, S, Dk), mask (B, S) bool | None, prepared | None)`` →
    ``(context (B, Dk), weights (B, S))``. ``mask`` is True on real positions; masked positions
    get weight exactly 0 and each row of weights sums to 1 (a row with no real position at all
    gets uniform weights rather than NaNs). Subclasses implement :meth:`score`.
    """

    def __init__(self, query_size: int, key_size: int):
        super().__init__()
        check_positive(query_size=query_size, key_size=key_size)
        self.query_size = query_size
        self.key_size = key_size

    def prepare(self, keys: Tensor) -> Tensor:
        """What :meth:`score` needs from the keys, computed once per batch (default: the keys)."""
        return keys

    def score(self, query: Tensor, keys: Tensor, prepared: Tensor) -> Tensor:
        """Unnormalised scores e ``(B, S)``."""
        raise NotImplementedError

    def forward(
        self,
        query: Tensor,
        keys: Tensor,
        mask: Tensor | None = None,
        prepared: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        if query.dim() != 2 or query.shape[1] != self.query_size:
            raise ValueError(
                f"{type(self).__name__} expected a query of shape (B, {self.query_size}); "
                f"got {tuple(query.shape)}"
            )
        if keys.dim() != 3 or keys.shape[2] != self.key_size or keys.shape[0] != query.shape[0]:
            raise ValueError(
                f"{type(self).__name__} expected keys of shape ({query.shape[0]}, S, "
                f"{self.key_size}); got {tuple(keys.shape)}"
            )
        if prepared is None:
            prepared = self.prepare(keys)
        e = self.score(query, keys, prepared)  # (B, S)
        if mask is not None:
            # the most negative finite number, not -inf: exp underflows to exactly 0 for masked
            # positions, and a row with nothing real stays finite (uniform) instead of NaN
            e = e.masked_fill(~mask, torch.finfo(e.dtype).min)
        weights = torch.softmax(e, dim=-1)  # (B, S)
        context = torch.bmm(weights.unsqueeze(1), keys).squeeze(1)  # (B, Dk)
        return context, weights


class AdditiveAttention(Attention):
    """Bahdanau's score vᵀ tanh(W_q q + W_k k + b); ``prepare`` returns W_k k ``(B, S, A)``.

    Initialisation: torch's ``nn.Linear`` default for W_q (with the bias b) and W_k (no bias);
    v ~ U(−1/√A, 1/√A).
    """

    def __init__(self, query_size: int, key_size: int, attention_size: int):
        super().__init__(query_size, key_size)
        if attention_size <= 0:
            raise ValueError(f"attention_size must be positive; got {attention_size}")
        self.attention_size = attention_size
        self.query_proj = nn.Linear(query_size, attention_size)
        self.key_proj = nn.Linear(key_size, attention_size, bias=False)
        self.v = nn.Linear(attention_size, 1, bias=False)

    def prepare(self, keys: Tensor) -> Tensor:
        return self.key_proj(keys)  # (B, S, A)

    def score(self, query: Tensor, keys: Tensor, prepared: Tensor) -> Tensor:
        hidden = torch.tanh(prepared + self.query_proj(query).unsqueeze(1))  # (B, S, A)
        return self.v(hidden).squeeze(-1)  # (B, S)


class DotAttention(Attention):
    """Luong's dot score qᵀ k (no parameters; the query and keys must have the same width)."""

    def __init__(self, query_size: int, key_size: int):
        super().__init__(query_size, key_size)
        if query_size != key_size:
            raise ValueError(
                f"dot attention needs query_size == key_size; got {query_size} and {key_size} "
                "(use 'general' or 'additive' for different widths)"
            )

    def score(self, query: Tensor, keys: Tensor, prepared: Tensor) -> Tensor:
        return torch.bmm(prepared, query.unsqueeze(2)).squeeze(2)  # (B, S)


class GeneralAttention(Attention):
    """Luong's general score qᵀ W k; ``prepare`` returns W k ``(B, S, Dq)`` so a step is one
    batched dot product. W starts as torch's ``nn.Linear`` default (no bias)."""

    def __init__(self, query_size: int, key_size: int):
        super().__init__(query_size, key_size)
        self.key_proj = nn.Linear(key_size, query_size, bias=False)

    def prepare(self, keys: Tensor) -> Tensor:
        return self.key_proj(keys)  # (B, S, Dq)

    def score(self, query: Tensor, keys: Tensor, prepared: Tensor) -> Tensor:
        return torch.bmm(prepared, query.unsqueeze(2)).squeeze(2)  # (B, S)


def build_attention(
    kind: str, query_size: int, key_size: int, attention_size: int | None = None
) -> Attention | None:
    """An attention module of ``kind`` (``additive``, ``dot``, ``general``), or None for
    ``none``. ``attention_size`` (additive only) defaults to ``query_size``."""
    if kind == "none":
        return None
    if kind == "additive":
        return AdditiveAttention(query_size, key_size, attention_size or query_size)
    if kind == "dot":
        return DotAttention(query_size, key_size)
    if kind == "general":
        return GeneralAttention(query_size, key_size)
    raise ValueError(f"attention must be one of {', '.join(ATTENTION_KINDS)}; got {kind!r}")


def plot_attention(
    weights: Tensor | Sequence[Sequence[float]],
    source_tokens: Sequence[str],
    target_tokens: Sequence[str],
    path: str | os.PathLike[str],
    title: str | None = None,
) -> Path:
    """Write the attention matrix ``weights (T_out, S)`` as a heatmap PNG: one row per output
    token (``target_tokens``), one column per source position (``source_tokens``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    w = np.asarray(weights.detach().cpu() if isinstance(weights, Tensor) else weights, float)
    if w.ndim != 2 or w.shape != (len(target_tokens), len(source_tokens)):
        raise ValueError(
            f"weights must have shape ({len(target_tokens)}, {len(source_tokens)}) = "
            f"(target tokens, source tokens); got {w.shape}"
        )
    rows, cols = w.shape
    fig, ax = plt.subplots(figsize=(max(4.0, 0.45 * cols + 2), max(3.0, 0.4 * rows + 1.5)))
    im = ax.imshow(w, cmap="Greys", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(cols), list(source_tokens), rotation=60, ha="right")
    ax.set_yticks(range(rows), list(target_tokens))
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    if title:
        ax.set_title(title)
    return save_heatmap(fig, im, path, "attention weight")
