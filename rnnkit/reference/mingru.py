"""minGRU (Feng et al. 2024, log-space version) forward and backward by hand in NumPy.

This module owns the reference of the minGRU recurrence and the helpers the other parallel-cell
references share (σ, g and its slope, the input projection, its initialisation and its gradient). Parameters follow
``rnnkit.modern.MinGRUCell``: ``weight_ih`` (2H, I) with the candidate rows then the gate rows,
``bias_ih`` (2H,). Arrays are time-major: xs (T, B, I). The backward pass takes the gradient of
the loss with respect to every output and to the final state (any loss's, e.g. a linear
functional L = Σ_t dy_t · y_t + ds · s_T), so tests compare it with autograd for that functional.
NumPy only, float64.
"""

import numpy as np


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def g(x):
    """g(x) = x + ½ (x ≥ 0), σ(x) (x < 0), and its slope g′ = 1 or σ(1 − σ)."""
    s = sigmoid(x)
    return np.where(x >= 0, x + 0.5, s), np.where(x >= 0, 1.0, s * (1.0 - s))


def project(xs, p):
    """u_t = W x_t + b for every step: (T, B, I) → (T, B, rows)."""
    u = xs @ p["weight_ih"].T
    return u + p["bias_ih"] if p.get("bias_ih") is not None else u


def project_backward(xs, du, p, grads):
    """Add ∂L/∂W = Σ_t du_tᵀ x_t and ∂L/∂b = Σ_t du_t to ``grads``; return ∂L/∂x = du W."""
    grads["weight_ih"] = np.einsum("tbr,tbi->ri", du, xs)
    if p.get("bias_ih") is not None:
        grads["bias_ih"] = du.sum(axis=(0, 1))
    return du @ p["weight_ih"]


def uniform_projection(rows, input_size, rng=None, bias_rows=None, fan_in=None):
    """weight_ih (rows, I) and bias_ih (bias_rows, default rows) ~ U(±1/√fan_in), fan_in = I
    unless given: torch's default for ``Linear`` (and for ``Conv1d``, fan_in = width · I)."""
    rng = np.random.default_rng() if rng is None else rng
    bound = 1.0 / np.sqrt(input_size if fan_in is None else fan_in)
    return {
        "weight_ih": rng.uniform(-bound, bound, (rows, input_size)),
        "bias_ih": rng.uniform(-bound, bound, (rows if bias_rows is None else bias_rows,)),
    }


def init_params(input_size, hidden_size, rng=None):
    """weight_ih (2H, I) and bias_ih (2H,) ~ U(±1/√I), as ``MinGRUCell.reset_parameters``."""
    return uniform_projection(2 * hidden_size, input_size, rng)


def forward(xs, h0, p):
    """Run minGRU over xs (T, B, I) from h0 (B, H); returns ``(ys (T, B, H), cache)``.

    z_t = σ(ž_t), h̃_t = g(ȟ_t)          with [ȟ_t; ž_t] = W x_t + b
    h_t = (1 − z_t) ⊙ h_{t−1} + z_t ⊙ h̃_t,   y_t = h_t
    """
    u = project(xs, p)
    H = h0.shape[1]
    k, z = u[..., :H], sigmoid(u[..., H:])
    cand, slope = g(k)
    hs = np.empty((len(xs) + 1, *h0.shape))  # hs[t + 1] = h_t
    hs[0] = h0
    for t in range(len(xs)):
        hs[t + 1] = (1.0 - z[t]) * hs[t] + z[t] * cand[t]  # a leaky average: z near 0 keeps h
    return hs[1:].copy(), {"xs": xs, "hs": hs, "z": z, "cand": cand, "slope": slope}


def backward(cache, p, dys, dh_last=None):
    """Gradients of L with ∂L/∂y_t = dys[t] and ∂L/∂h_T = dh_last; keys of p plus "xs", "h0".

    Walking t = T..1 with dh = ∂L/∂h_t (from y_t and from step t + 1):
        ∂L/∂ȟ_t = dh ⊙ z_t ⊙ g′(ȟ_t)
        ∂L/∂ž_t = dh ⊙ (h̃_t − h_{t−1}) ⊙ z_t (1 − z_t)
        ∂L/∂h_{t−1} = dh ⊙ (1 − z_t)                 (carried to the previous step)
    """
    hs, z, cand, slope = cache["hs"], cache["z"], cache["cand"], cache["slope"]
    H = hs.shape[2]
    du = np.zeros((*z.shape[:2], 2 * H))
    carry = np.zeros_like(hs[0]) if dh_last is None else dh_last.copy()
    for t in reversed(range(len(z))):
        dh = dys[t] + carry  # both paths into h_t
        du[t, :, :H] = dh * z[t] * slope[t]
        du[t, :, H:] = dh * (cand[t] - hs[t]) * z[t] * (1.0 - z[t])
        carry = dh * (1.0 - z[t])
    grads = {}
    grads["xs"] = project_backward(cache["xs"], du, p, grads)
    grads["h0"] = carry
    return grads
