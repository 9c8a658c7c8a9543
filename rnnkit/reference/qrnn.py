"""QRNN (Bradbury et al. 2016) with fo-pooling, forward and backward by hand in NumPy.

This module owns the reference of the QRNN layer: a causal convolution of width 1 or 2 for the
gates and the fo-pooling recurrence. Parameters follow ``rnnkit.modern.QRNNCell``:
``weight_ih`` (window·3H, I) with W₀'s rows (z, f, o) then W₁'s, ``bias_ih`` (3H,). With window
2 the state carries ``prev`` = W₁ x_{t−1} (B, 3H) besides ``c``. Conventions as in
:mod:`.mingru`. NumPy only, float64.
"""

import numpy as np

from .mingru import sigmoid, uniform_projection


def init_params(input_size, hidden_size, window=1, rng=None):
    """weight_ih (window·3H, I), bias_ih (3H,) ~ U(±1/√(window·I)), as ``QRNNCell``."""
    rows = window * 3 * hidden_size
    return uniform_projection(rows, input_size, rng, 3 * hidden_size, window * input_size)


def forward(xs, c0, p, prev0=None):
    """Run the QRNN over xs (T, B, I) from c0 (and prev0 for window 2); ``(ys, cache)``.

        [ž; f̌; ǒ]_t = W₀ x_t + b + W₁ x_{t−1}  (W₁ x_{−1} = prev0),
        z = tanh ž, f = σ(f̌), o = σ(ǒ),   c_t = f ⊙ c_{t−1} + (1 − f) ⊙ z,   y_t = o ⊙ c_t
    The cache holds the final ``prev`` = W₁ x_{T−1} for window 2.
    """
    H = c0.shape[1]
    W = p["weight_ih"]
    gates = xs @ W[: 3 * H].T + p["bias_ih"]
    window = W.shape[0] // (3 * H)
    prev_last = None
    if window == 2:
        taps = xs @ W[3 * H :].T  # W₁ x_t, felt one step later
        gates[0] += prev0
        gates[1:] += taps[:-1]
        prev_last = taps[-1]
    z, f, o = np.tanh(gates[..., :H]), sigmoid(gates[..., H : 2 * H]), sigmoid(gates[..., 2 * H :])
    cs = np.empty((len(xs) + 1, *c0.shape))
    cs[0] = c0
    for t in range(len(xs)):
        cs[t + 1] = f[t] * cs[t] + (1.0 - f[t]) * z[t]  # fo-pooling: a gated running average
    ys = o * cs[1:]
    cache = {"xs": xs, "cs": cs, "z": z, "f": f, "o": o, "window": window, "prev": prev_last}
    return ys, cache


def backward(cache, p, dys, dc_last=None, dprev_last=None):
    """Gradients of L (∂L/∂y, ∂L/∂c_T, ∂L/∂prev_T); keys of p plus "xs", "c0" (and "prev0").

    With dc = ∂L/∂c_t = ∂L/∂y_t ⊙ o_t + (from step t + 1):
        ∂L/∂ǒ = ∂L/∂y_t ⊙ c_t ⊙ o(1 − o),  ∂L/∂f̌ = dc ⊙ (c_{t−1} − z) ⊙ f(1 − f),
        ∂L/∂ž = dc ⊙ (1 − f) ⊙ (1 − z²),   ∂L/∂c_{t−1} = dc ⊙ f
    and the gate gradient at t reaches W₀ through x_t and W₁ through x_{t−1}.
    """
    xs, cs, z, f, o = (cache[k] for k in ("xs", "cs", "z", "f", "o"))
    H = cs.shape[2]
    W = p["weight_ih"]
    dg = np.zeros((*z.shape[:2], 3 * H))
    carry = np.zeros_like(cs[0]) if dc_last is None else dc_last.copy()
    for t in reversed(range(len(xs))):
        dc = carry + dys[t] * o[t]
        dg[t, :, 2 * H :] = dys[t] * cs[t + 1] * o[t] * (1.0 - o[t])
        dg[t, :, H : 2 * H] = dc * (cs[t] - z[t]) * f[t] * (1.0 - f[t])
        dg[t, :, :H] = dc * (1.0 - f[t]) * (1.0 - z[t] ** 2)
        carry = dc * f[t]
    grads = {"bias_ih": dg.sum(axis=(0, 1)), "c0": carry}
    dW = np.zeros_like(W)
    dW[: 3 * H] = np.einsum("tbr,tbi->ri", dg, xs)
    dxs = dg @ W[: 3 * H]
    if cache["window"] == 2:
        dtaps = np.zeros_like(dg)  # ∂L/∂(W₁ x_t): the gates of t + 1, and the final prev
        dtaps[:-1] = dg[1:]
        if dprev_last is not None:
            dtaps[-1] = dprev_last
        dW[3 * H :] = np.einsum("tbr,tbi->ri", dtaps, xs)
        dxs += dtaps @ W[3 * H :]
        grads["prev0"] = dg[0].copy()
    grads["weight_ih"] = dW
    grads["xs"] = dxs
    return grads
