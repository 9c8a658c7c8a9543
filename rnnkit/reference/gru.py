"""GRU with a softmax output, forward and backward by hand in NumPy, in both reset placements.

This module owns the GRU cell and its backpropagation through time. Parameters follow
``torch.nn.GRUCell``: ``weight_ih`` (3H, I), ``weight_hh`` (3H, H), ``bias_ih`` and
``bias_hh`` (3H,), gate rows stacked in the order r, z, n. Two variants differ only in where
the reset gate acts on the candidate:

* ``reset_after=True`` (PyTorch / cuDNN): n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))
* ``reset_after=False`` (Cho et al. 2014, the lecture form):
  n = tanh(W_in x + b_in + W_hn (r ⊙ h) + b_hn)

The softmax output layer (``W_y``, ``b_y``) and ``sigmoid`` are shared with ``rnn.py``.
NumPy only, float64, batch stored row-wise (``W x`` is ``x @ W.T``).
"""

import numpy as np

from .rnn import output_backward, output_forward, sigmoid, torch_like_params


def init_params(input_size, hidden_size, vocab_size, rng=None):
    """Draw parameters like PyTorch does: every entry ~ U(-1/√H, 1/√H).

    Returns ``weight_ih`` (3H, I), ``weight_hh`` (3H, H), ``bias_ih``/``bias_hh`` (3H,),
    ``W_y`` (V, H) and ``b_y`` (V,). Both reset placements use the same shapes.
    """
    return torch_like_params(3, input_size, hidden_size, vocab_size, rng)


def forward(xs, ys, h0, p, reset_after=True):
    """Run the GRU over a sequence and return ``(loss, cache)``.

    xs: (T, B, I); ys: (T, B) integer targets; h0: (B, H). For t = 1..T:
        r_t = σ(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)               reset gate
        z_t = σ(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)               update gate
        n_t = tanh(W_in x_t + b_in + r_t ⊙ (W_hn h_{t-1} + b_hn))     reset_after=True
        n_t = tanh(W_in x_t + b_in + W_hn (r_t ⊙ h_{t-1}) + b_hn)     reset_after=False
        h_t = (1 − z_t) ⊙ n_t + z_t ⊙ h_{t-1}
        ŷ_t = softmax(W_y h_t + b_y)
    The lecture writes the last line as h_t = (1 − z'_t) ⊙ h_{t-1} + z'_t ⊙ h̃_t with
    h̃_t = n_t and z'_t = 1 − z_t: its update gate is torch's z with the sense flipped.
    L = -Σ_t Σ_b log ŷ_t[b, y_t[b]].
    """
    T, B, _ = xs.shape
    H = p["weight_hh"].shape[1]
    W_ih, W_hh, b_ih, b_hh = p["weight_ih"], p["weight_hh"], p["bias_ih"], p["bias_hh"]
    hs = np.empty((T + 1, B, H))  # hs[t + 1] = h_t, hs[0] = h0
    hs[0] = h0
    gates = np.empty((T, 3, B, H))  # activated r, z, n per step
    hn = np.empty((T, B, H))  # the hidden-side input to n before/after the reset, see backward
    for t in range(T):
        h = hs[t]
        gi_r, gi_z, gi_n = np.split(xs[t] @ W_ih.T + b_ih, 3, axis=1)  # input side, rows r, z, n
        gh_r = h @ W_hh[:H].T + b_hh[:H]  # hidden side of the reset gate
        gh_z = h @ W_hh[H : 2 * H].T + b_hh[H : 2 * H]  # hidden side of the update gate
        r = sigmoid(gi_r + gh_r)
        z = sigmoid(gi_z + gh_z)
        if reset_after:
            hn[t] = h @ W_hh[2 * H :].T + b_hh[2 * H :]  # W_hn h + b_hn, computed before the reset
            n = np.tanh(gi_n + r * hn[t])  # reset scales the whole hidden contribution
        else:
            hn[t] = (r * h) @ W_hh[2 * H :].T + b_hh[2 * H :]  # reset h first, then project it
            n = np.tanh(gi_n + hn[t])
        hs[t + 1] = (1.0 - z) * n + z * h  # z near 1 copies the old state (a leaky identity)
        gates[t] = r, z, n
    return output_forward(xs, ys, hs, p, gates=gates, hn=hn, reset_after=reset_after)


def backward(cache, p):
    """Backpropagation through time; returns gradients keyed like ``p`` plus ``"h0"``.

    Walking t = T..1 with dh_next = ∂L/∂h_t arriving from step t+1 (a_n is n's pre-activation):
        ∂L/∂h_t  = W_yᵀ (ŷ_t − onehot(y_t)) + dh_next
        ∂L/∂a_n  = ∂L/∂h_t ⊙ (1 − z) ⊙ (1 − n²)
        ∂L/∂a_z  = ∂L/∂h_t ⊙ (h_{t-1} − n) ⊙ z(1 − z)
        direct   : ∂L/∂h_{t-1} gets ∂L/∂h_t ⊙ z
    reset_after=True, with u = W_hn h_{t-1} + b_hn:
        ∂L/∂u = ∂L/∂a_n ⊙ r,   ∂L/∂a_r = ∂L/∂a_n ⊙ u ⊙ r(1 − r)
        hidden-side rows n get ∂L/∂u; input-side rows n get ∂L/∂a_n
    reset_after=False, with v = r ⊙ h_{t-1}:
        ∂L/∂W_hn += ∂L/∂a_n · vᵀ,  ∂L/∂v = W_hnᵀ ∂L/∂a_n,
        ∂L/∂a_r = ∂L/∂v ⊙ h_{t-1} ⊙ r(1 − r),  ∂L/∂h_{t-1} gets ∂L/∂v ⊙ r
    and in both, weights get (pre-activation gradient) · (their input)ᵀ and
    dh_next = Σ of every path into h_{t-1} (becomes ∂L/∂h0 after the last step).
    """
    xs, ys, hs, probs = cache["xs"], cache["ys"], cache["hs"], cache["probs"]
    gates, hn = cache["gates"], cache["hn"]
    W_hh = p["weight_hh"]
    H = W_hh.shape[1]
    grads = {k: np.zeros_like(v) for k, v in p.items()}
    dW_hh, db_hh = grads["weight_hh"], grads["bias_hh"]  # views: writing slices updates grads
    dh_next = np.zeros_like(hs[0])  # no gradient arrives from beyond the last step
    for t in reversed(range(len(xs))):
        h_prev = hs[t]
        r, z, n = gates[t]
        dh = output_backward(probs[t], ys[t], hs[t + 1], p, grads) + dh_next  # both paths into h_t
        dh_prev = dh * z  # the z ⊙ h_{t-1} shortcut
        da_n = dh * (1.0 - z) * (1.0 - n**2)  # through (1 − z) ⊙ n, then tanh' = 1 − n²
        da_z = dh * (h_prev - n) * z * (1.0 - z)  # ∂h/∂z = h_{t-1} − n, then σ' = σ(1 − σ)
        if cache["reset_after"]:
            du = da_n * r  # u = W_hn h + b_hn enters n scaled by r
            da_r = da_n * hn[t] * r * (1.0 - r)  # r multiplies u
            dW_hh[2 * H :] += du.T @ h_prev  # ∂L/∂u · h_{t-1}ᵀ
            db_hh[2 * H :] += du.sum(axis=0)
            dh_prev += du @ W_hh[2 * H :]  # h_{t-1} reached n through u
        else:
            dW_hh[2 * H :] += da_n.T @ (r * h_prev)  # W_hn sees the reset state v = r ⊙ h_{t-1}
            db_hh[2 * H :] += da_n.sum(axis=0)  # b_hn enters a_n directly
            dv = da_n @ W_hh[2 * H :]  # ∂L/∂v = W_hnᵀ ∂L/∂a_n
            da_r = dv * h_prev * r * (1.0 - r)  # v = r ⊙ h_{t-1}, then σ'
            dh_prev += dv * r  # h_{t-1} reached n through v
        da_rz = np.concatenate([da_r, da_z], axis=1)  # r and z rows are identical in both forms
        dW_hh[: 2 * H] += da_rz.T @ h_prev
        db_hh[: 2 * H] += da_rz.sum(axis=0)
        dh_prev += da_rz @ W_hh[: 2 * H]  # h_{t-1} also fed both gates
        da_in = np.concatenate([da_r, da_z, da_n], axis=1)  # input side: rows r, z, n
        grads["weight_ih"] += da_in.T @ xs[t]  # ∂L/∂a · x_tᵀ
        grads["bias_ih"] += da_in.sum(axis=0)
        dh_next = dh_prev  # everything that reached h_{t-1} is carried to the previous step
    grads["h0"] = dh_next
    return grads


def loss_and_grads(xs, ys, h0, p, reset_after=True):
    """Forward then backward in one call; returns ``(loss, grads)``."""
    loss, cache = forward(xs, ys, h0, p, reset_after=reset_after)
    return loss, backward(cache, p)
