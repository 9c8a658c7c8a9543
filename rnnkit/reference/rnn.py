"""Vanilla (Elman) RNN with a softmax output layer, forward and backward by hand in NumPy.

This module owns two things:

* the pieces shared by every reference model: ``sigmoid``, torch's initialisation
  (``torch_like_params``) and the softmax output layer (``output_step``, ``output_forward`` over
  a whole sequence, and ``output_backward``) with logits ``Z_y = W_y h_t + b_y``,
  probabilities ``ŷ_t = softmax(Z_y)`` and the summed cross-entropy
  ``L = -Σ_t Σ_b log ŷ_t[b, y_t[b]]``;
* the vanilla recurrent cell ``h_t = g(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)`` with
  ``g = tanh`` or ``relu``, and its backpropagation through time.

Parameter names and shapes are those of ``torch.nn.RNNCell`` (plus ``W_y``, ``b_y`` for the
output layer) so that the gradients can be compared entry by entry with autograd.

Layout: a batch is stored row-wise, so the column-vector equation ``W x`` is written
``x @ W.T`` in code and a weight gradient ``Σ δ xᵀ`` is written ``δ.T @ x``.
Everything is float64 NumPy; this package must never import torch.
"""

import numpy as np

NONLINEARITIES = ("tanh", "relu")


def sigmoid(x):
    """σ(x) = 1 / (1 + e^{-x}), written via tanh so it never overflows (used by LSTM and GRU)."""
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # identity σ(x) = (1 + tanh(x/2)) / 2


def init_params(input_size, hidden_size, vocab_size, rng=None):
    """Draw parameters like PyTorch does: every entry ~ U(-1/√H, 1/√H).

    Returns a dict with ``weight_ih`` (H, I), ``weight_hh`` (H, H), ``bias_ih`` (H,),
    ``bias_hh`` (H,), ``W_y`` (V, H) and ``b_y`` (V,), all float64.
    """
    return torch_like_params(1, input_size, hidden_size, vocab_size, rng)


def torch_like_params(gates, input_size, hidden_size, vocab_size, rng=None, extra=None):
    """A cell of ``gates`` stacked gate blocks (RNN 1, GRU 3, LSTM 4) and the softmax output
    layer, drawn as torch draws its recurrent cells and ``Linear(H, V)``: every entry
    ~ U(−1/√H, 1/√H), in the order ``weight_ih`` (G·H, I), ``weight_hh`` (G·H, H), ``bias_ih``,
    ``bias_hh`` (G·H,), ``W_y`` (V, H), ``b_y`` (V,), then ``extra`` (name → shape)."""
    rng = np.random.default_rng() if rng is None else rng
    bound = 1.0 / np.sqrt(hidden_size)
    rows = gates * hidden_size
    shapes = {
        "weight_ih": (rows, input_size),
        "weight_hh": (rows, hidden_size),
        "bias_ih": (rows,),
        "bias_hh": (rows,),
        "W_y": (vocab_size, hidden_size),
        "b_y": (vocab_size,),
        **(extra or {}),
    }
    return {k: rng.uniform(-bound, bound, size=s) for k, s in shapes.items()}


def output_step(h, y, p):
    """Softmax output layer for one time step of a batch.

    Z_y = W_y h + b_y,  ŷ = softmax(Z_y),  loss = -Σ_b log ŷ[b, y[b]].
    Returns ``(loss, probs)`` with probs of shape (B, V).
    """
    logits = h @ p["W_y"].T + p["b_y"]  # Z_y, one row per batch element
    shifted = logits - logits.max(axis=1, keepdims=True)  # shift-invariant; prevents overflow
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))  # log ŷ, stable
    loss = -log_probs[np.arange(len(y)), y].sum()  # pick log ŷ of the target class, sum over batch
    return loss, np.exp(log_probs)


def output_backward(probs, y, h, p, grads):
    """Backward through the output layer; accumulates into ``grads`` and returns ∂L/∂h.

    ∂L/∂Z_y = ŷ − onehot(y);  ∂L/∂W_y += ∂L/∂Z_y · hᵀ;  ∂L/∂b_y += ∂L/∂Z_y;
    the returned ∂L/∂h = W_yᵀ ∂L/∂Z_y is only this step's share (the caller adds the
    gradient that flows back from step t+1).
    """
    dzy = probs.copy()  # start from ŷ ...
    dzy[np.arange(len(y)), y] -= 1.0  # ... minus onehot(y): softmax + cross-entropy derivative
    grads["W_y"] += dzy.T @ h  # Σ_b ∂L/∂Z_y · hᵀ
    grads["b_y"] += dzy.sum(axis=0)  # the bias sees the same error at every batch row
    return dzy @ p["W_y"]  # W_yᵀ ∂L/∂Z_y, row-wise


def output_forward(xs, ys, hs, p, **saved):
    """The softmax output layer over every step of a finished recurrence ``hs`` (T + 1, B, H):
    L = Σ_t loss_t of :func:`output_step` on h_t. Returns ``(loss, cache)``, the cache holding
    ``xs``, ``ys``, ``hs``, ``probs`` (T, B, V) and ``saved`` (what the cell's backward needs)."""
    probs = np.empty((len(xs), hs.shape[1], p["W_y"].shape[0]))  # ŷ_t, needed by the backward
    loss = 0.0
    for t in range(len(xs)):
        step_loss, probs[t] = output_step(hs[t + 1], ys[t], p)
        loss += step_loss  # the loss is a plain sum over steps
    return loss, {"xs": xs, "ys": ys, "hs": hs, "probs": probs, **saved}


def forward(xs, ys, h0, p, nonlinearity="tanh"):
    """Run the RNN over a sequence and return ``(loss, cache)``.

    xs: (T, B, I) float inputs; ys: (T, B) integer targets; h0: (B, H) initial state.
    For t = 1..T:
        Z_h = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh
        h_t = g(Z_h),  g = tanh or relu
        ŷ_t = softmax(W_y h_t + b_y)
    L = -Σ_t Σ_b log ŷ_t[b, y_t[b]] (summed over time and batch, not averaged).
    """
    if nonlinearity not in NONLINEARITIES:
        raise ValueError(f"nonlinearity must be one of {NONLINEARITIES}, got {nonlinearity!r}")
    T, B, _ = xs.shape
    H = p["weight_hh"].shape[0]
    hs = np.empty((T + 1, B, H))  # hs[t + 1] is h_t; hs[0] is h0, so h_{t-1} is always hs[t]
    hs[0] = h0
    zs = np.empty((T, B, H))  # pre-activations, kept for the relu derivative and for inspection
    for t in range(T):
        zs[t] = xs[t] @ p["weight_ih"].T + p["bias_ih"] + hs[t] @ p["weight_hh"].T + p["bias_hh"]
        hs[t + 1] = np.tanh(zs[t]) if nonlinearity == "tanh" else np.maximum(zs[t], 0.0)
    return output_forward(xs, ys, hs, p, zs=zs, nonlinearity=nonlinearity)


def backward(cache, p):
    """Backpropagation through time; returns a dict of gradients keyed like ``p`` plus ``"h0"``.

    Walking t = T..1 and carrying dh_next = ∂L/∂h_t arriving from step t+1:
        ∂L/∂h_t   = W_yᵀ (ŷ_t − onehot(y_t)) + dh_next
        ∂L/∂Z_h   = ∂L/∂h_t ⊙ g'(Z_h),  g' = 1 − h_t² (tanh) or 1[Z_h > 0] (relu)
        ∂L/∂W_ih += ∂L/∂Z_h · x_tᵀ,   ∂L/∂W_hh += ∂L/∂Z_h · h_{t-1}ᵀ
        ∂L/∂b_ih += ∂L/∂Z_h,          ∂L/∂b_hh += ∂L/∂Z_h
        dh_next   = W_hhᵀ ∂L/∂Z_h     (becomes ∂L/∂h0 after the last step)
    """
    xs, ys, hs, zs, probs = cache["xs"], cache["ys"], cache["hs"], cache["zs"], cache["probs"]
    grads = {k: np.zeros_like(v) for k, v in p.items()}  # weights are shared over time: accumulate
    dh_next = np.zeros_like(hs[0])  # nothing flows back into the last step from the future
    for t in reversed(range(len(xs))):
        dh = output_backward(probs[t], ys[t], hs[t + 1], p, grads) + dh_next  # both paths into h_t
        if cache["nonlinearity"] == "tanh":
            dz = (1.0 - hs[t + 1] ** 2) * dh  # tanh' = 1 − tanh², reusing the stored h_t
        else:
            dz = (zs[t] > 0) * dh  # relu' is a step function (0 at the kink, as torch does)
        grads["weight_ih"] += dz.T @ xs[t]  # ∂L/∂Z_h · x_tᵀ
        grads["weight_hh"] += dz.T @ hs[t]  # ∂L/∂Z_h · h_{t-1}ᵀ
        grads["bias_ih"] += dz.sum(axis=0)  # both biases enter Z_h additively ...
        grads["bias_hh"] += dz.sum(axis=0)  # ... so they get the same gradient
        dh_next = dz @ p["weight_hh"]  # W_hhᵀ ∂L/∂Z_h: what h_{t-1} receives through the recurrence
    grads["h0"] = dh_next  # after the loop dh_next is the gradient w.r.t. the initial state
    return grads


def loss_and_grads(xs, ys, h0, p, nonlinearity="tanh"):
    """Forward then backward in one call; returns ``(loss, grads)``."""
    loss, cache = forward(xs, ys, h0, p, nonlinearity=nonlinearity)
    return loss, backward(cache, p)
