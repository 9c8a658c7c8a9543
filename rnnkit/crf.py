"""Linear-chain conditional random field over per-step tag scores (Lafferty et al. 2001).

A tagger's encoder gives emission scores ``e_t(j)`` for tag j at step t; the CRF adds learned
transition scores ``A[i, j]`` (tag i followed by tag j), start scores ``s_j`` and end scores
``f_j``. A tag sequence y_1..y_T of a sentence x scores

    score(x, y) = s_{y_1} + Σ_{t=1..T} e_t(y_t) + Σ_{t=2..T} A[y_{t−1}, y_t] + f_{y_T}

and p(y | x) = exp(score(x, y)) / Z(x), with Z(x) = Σ_y' exp(score(x, y')) over all K^T
sequences. Both sums over sequences are dynamic programmes over the chain:

* forward algorithm (log Z): α_1(j) = s_j + e_1(j);
  α_t(j) = e_t(j) + log Σ_i exp(α_{t−1}(i) + A[i, j]);  log Z = log Σ_j exp(α_T(j) + f_j);
* Viterbi (best sequence): the same with max for log-sum-exp, keeping the argmax i of each
  step as a back-pointer, then reading the path back from argmax_j (δ_T(j) + f_j).

Training minimises the negative log-likelihood −log p(y | x) = log Z(x) − score(x, y). Batches of
padded sequences carry a mask ``(B, T)`` that is true on each sequence's first ``length`` steps;
padded steps change nothing (the recursions carry α/δ through them unchanged).

``allowed`` transitions (e.g. no ``O → I-X`` in BIO tagging, see :func:`bio_transitions`) are
enforced by adding a large negative constant to the forbidden scores, so neither training nor
decoding ever uses them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["LinearChainCRF", "bio_transitions"]

_FORBIDDEN = -1e4  # added to forbidden scores: exp(-1e4) underflows to 0, yet no inf − inf NaNs


def bio_transitions(tags: Sequence[str]) -> tuple[Tensor, Tensor]:
    """``(allowed_start (K,), allowed (K, K))`` for BIO tags: a sequence cannot start with
    ``I-X``, and ``I-X`` may only follow ``B-X`` or ``I-X``. Tags that are not BIO are free."""
    K = len(tags)
    start = torch.ones(K, dtype=torch.bool)
    allowed = torch.ones(K, K, dtype=torch.bool)
    for j, tag in enumerate(tags):
        if tag.startswith("I-"):
            start[j] = False
            kind = tag[2:]
            for i, prev in enumerate(tags):
                allowed[i, j] = prev in (f"B-{kind}", f"I-{kind}")
    return start, allowed


class LinearChainCRF(nn.Module):
    """CRF layer: :meth:`nll` for training, :meth:`decode` (Viterbi) for prediction.

    Args:
        num_tags: K.
        allowed_start: ``(K,)`` bool, which tags may begin a sequence (default: all).
        allowed: ``(K, K)`` bool, ``allowed[i, j]``: may tag j follow tag i (default: all).

    Parameters ``transitions (K, K)``, ``start (K,)``, ``end (K,)`` start at zero (a uniform
    chain: the model first behaves like independent softmaxes and learns the transitions).
    """

    def __init__(
        self,
        num_tags: int,
        allowed_start: Tensor | None = None,
        allowed: Tensor | None = None,
    ):
        super().__init__()
        if num_tags < 1:
            raise ValueError(f"num_tags must be at least 1; got {num_tags}")
        self.num_tags = num_tags
        self.transitions = nn.Parameter(torch.zeros(num_tags, num_tags))
        self.start = nn.Parameter(torch.zeros(num_tags))
        self.end = nn.Parameter(torch.zeros(num_tags))
        start_mask = torch.zeros(num_tags)
        trans_mask = torch.zeros(num_tags, num_tags)
        if allowed_start is not None:
            start_mask = start_mask.masked_fill(~allowed_start.bool(), _FORBIDDEN)
        if allowed is not None:
            trans_mask = trans_mask.masked_fill(~allowed.bool(), _FORBIDDEN)
        # constraints are derived from the tag set, so they are not saved with the weights
        self.register_buffer("start_penalty", start_mask, persistent=False)
        self.register_buffer("transition_penalty", trans_mask, persistent=False)

    def extra_repr(self) -> str:
        return f"num_tags={self.num_tags}"

    def _scores(self) -> tuple[Tensor, Tensor, Tensor]:
        return (
            self.start + self.start_penalty,
            self.transitions + self.transition_penalty,
            self.end,
        )

    def _check(self, emissions: Tensor, mask: Tensor | None) -> Tensor:
        if emissions.dim() != 3 or emissions.shape[-1] != self.num_tags:
            raise ValueError(
                f"expected emissions of shape (batch, seq_len, {self.num_tags}); "
                f"got {tuple(emissions.shape)}"
            )
        B, T, _ = emissions.shape
        if mask is None:
            return torch.ones(B, T, dtype=torch.bool, device=emissions.device)
        if tuple(mask.shape) != (B, T):
            raise ValueError(f"expected a mask of shape {(B, T)}; got {tuple(mask.shape)}")
        mask = mask.bool()
        if T and not bool(mask[:, 0].all()):
            raise ValueError("every sequence needs at least one step (mask[:, 0] all true)")
        return mask

    def score(self, emissions: Tensor, tags: Tensor, mask: Tensor | None = None) -> Tensor:
        """score(x, y) of the given ``tags (B, T)`` for each sequence: ``(B,)``."""
        mask = self._check(emissions, mask)
        start, trans, end = self._scores()
        B, T, _ = emissions.shape
        m = mask.to(emissions.dtype)
        emit = emissions.gather(2, tags.unsqueeze(2)).squeeze(2)  # (B, T)
        total = start[tags[:, 0]] + (emit * m).sum(1)
        if T > 1:
            steps = trans[tags[:, :-1], tags[:, 1:]]  # (B, T-1)
            total = total + (steps * m[:, 1:]).sum(1)
        last = mask.sum(1) - 1  # (B,)
        last_tags = tags.gather(1, last.unsqueeze(1)).squeeze(1)
        return total + end[last_tags]

    def log_partition(self, emissions: Tensor, mask: Tensor | None = None) -> Tensor:
        """log Z(x) by the forward algorithm: ``(B,)``."""
        mask = self._check(emissions, mask)
        start, trans, end = self._scores()
        alpha = start + emissions[:, 0]  # (B, K)
        for t in range(1, emissions.shape[1]):
            # (B, K_prev, 1) + (K_prev, K) → log-sum-exp over the previous tag
            nxt = torch.logsumexp(alpha.unsqueeze(2) + trans, dim=1) + emissions[:, t]
            alpha = torch.where(mask[:, t : t + 1], nxt, alpha)
        return torch.logsumexp(alpha + end, dim=1)

    def nll(
        self,
        emissions: Tensor,
        tags: Tensor,
        mask: Tensor | None = None,
        reduction: str = "sum",
    ) -> Tensor:
        """−log p(tags | x) = log Z(x) − score(x, tags), summed (default), averaged over
        sequences (``"mean"``) or per sequence (``"none"``)."""
        value = self.log_partition(emissions, mask) - self.score(emissions, tags, mask)
        if reduction == "sum":
            return value.sum()
        if reduction == "mean":
            return value.mean()
        if reduction == "none":
            return value
        raise ValueError(f"reduction must be 'sum', 'mean' or 'none'; got {reduction!r}")

    @torch.no_grad()
    def decode(self, emissions: Tensor, mask: Tensor | None = None) -> list[list[int]]:
        """Viterbi: the highest-scoring tag sequence of each sequence, as lists of its length."""
        mask = self._check(emissions, mask)
        start, trans, end = self._scores()
        B, T, K = emissions.shape
        delta = start + emissions[:, 0]  # (B, K)
        keep = torch.arange(K, device=emissions.device).expand(B, K)
        pointers = []
        for t in range(1, T):
            best, arg = (delta.unsqueeze(2) + trans).max(dim=1)  # over the previous tag
            on = mask[:, t : t + 1]
            delta = torch.where(on, best + emissions[:, t], delta)
            pointers.append(torch.where(on, arg, keep))  # padded steps point to themselves
        tag = (delta + end).argmax(1)  # (B,)
        path = [tag]
        for ptr in reversed(pointers):
            tag = ptr.gather(1, tag.unsqueeze(1)).squeeze(1)
            path.append(tag)
        path.reverse()
        paths = torch.stack(path, 1).tolist()  # (B, T)
        lengths = mask.sum(1).tolist()
        return [p[:n] for p, n in zip(paths, lengths)]
