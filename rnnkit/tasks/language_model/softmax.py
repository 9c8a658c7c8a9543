"""Large-vocabulary pieces of the language model: the adaptive softmax (Grave et al. 2017) and
word completion for byte-level BPE models.

:class:`AdaptiveSoftmax` wraps ``torch.nn.AdaptiveLogSoftmaxWithLoss``: p(w) = p_head(w) for the
frequent ids below the first cutoff, else p_head(cluster c) · p_c(w), each tail cluster projected
to hidden_size / 4^i first. Training never forms the ``(B, T, V)`` logits; inference gets the
log-probabilities (whose softmax is p, so every caller of ``logits`` keeps working).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    pass

__all__ = ["AdaptiveSoftmax", "adaptive_cutoffs"]


def adaptive_cutoffs(spec: str, vocab_size: int) -> list[int]:
    """``"2000,10000"`` → cluster edges below ``vocab_size − 1`` (those beyond are dropped)."""
    try:
        edges = [int(x) for x in str(spec).replace(" ", "").split(",") if x]
    except ValueError:
        raise ValueError(f"cutoffs must be comma-separated integers; got {spec!r}") from None
    if edges != sorted(set(edges)) or any(e < 1 for e in edges):
        raise ValueError(f"cutoffs must be increasing positive integers; got {spec!r}")
    kept = [e for e in edges if e < vocab_size - 1]
    if not kept:
        raise ValueError(
            f"the vocabulary of {vocab_size} is too small for cutoffs {spec!r}: the adaptive "
            "softmax needs a first cutoff below vocab_size - 1"
        )
    return kept


class AdaptiveSoftmax(nn.Module):
    """The adaptive output layer over ``hidden_size`` features and ``vocab_size`` ids."""

    def __init__(self, hidden_size: int, vocab_size: int, cutoffs: str):
        super().__init__()
        edges = adaptive_cutoffs(cutoffs, vocab_size)
        if hidden_size // 4 ** len(edges) < 1:
            raise ValueError(
                f"hidden_size {hidden_size} is too small for {len(edges)} tail "
                f"cluster(s): cluster i is projected to hidden_size / 4^i"
            )
        self.adaptive = nn.AdaptiveLogSoftmaxWithLoss(hidden_size, vocab_size, edges, div_value=4.0)

    @contextlib.contextmanager
    def _full_precision(self, y: Tensor):
        """In the weights' dtype, outside autocast (whose bf16 cluster outputs would not fit
        the module's fp32 buffers)."""
        with torch.autocast(y.device.type, enabled=False):
            yield y.to(self.adaptive.head.weight.dtype)

    def log_prob(self, y: Tensor) -> Tensor:
        """``y (B, T, H)`` → log p over the vocabulary, ``(B, T, V)``."""
        B, T, H = y.shape
        with self._full_precision(y) as y:
            return self.adaptive.log_prob(y.reshape(-1, H)).view(B, T, -1)

    def target_log_prob(self, y: Tensor, targets: Tensor) -> Tensor:
        """log p(targets) ``(B, T)`` without the full distribution."""
        B, T, H = y.shape
        with self._full_precision(y) as y:
            return self.adaptive(y.reshape(-1, H), targets.reshape(-1)).output.view(B, T)

    def loss(self, y: Tensor, targets: Tensor) -> Tensor:
        """−mean log p(targets) over every token."""
        H = y.shape[-1]
        with self._full_precision(y) as y:
            return self.adaptive(y.reshape(-1, H), targets.reshape(-1)).loss
