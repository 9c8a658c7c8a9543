"""Large-vocabulary pieces of the language model: the adaptive softmax (Grave et al. 2017) and
word completion for byte-level BPE models.

:class:`AdaptiveSoftmax` wraps ``torch.nn.AdaptiveLogSoftmaxWithLoss``: p(w) = p_head(w) for the
frequent ids below the first cutoff, else p_head(cluster c) · p_c(w), each tail cluster projected
to hidden_size / 4^i first. Training never forms the ``(B, T, V)`` logits; inference gets the
log-probabilities (whose softmax is p, so every caller of ``logits`` keeps working).
"""

from __future__ import annotations

import contextlib
import heapq
import math
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from rnnkit.tasks.language_model.sampling import _is_boundary

if TYPE_CHECKING:
    from rnnkit.tasks.language_model.model import TextModel

__all__ = ["AdaptiveSoftmax", "adaptive_cutoffs", "complete_subwords"]


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


@torch.no_grad()
def complete_subwords(
    model: TextModel, text: str, k: int, beam_size: int, max_chars: int, unknown, context=None
) -> list[dict[str, Any]]:
    """``complete()`` for BPE models: beam search over subword tokens until the decoded
    continuation reaches a word boundary. A completion's probability is that of the token path
    spelling the word up to (and through the token holding) its boundary. ``context``: as for
    ``complete()``, the (logits, state) after the text when the caller holds them."""
    model.eval()
    prefix = ""
    for ch in reversed(text):
        if _is_boundary(ch):
            break
        prefix = ch + prefix
    logits, state = context or model.advance(model.encode(model.default_context() + text, unknown))
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
                cut = next((i for i, ch in enumerate(cont) if _is_boundary(ch)), None)
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
    return [
        {
            "word": prefix + cont,
            "continuation": cont,
            "boundary": boundary,
            "probability": math.exp(lp),
            "log_prob": lp,
        }
        for cont, (lp, boundary) in top_k
    ]
