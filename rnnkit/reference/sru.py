"""SRU (Lei et al. 2018) forward and backward by hand in NumPy.

This module owns the reference of the SRU recurrence with the vector recurrence v ⊙ c_{t−1} in
its gates and the highway connection. Parameters follow ``rnnkit.modern.SRUCell``:
``weight_ih`` (3H, I) for I = H (rows W, W_f, W_r; the highway input is x itself) or (4H, I)
(a fourth block W_h projects the highway input), ``bias_ih`` (2H,) = [b_f, b_r], ``weight_hh``
(2H,) = [v_f, v_r]. Conventions as in :mod:`.mingru`. NumPy only, float64.
"""

import numpy as np

from .mingru import sigmoid


def init_params(input_size, hidden_size, rng=None):
    """Random parameters of the shapes above (W ~ U(±√(3/I)); v, b ~ U(±1/√H))."""
    rng = np.random.default_rng() if rng is None else rng
    rows = (3 if input_size == hidden_size else 4) * hidden_size
    bound, bound_v = np.sqrt(3.0 / input_size), 1.0 / np.sqrt(hidden_size)
    return {
        "weight_ih": rng.uniform(-bound, bound, (rows, input_size)),
        "weight_hh": rng.uniform(-bound_v, bound_v, (2 * hidden_size,)),
        "bias_ih": rng.uniform(-bound_v, bound_v, (2 * hidden_size,)),
    }


def forward(xs, c0, p):
    """Run the SRU over xs (T, B, I) from c0 (B, H); returns ``(ys, cache)``.

    x̃ = W x_t,  f = σ(W_f x_t + v_f ⊙ c_{t−1} + b_f),  r = σ(W_r x_t + v_r ⊙ c_{t−1} + b_r)
    c_t = f ⊙ c_{t−1} + (1 − f) ⊙ x̃,   y_t = r ⊙ c_t + (1 − r) ⊙ x̂_t  (x̂ = x or W_h x)
    """
    H = c0.shape[1]
    u = xs @ p["weight_ih"].T
    xt, af, ar = u[..., :H], u[..., H : 2 * H] + p["bias_ih"][:H], u[..., 2 * H : 3 * H]
    ar = ar + p["bias_ih"][H:]
    xh = u[..., 3 * H :] if u.shape[-1] == 4 * H else xs
    v_f, v_r = p["weight_hh"][:H], p["weight_hh"][H:]
    T = len(xs)
    cs = np.empty((T + 1, *c0.shape))
    cs[0] = c0
    f, r = np.empty_like(xt), np.empty_like(xt)
    for t in range(T):
        f[t] = sigmoid(af[t] + v_f * cs[t])  # the gates see the previous memory elementwise
        r[t] = sigmoid(ar[t] + v_r * cs[t])
        cs[t + 1] = f[t] * cs[t] + (1.0 - f[t]) * xt[t]
    ys = r * cs[1:] + (1.0 - r) * xh  # highway: r near 0 passes the input through
    return ys, {"xs": xs, "cs": cs, "xt": xt, "xh": xh, "f": f, "r": r}


def backward(cache, p, dys, dc_last=None):
    """Gradients of L (∂L/∂y_t = dys[t], ∂L/∂c_T = dc_last); keys of p plus "xs", "c0".

    Per step, with a_f, a_r the gates' pre-activations and dc = ∂L/∂c_t:
        ∂L/∂a_r = dy ⊙ (c_t − x̂) ⊙ r(1 − r),   dc += dy ⊙ r,   ∂L/∂x̂ = dy ⊙ (1 − r)
        ∂L/∂a_f = dc ⊙ (c_{t−1} − x̃) ⊙ f(1 − f),   ∂L/∂x̃ = dc ⊙ (1 − f)
        ∂L/∂v_f += ∂L/∂a_f ⊙ c_{t−1},  ∂L/∂v_r += ∂L/∂a_r ⊙ c_{t−1}
        ∂L/∂c_{t−1} = dc ⊙ f + ∂L/∂a_f ⊙ v_f + ∂L/∂a_r ⊙ v_r
    """
    xs, cs, xt, xh, f, r = (cache[k] for k in ("xs", "cs", "xt", "xh", "f", "r"))
    H = cs.shape[2]
    W = p["weight_ih"]
    v_f, v_r = p["weight_hh"][:H], p["weight_hh"][H:]
    du = np.zeros((len(xs), xs.shape[1], W.shape[0]))
    dxh = np.zeros_like(xt)
    dv = np.zeros(2 * H)
    carry = np.zeros_like(cs[0]) if dc_last is None else dc_last.copy()
    for t in reversed(range(len(xs))):
        dy = dys[t]
        da_r = dy * (cs[t + 1] - xh[t]) * r[t] * (1.0 - r[t])
        dxh[t] = dy * (1.0 - r[t])
        dc = carry + dy * r[t]
        da_f = dc * (cs[t] - xt[t]) * f[t] * (1.0 - f[t])
        du[t, :, :H] = dc * (1.0 - f[t])
        du[t, :, H : 2 * H] = da_f
        du[t, :, 2 * H : 3 * H] = da_r
        dv[:H] += (da_f * cs[t]).sum(0)
        dv[H:] += (da_r * cs[t]).sum(0)
        carry = dc * f[t] + da_f * v_f + da_r * v_r
    if W.shape[0] == 4 * H:
        du[..., 3 * H :] = dxh
    grads = {
        "weight_ih": np.einsum("tbr,tbi->ri", du, xs),
        "bias_ih": du[..., H : 3 * H].sum(axis=(0, 1)),
        "weight_hh": dv,
        "c0": carry,
    }
    grads["xs"] = du @ W + (dxh if W.shape[0] == 3 * H else 0.0)
    return grads
