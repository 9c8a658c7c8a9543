"""Greedy and beam search over a step function: :mod:`rnnkit.decoding`, in NumPy.

``step(tokens (N,), state) -> (log_probs (N, V), state, attention (N, S) or None)`` is one decoder
call; a hypothesis is a dict with ``tokens``, ``score`` (log p / |y|^α), ``attention``,
``log_prob`` and ``finished``.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _select(state: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[rows] for k, v in state.items()}


def greedy_decode(step, state, batch_size, bos, eos, max_len):
    """y_t = argmax log p(· | y_<t, x) until eos or ``max_len`` (``rnnkit.decoding``)."""
    tokens = np.full(batch_size, bos, np.int64)
    done = np.zeros(batch_size, bool)
    total = np.zeros(batch_size, np.float64)
    emitted, weights = [], []
    for _ in range(max_len):
        log_probs, state, att = step(tokens, state)
        tokens = log_probs.argmax(-1)
        best = log_probs[np.arange(batch_size), tokens]
        total += np.where(done, 0.0, best.astype(np.float64))
        tokens = np.where(done, eos, tokens)
        emitted.append(tokens)
        if att is not None:
            weights.append(att)
        done = done | (tokens == eos)
        if done.all():
            break
    out = np.stack(emitted, 1)
    att = np.stack(weights, 1) if weights else None
    hyps = []
    for i in range(batch_size):
        ends = np.nonzero(out[i] == eos)[0]
        n = int(ends[0]) if ends.size else out.shape[1]
        hyps.append(
            {
                "tokens": out[i, :n].tolist(),
                "score": float(total[i]),
                "attention": att[i, :n] if att is not None else None,
                "log_prob": float(total[i]),
                "finished": bool(ends.size),
            }
        )
    return hyps


def beam_search(step, state, batch_size, bos, eos, beam_size=5, max_len=100, length_penalty=1.0):
    """Width-``beam_size`` search, scores log p / |y|^α (``rnnkit.decoding.beam_search``)."""
    K, lp, ninf = beam_size, float(length_penalty), -np.inf
    active = np.arange(batch_size)
    state = _select(state, np.repeat(np.arange(batch_size), K))
    scores = np.full((batch_size, K), ninf, np.float32)
    scores[:, 0] = 0.0
    history = np.zeros((batch_size * K, 0), np.int64)
    att_hist = None
    tokens = np.full(batch_size * K, bos, np.int64)
    best: list[Any] = [None] * batch_size
    best_score = [ninf] * batch_size
    n_finished = [0] * batch_size

    def hyp(row, normalised, raw, finished):
        a = att_hist[row].copy() if att_hist is not None else None
        return {
            "tokens": history[row].tolist(),
            "score": normalised,
            "attention": a,
            "log_prob": raw,
            "finished": finished,
        }

    for t in range(max_len):
        log_probs, state, att = step(tokens, state)
        A, V = active.size, log_probs.shape[-1]
        length = t + 1
        cand = (scores[:, :, None] + log_probs.astype(np.float32).reshape(A, K, V)).reshape(A, -1)
        n_top = min(2 * K, K * V)
        index = np.argsort(-cand, axis=1, kind="stable")[:, :n_top]
        top = np.take_along_axis(cand, index, 1)
        beam, token = index // V, index % V
        is_eos = token == eos
        if att is not None and att_hist is None:
            att_hist = np.zeros((A * K, 0, att.shape[-1]), np.float32)
        final = is_eos[:, :K] & np.isfinite(top[:, :K])
        for a, j in zip(*np.nonzero(final)):
            sid = int(active[a])
            n_finished[sid] += 1
            raw = float(top[a, j])
            normalised = raw / length**lp
            if normalised > best_score[sid]:
                best_score[sid] = normalised
                best[sid] = hyp(a * K + int(beam[a, j]), normalised, raw, True)
        masked = np.where(is_eos, ninf, top)
        pick = np.argsort(-masked, axis=1, kind="stable")[:, :K]
        alive = np.take_along_axis(masked, pick, 1)
        parent = (np.arange(A)[:, None] * K + np.take_along_axis(beam, pick, 1)).reshape(-1)
        history = np.concatenate(
            [history[parent], np.take_along_axis(token, pick, 1).reshape(-1, 1)], 1
        )
        if att is not None:
            att_hist = np.concatenate([att_hist[parent], att[parent][:, None]], 1)
        scores = alive
        factor = max((length + 1) ** lp, max_len**lp)
        reachable = alive[:, 0] / factor
        keep = [
            n_finished[sid] < K and not (best[sid] is not None and best_score[sid] >= reachable[a])
            for a, sid in enumerate(active.tolist())
        ]
        if not all(keep):
            kept = np.array([a for a, k in enumerate(keep) if k], np.int64)
            kept_rows = (kept[:, None] * K + np.arange(K)).reshape(-1)
            active, scores = active[kept], scores[kept]
            history, parent = history[kept_rows], parent[kept_rows]
            if att_hist is not None:
                att_hist = att_hist[kept_rows]
        if active.size == 0 or length == max_len:
            break
        state = _select(state, parent)
        tokens = history[:, -1]
    if active.size and history.shape[1] == max_len:
        for a, sid in enumerate(active.tolist()):
            for k in range(K):
                raw = float(scores[a, k])
                normalised = raw / max_len**lp
                if raw > ninf and normalised > best_score[sid]:
                    best_score[sid] = normalised
                    best[sid] = hyp(a * K + k, normalised, raw, False)
    empty = {"tokens": [], "score": ninf, "attention": None, "log_prob": ninf, "finished": False}
    return [h if h is not None else dict(empty) for h in best]
