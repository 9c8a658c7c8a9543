"""Drawing a token from logits in NumPy: softmax, rnnkit's filtering and the draw.

A token is drawn from p = softmax(filtered logits / T) by inverting its cumulative distribution at
one uniform u ~ U[0, 1) from ``numpy.random.default_rng(seed)``: the first id whose cumulative
probability exceeds u·Σp (:func:`draw`). torch's multinomial sampler cannot be reproduced outside
torch, so with a seed the runner's text equals rnnkit's when rnnkit's final draw uses this same
rule (the parity test does exactly that); the filtering before it — banned specials, temperature,
top-k, top-p — is rnnkit's ``sample_next`` line for line.
"""

from __future__ import annotations

import numpy as np


def log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    x = x.astype(np.float32)
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    return x - m - np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.exp(log_softmax(x, axis))


def draw(probs: np.ndarray, u: float) -> int:
    """Inverse-CDF draw: the first id whose cumulative probability exceeds ``u`` · Σp."""
    cdf = np.cumsum(np.asarray(probs, dtype=np.float64))
    idx = int(np.searchsorted(cdf, u * cdf[-1], side="right"))
    return min(idx, len(cdf) - 1)


def filter_logits(
    logits: np.ndarray, temperature: float, top_k: int | None, top_p: float | None
) -> np.ndarray:
    """rnnkit's ``sample_next`` filtering: logits / T, then top-k, then top-p (nucleus)."""
    logits = logits.astype(np.float32) / np.float32(temperature)
    if top_k is not None and top_k > 0:
        kth = np.sort(logits)[::-1][min(top_k, logits.size) - 1]
        logits = np.where(logits < kth, -np.inf, logits).astype(np.float32)
    if top_p is not None and 0 < top_p < 1:
        probs = softmax(logits)
        order = np.argsort(-probs, kind="stable")
        sorted_p = probs[order]
        drop_sorted = np.cumsum(sorted_p) - sorted_p >= top_p
        drop = np.zeros_like(drop_sorted)
        drop[order] = drop_sorted
        logits = np.where(drop, -np.inf, logits).astype(np.float32)
    return logits


def sample_next(logits, temperature=1.0, top_k=None, top_p=None, rng=None) -> int:
    """One token id from ``logits (V,)``; temperature 0 is the argmax."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0; got {temperature}")
    if temperature == 0:
        return int(np.argmax(logits))
    probs = softmax(filter_logits(logits, temperature, top_k, top_p))
    return draw(probs, float((rng or np.random.default_rng()).random()))
