"""Turning a conditional model p(y_t | y_<t, x) into output sequences: greedy and beam search.

Both searches drive a *step function* and know nothing else about the model::

    step(tokens (N,) long, state) -> (log_probs (N, V), new_state, attention (N, S) or None)

``tokens`` holds the previous output token of each of the N rows being decoded (``bos`` at the
first step), ``log_probs`` is log p(· | that row's prefix) and ``state`` is any nest (tensor,
tuple, list, dict, :class:`~rnnkit.state.LSTMState`) of tensors whose dim 0 is N — decoder
state, encoder memory, source mask. Beam search reorders and shrinks it with
``index_select(0, rows)``, so a step function never sees beams as such, only rows.

**Greedy**: y_t = argmax_v log p(v | y_<t, x) until ``eos`` or ``max_len`` steps; all rows of
the batch advance together (a finished row keeps being fed ``eos`` and is ignored).

**Beam search** keeps, for every sentence, the K best unfinished prefixes by their summed
log-probability log p(y_1..y_t | x). Each step scores all K·V one-token extensions and takes the
best 2K: those that end in ``eos`` *and rank among the first K* become finished hypotheses, the
best K that do not end in ``eos`` stay alive. A finished hypothesis y (with |y| steps, ``eos``
included) is compared by its length-normalised score

    score(y) = log p(y | x) / |y|^α,      α = ``length_penalty`` (0: raw log-probability),

since the raw sum favours short outputs. A sentence stops when it has K finished hypotheses (so
K = 1 is exactly greedy) or when no alive prefix can still beat its best finished one: log-
probabilities only fall as a prefix grows, so an alive prefix with sum s can at best reach
s / L^α for the most favourable length L ≤ ``max_len``. Finished sentences leave the batch, so
the rows still decoded shrink as the search goes on. Prefixes still alive at ``max_len`` count
as (unfinished) hypotheses of |y| = ``max_len``.

Returned token lists exclude ``bos`` and ``eos``; ``attention`` stacks the step function's
weights for each returned token, ``(len(tokens), S)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from rnnkit.state import map_state

__all__ = ["Hypothesis", "StepFn", "beam_search", "concat_states", "greedy_decode", "select_rows"]

#: step(tokens (N,), state) -> (log_probs (N, V), new_state, attention (N, S) | None)
StepFn = Callable[[Tensor, Any], tuple[Tensor, Any, Tensor | None]]


@dataclass
class Hypothesis:
    """One decoded sequence: ``tokens`` (no bos/eos), the ``score`` the search maximised
    (greedy: the log-probability; beam: the length-normalised one), the ``attention`` weights of
    each token ``(len(tokens), S)`` when the step gives them, the total ``log_prob`` (eos
    included) and whether the sequence ended with eos (``finished``) or ran into ``max_len``."""

    tokens: list[int]
    score: float
    attention: Tensor | None = None
    log_prob: float = 0.0
    finished: bool = True


def select_rows(state: Any, rows: Tensor) -> Any:
    """``state`` with dim 0 of every tensor indexed by ``rows`` (reorder, repeat or drop)."""
    return map_state(lambda t: t.index_select(0, rows), state)


def concat_states(states: list[Any], dim: int = 0) -> Any:
    """Batched states of the same structure joined along ``dim`` (their batch dimension)."""
    if len(states) == 1:
        return states[0]
    if isinstance(states[0], Tensor):
        return torch.cat(states, dim)
    if isinstance(states[0], tuple):
        joined = [concat_states([s[i] for s in states], dim) for i in range(len(states[0]))]
        return type(states[0])(*joined) if hasattr(states[0], "_fields") else tuple(joined)
    if isinstance(states[0], list):
        return [concat_states([s[i] for s in states], dim) for i in range(len(states[0]))]
    raise TypeError(f"cannot concatenate states of type {type(states[0]).__name__}")


def _device_of(state: Any) -> torch.device:
    found: list[torch.device] = []

    def visit(t: Tensor) -> Tensor:
        found.append(t.device)
        return t

    map_state(visit, state)
    return found[0] if found else torch.device("cpu")


def _check(batch_size: int, max_len: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1; got {batch_size}")
    if max_len < 1:
        raise ValueError(f"max_len must be at least 1; got {max_len}")


@torch.no_grad()
def greedy_decode(
    step: StepFn, state: Any, batch_size: int, bos: int, eos: int, max_len: int
) -> list[Hypothesis]:
    """The most likely next token at every step, for ``batch_size`` rows at once."""
    _check(batch_size, max_len)
    device = _device_of(state)
    tokens = torch.full((batch_size,), bos, dtype=torch.long, device=device)
    done = torch.zeros(batch_size, dtype=torch.bool, device=device)
    total = torch.zeros(batch_size, dtype=torch.float64, device=device)
    emitted, weights = [], []
    for _ in range(max_len):
        log_probs, state, attention = step(tokens, state)
        best, tokens = log_probs.max(dim=-1)  # (N,), (N,)
        total += best.double().masked_fill(done, 0.0)
        tokens = tokens.masked_fill(done, eos)
        emitted.append(tokens)
        if attention is not None:
            weights.append(attention)
        done = done | (tokens == eos)
        if bool(done.all()):
            break
    out = torch.stack(emitted, 1).cpu()  # (N, T)
    att = torch.stack(weights, 1).cpu() if weights else None  # (N, T, S)
    is_eos = out == eos
    ended = is_eos.any(1)
    steps = torch.where(ended, is_eos.int().argmax(1), out.shape[1])  # tokens before eos
    hyps = []
    for i in range(batch_size):
        n = int(steps[i])
        hyps.append(
            Hypothesis(
                out[i, :n].tolist(),
                float(total[i]),
                att[i, :n] if att is not None else None,
                float(total[i]),
                bool(ended[i]),
            )
        )
    return hyps


@torch.no_grad()
def beam_search(
    step: StepFn,
    state: Any,
    batch_size: int,
    bos: int,
    eos: int,
    beam_size: int = 5,
    max_len: int = 100,
    length_penalty: float = 1.0,
) -> list[Hypothesis]:
    """The best hypothesis of a width-``beam_size`` beam search for each of ``batch_size`` rows
    (see the module docstring); all sentences × beams are decoded as one batch of rows."""
    _check(batch_size, max_len)
    if beam_size < 1:
        raise ValueError(f"beam_size must be at least 1; got {beam_size}")
    K, lp = beam_size, float(length_penalty)
    device = _device_of(state)
    ninf = float("-inf")
    # row a·K + k of the decoded batch is beam k of the a-th still-active sentence
    active = torch.arange(batch_size, device=device)  # original index of each active sentence
    rows = torch.arange(batch_size, device=device).repeat_interleave(K)
    state = select_rows(state, rows)
    scores = torch.full((batch_size, K), ninf, device=device)  # summed log p of alive prefixes
    scores[:, 0] = 0.0  # all beams start identical: only the first one may expand
    history = torch.empty(batch_size * K, 0, dtype=torch.long, device=device)  # (A·K, t)
    att_history: Tensor | None = None  # (A·K, t, S)
    tokens = torch.full((batch_size * K,), bos, dtype=torch.long, device=device)
    best: list[Hypothesis | None] = [None] * batch_size
    best_score = [ninf] * batch_size
    n_finished = [0] * batch_size

    def offer(sid: int, row: int, raw: float, steps: int, finished: bool) -> None:
        """Make row ``row`` of the history (``steps`` tokens, summed log p ``raw``) sentence
        ``sid``'s best hypothesis if its normalised score raw / steps^length_penalty is higher."""
        normalised = raw / steps**lp
        if normalised > best_score[sid]:
            best_score[sid] = normalised
            best[sid] = Hypothesis(
                history[row].tolist(),
                normalised,
                att_history[row].cpu() if att_history is not None else None,
                raw,
                finished,
            )

    for t in range(max_len):
        log_probs, state, attention = step(tokens, state)  # (A·K, V)
        A, V = active.numel(), log_probs.shape[-1]
        length = t + 1
        candidates = (scores.unsqueeze(2) + log_probs.float().view(A, K, V)).view(A, K * V)
        top, index = candidates.topk(min(2 * K, K * V), dim=1)  # (A, 2K), best first
        beam, token = index // V, index % V
        is_eos = token == eos
        if attention is not None and att_history is None:
            att_history = attention.new_zeros(A * K, 0, attention.shape[-1])

        # eos among the first K candidates: a finished hypothesis of `length` steps
        final = is_eos[:, :K] & torch.isfinite(top[:, :K])
        for a, j in final.nonzero().tolist():
            sid = int(active[a])
            n_finished[sid] += 1
            offer(sid, a * K + int(beam[a, j]), float(top[a, j]), length, True)

        # the best K extensions that do not end the sentence stay alive
        alive, pick = top.masked_fill(is_eos, ninf).topk(K, dim=1)  # (A, K)
        parent = (torch.arange(A, device=device).unsqueeze(1) * K + beam.gather(1, pick)).view(-1)
        history = torch.cat([history[parent], token.gather(1, pick).view(-1, 1)], 1)
        if attention is not None:
            att_history = torch.cat([att_history[parent], attention[parent].unsqueeze(1)], 1)
        scores = alive

        # a sentence is done with K finished hypotheses, or when no alive prefix can catch up
        best_len_factor = max((length + 1) ** lp, max_len**lp)
        reachable = (alive[:, 0] / best_len_factor).tolist()
        keep = []
        for a, sid in enumerate(active.tolist()):
            caught = best[sid] is not None and best_score[sid] >= reachable[a]
            keep.append(n_finished[sid] < K and not caught)
        if not all(keep):
            kept = torch.tensor([a for a, k in enumerate(keep) if k], dtype=torch.long)
            kept = kept.to(device)
            kept_rows = (kept.unsqueeze(1) * K + torch.arange(K, device=device)).view(-1)
            active, scores = active[kept], scores[kept]
            history, parent = history[kept_rows], parent[kept_rows]
            if att_history is not None:
                att_history = att_history[kept_rows]
        if active.numel() == 0 or length == max_len:
            break
        state = select_rows(state, parent)
        tokens = history[:, -1]

    # prefixes alive at max_len compete as unfinished hypotheses
    if active.numel() and history.shape[1] == max_len:
        for a, sid in enumerate(active.tolist()):
            for k in range(K):
                raw = float(scores[a, k])
                if raw > ninf:
                    offer(sid, a * K + k, raw, max_len, False)
    return [h if h is not None else Hypothesis([], ninf, None, ninf, False) for h in best]
