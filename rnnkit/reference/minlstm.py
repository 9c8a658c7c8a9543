"""minLSTM (Feng et al. 2024, log-space version with normalised gates) by hand in NumPy.

This module owns the reference of the minLSTM recurrence. Parameters follow
``rnnkit.modern.MinLSTMCell``: ``weight_ih`` (3H, I) with rows for the candidate, the forget and
the input gate, ``bias_ih`` (3H,). Conventions (time-major arrays, gradients of any loss given
by ∂L/∂y and ∂L/∂h_T) as in :mod:`.mingru`. NumPy only, float64.
"""

import numpy as np

from .mingru import g, project, project_backward, sigmoid, uniform_projection


def init_params(input_size, hidden_size, rng=None):
    """weight_ih (3H, I) and bias_ih (3H,) ~ U(±1/√I), as ``MinLSTMCell.reset_parameters``."""
    return uniform_projection(3 * hidden_size, input_size, rng)


def forward(xs, h0, p):
    """Run minLSTM over xs (T, B, I) from h0 (B, H); returns ``(ys, cache)``.

    f_t = σ(f̌_t), i_t = σ(ǐ_t), h̃_t = g(ȟ_t),   f′ = f/(f + i), i′ = i/(f + i)
    h_t = f′_t ⊙ h_{t−1} + i′_t ⊙ h̃_t
    """
    u = project(xs, p)
    H = h0.shape[1]
    cand, slope = g(u[..., :H])
    f, i = sigmoid(u[..., H : 2 * H]), sigmoid(u[..., 2 * H :])
    hs = np.empty((len(xs) + 1, *h0.shape))
    hs[0] = h0
    for t in range(len(xs)):
        hs[t + 1] = (f[t] * hs[t] + i[t] * cand[t]) / (f[t] + i[t])  # weights sum to one
    return hs[1:].copy(), {"xs": xs, "hs": hs, "f": f, "i": i, "cand": cand, "slope": slope}


def backward(cache, p, dys, dh_last=None):
    """Gradients of L (∂L/∂y_t = dys[t], ∂L/∂h_T = dh_last); keys of p plus "xs", "h0".

    With S = f + i and dh = ∂L/∂h_t: ∂L/∂f′ = dh ⊙ h_{t−1}, ∂L/∂i′ = dh ⊙ h̃;
    f′ = f/S gives ∂f′/∂f = i/S², ∂f′/∂i = −f/S² (and i′ = 1 − f′), so with q = (∂L/∂f′ −
    ∂L/∂i′)/S²: ∂L/∂f = i q, ∂L/∂i = −f q; then σ′ for the pre-activations;
    ∂L/∂ȟ = dh ⊙ i′ ⊙ g′(ȟ); ∂L/∂h_{t−1} = dh ⊙ f′.
    """
    hs, f, i, cand, slope = (cache[k] for k in ("hs", "f", "i", "cand", "slope"))
    H = hs.shape[2]
    du = np.zeros((*f.shape[:2], 3 * H))
    carry = np.zeros_like(hs[0]) if dh_last is None else dh_last.copy()
    for t in reversed(range(len(f))):
        dh = dys[t] + carry
        S = f[t] + i[t]
        q = (dh * hs[t] - dh * cand[t]) / S**2
        du[t, :, :H] = dh * (i[t] / S) * slope[t]
        du[t, :, H : 2 * H] = i[t] * q * f[t] * (1.0 - f[t])
        du[t, :, 2 * H :] = -f[t] * q * i[t] * (1.0 - i[t])
        carry = dh * f[t] / S
    grads = {}
    grads["xs"] = project_backward(cache["xs"], du, p, grads)
    grads["h0"] = carry
    return grads
