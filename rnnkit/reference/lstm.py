"""LSTM (optionally with peephole connections) with a softmax output, by hand in NumPy.

This module owns the LSTM cell's forward pass and its backpropagation through time, which
carries two gradients backwards: ``dh_next`` (into the hidden state) and ``dc_next`` (into
the cell state, the "gradient highway" that makes LSTMs trainable over long spans).

Parameters follow ``torch.nn.LSTMCell``: ``weight_ih`` (4H, I), ``weight_hh`` (4H, H),
``bias_ih`` and ``bias_hh`` (4H,), gate rows stacked in the order i, f, g, o. With
``peephole=True`` three diagonal peephole vectors ``weight_ci``, ``weight_cf``, ``weight_co``
(each (H,)) are added. The softmax output layer (``W_y``, ``b_y``) is shared with
``rnn.py``. NumPy only, float64, batch stored row-wise (``W x`` is ``x @ W.T``).
"""

import numpy as np

from .rnn import output_backward, output_forward, sigmoid, torch_like_params

PEEPHOLE_KEYS = ("weight_ci", "weight_cf", "weight_co")


def init_params(input_size, hidden_size, vocab_size, rng=None, peephole=False):
    """Draw parameters like PyTorch does: every entry ~ U(-1/√H, 1/√H).

    Returns ``weight_ih`` (4H, I), ``weight_hh`` (4H, H), ``bias_ih``/``bias_hh`` (4H,),
    ``W_y`` (V, H), ``b_y`` (V,) and, if ``peephole``, ``weight_ci``/``weight_cf``/
    ``weight_co`` (H,).
    """
    extra = {k: (hidden_size,) for k in PEEPHOLE_KEYS} if peephole else None
    return torch_like_params(4, input_size, hidden_size, vocab_size, rng, extra)


def forward(xs, ys, state0, p, peephole=False):
    """Run the LSTM over a sequence and return ``(loss, cache)``.

    xs: (T, B, I); ys: (T, B) integer targets; state0: ``(h0, c0)``, each (B, H).
    For t = 1..T, with z = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh split into z_i, z_f, z_g, z_o:
        i_t = σ(z_i [+ w_ci ⊙ c_{t-1}])     input gate
        f_t = σ(z_f [+ w_cf ⊙ c_{t-1}])     forget gate
        g_t = tanh(z_g)                     candidate cell
        c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t
        o_t = σ(z_o [+ w_co ⊙ c_t])         output gate (the peephole sees the NEW cell)
        h_t = o_t ⊙ tanh(c_t)
        ŷ_t = softmax(W_y h_t + b_y)
    Bracketed terms are present only with ``peephole=True``.
    L = -Σ_t Σ_b log ŷ_t[b, y_t[b]].
    """
    h0, c0 = state0  # a plain tuple or an LSTMState namedtuple both unpack this way
    T, B, _ = xs.shape
    H = p["weight_hh"].shape[1]
    hs = np.empty((T + 1, B, H))  # hs[t + 1] = h_t, hs[0] = h0
    cs = np.empty((T + 1, B, H))  # cs[t + 1] = c_t, cs[0] = c0
    hs[0], cs[0] = h0, c0
    gates = np.empty((T, 4, B, H))  # activated i, f, g, o per step, reused by backward
    tanh_cs = np.empty((T, B, H))  # tanh(c_t), needed for both ∂h/∂o and ∂h/∂c
    for t in range(T):
        z = xs[t] @ p["weight_ih"].T + p["bias_ih"] + hs[t] @ p["weight_hh"].T + p["bias_hh"]
        z_i, z_f, z_g, z_o = np.split(z, 4, axis=1)  # torch's row order: i, f, g, o
        if peephole:
            z_i = z_i + p["weight_ci"] * cs[t]  # input gate peeks at the previous cell
            z_f = z_f + p["weight_cf"] * cs[t]  # forget gate peeks at the previous cell
        i, f, g = sigmoid(z_i), sigmoid(z_f), np.tanh(z_g)
        cs[t + 1] = f * cs[t] + i * g  # keep part of the old memory, write part of the new
        if peephole:
            z_o = z_o + p["weight_co"] * cs[t + 1]  # output gate peeks at the updated cell
        o = sigmoid(z_o)
        tanh_cs[t] = np.tanh(cs[t + 1])
        hs[t + 1] = o * tanh_cs[t]  # expose a gated view of the memory
        gates[t] = i, f, g, o
    return output_forward(xs, ys, hs, p, cs=cs, gates=gates, tanh_cs=tanh_cs, peephole=peephole)


def backward(cache, p):
    """Backpropagation through time; returns gradients keyed like ``p`` plus ``"h0"``, ``"c0"``.

    Walking t = T..1 with dh_next = ∂L/∂h_t and dc_next = ∂L/∂c_t arriving from step t+1:
        ∂L/∂h_t  = W_yᵀ (ŷ_t − onehot(y_t)) + dh_next
        ∂L/∂z_o  = ∂L/∂h_t ⊙ tanh(c_t) ⊙ o(1 − o)
        ∂L/∂c_t  = ∂L/∂h_t ⊙ o ⊙ (1 − tanh²(c_t)) + dc_next [+ w_co ⊙ ∂L/∂z_o]
        ∂L/∂z_i  = ∂L/∂c_t ⊙ g ⊙ i(1 − i)
        ∂L/∂z_f  = ∂L/∂c_t ⊙ c_{t-1} ⊙ f(1 − f)
        ∂L/∂z_g  = ∂L/∂c_t ⊙ i ⊙ (1 − g²)
        ∂L/∂W_ih += ∂L/∂z · x_tᵀ,  ∂L/∂W_hh += ∂L/∂z · h_{t-1}ᵀ,  ∂L/∂b_* += ∂L/∂z
        dh_next  = W_hhᵀ ∂L/∂z
        dc_next  = ∂L/∂c_t ⊙ f [+ w_ci ⊙ ∂L/∂z_i + w_cf ⊙ ∂L/∂z_f]
        peepholes: ∂L/∂w_ci += ∂L/∂z_i ⊙ c_{t-1}, ∂L/∂w_cf += ∂L/∂z_f ⊙ c_{t-1},
                   ∂L/∂w_co += ∂L/∂z_o ⊙ c_t   (summed over the batch)
    """
    xs, ys, hs, cs, probs = cache["xs"], cache["ys"], cache["hs"], cache["cs"], cache["probs"]
    gates, tanh_cs, peephole = cache["gates"], cache["tanh_cs"], cache["peephole"]
    grads = {k: np.zeros_like(v) for k, v in p.items()}
    dh_next = np.zeros_like(hs[0])  # no gradient arrives from beyond the last step
    dc_next = np.zeros_like(cs[0])
    for t in reversed(range(len(xs))):
        i, f, g, o = gates[t]
        dh = output_backward(probs[t], ys[t], hs[t + 1], p, grads) + dh_next  # both paths into h_t
        dz_o = dh * tanh_cs[t] * o * (1.0 - o)  # h = o ⊙ tanh(c), and σ' = σ(1 − σ)
        dc = dh * o * (1.0 - tanh_cs[t] ** 2) + dc_next  # through tanh(c_t), plus the highway
        if peephole:
            dc += dz_o * p["weight_co"]  # c_t also fed the output gate's peephole
            grads["weight_co"] += (dz_o * cs[t + 1]).sum(axis=0)
        dz_i = dc * g * i * (1.0 - i)  # c = f c_prev + i g, then through σ
        dz_f = dc * cs[t] * f * (1.0 - f)  # the forget gate scales the previous cell
        dz_g = dc * i * (1.0 - g**2)  # tanh' = 1 − tanh²
        dz = np.concatenate([dz_i, dz_f, dz_g, dz_o], axis=1)  # back to torch's i, f, g, o rows
        grads["weight_ih"] += dz.T @ xs[t]  # ∂L/∂z · x_tᵀ
        grads["weight_hh"] += dz.T @ hs[t]  # ∂L/∂z · h_{t-1}ᵀ
        grads["bias_ih"] += dz.sum(axis=0)  # both biases enter z additively
        grads["bias_hh"] += dz.sum(axis=0)
        dh_next = dz @ p["weight_hh"]  # all four gates read h_{t-1}
        dc_next = dc * f  # the cell highway: c_{t-1} reaches c_t scaled by f
        if peephole:
            dc_next += dz_i * p["weight_ci"] + dz_f * p["weight_cf"]  # c_{t-1} also fed i and f
            grads["weight_ci"] += (dz_i * cs[t]).sum(axis=0)
            grads["weight_cf"] += (dz_f * cs[t]).sum(axis=0)
    grads["h0"] = dh_next  # what is left after step 1 is the initial-state gradient
    grads["c0"] = dc_next
    return grads


def loss_and_grads(xs, ys, state0, p, peephole=False):
    """Forward then backward in one call; returns ``(loss, grads)``."""
    loss, cache = forward(xs, ys, state0, p, peephole=peephole)
    return loss, backward(cache, p)
