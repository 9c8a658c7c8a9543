"""mLSTM (xLSTM, Beck et al. 2024) in its recurrent, stabilised form, forward and backward in NumPy.

This module owns the reference of the matrix-memory recurrence, walked one step at a time (the
form the parallel and chunkwise paths of ``rnnkit.modern.MLSTMCell`` must equal). Parameters
follow that cell: ``weight_ih`` (4H + 2·NH, I) with rows q, k, v, o (H each), then the input and
forget gates (one per head), ``bias_ih`` likewise. The state is (C (B, NH, d, d), n (B, NH, d),
m (B, NH)). Conventions as in :mod:`.mingru`. NumPy only, float64.
"""

import numpy as np

from .mingru import project, project_backward, sigmoid


def init_params(input_size, hidden_size, num_heads, rng=None):
    """Random weight_ih (4H + 2NH, I) ~ U(±1/√I) and bias_ih ~ N(0, 1) (gates of both signs)."""
    rng = np.random.default_rng() if rng is None else rng
    rows = 4 * hidden_size + 2 * num_heads
    bound = 1.0 / np.sqrt(input_size)
    return {
        "weight_ih": rng.uniform(-bound, bound, (rows, input_size)),
        "bias_ih": rng.standard_normal(rows),
    }


def _split(u_t, H, NH):
    B, d = u_t.shape[0], H // NH
    q, k, v = (u_t[:, j * H : (j + 1) * H].reshape(B, NH, d) for j in range(3))
    o_pre = u_t[:, 3 * H : 4 * H]
    return q, k / np.sqrt(d), v, o_pre, u_t[:, 4 * H : 4 * H + NH], u_t[:, 4 * H + NH :]


def forward(xs, state0, p, num_heads):
    """Run the mLSTM over xs (T, B, I) from state0 = (C, n, m); returns ``(ys, cache)``.

    Per step and head (ǐ, f̌ scalars, log σ(f̌) the log forget gate):
        m_t = max(log σ(f̌) + m_{t−1}, ǐ),  i′ = e^{ǐ − m_t},  f′ = e^{log σ(f̌) + m_{t−1} − m_t}
        C_t = f′ C_{t−1} + i′ v kᵀ,  n_t = f′ n_{t−1} + i′ k,  a = C_t q,  b = n_tᵀ q
        h̃ = a / max(|b|, e^{−m_t}),  y_t = σ(ǒ) ⊙ h̃   (heads side by side)
    """
    u = project(xs, p)
    NH = num_heads
    H = (p["weight_ih"].shape[0] - 2 * NH) // 4
    C, n, m = (np.array(s, dtype=float) for s in state0)
    steps = []
    ys = np.empty((len(xs), xs.shape[1], H))
    for t in range(len(xs)):
        q, k, v, o_pre, i_pre, f_pre = _split(u[t], H, NH)
        lf = -np.logaddexp(0.0, -f_pre)  # log σ(f̌), computed without overflow
        m_new = np.maximum(lf + m, i_pre)  # the stabiliser: the largest log weight so far
        i, f = np.exp(i_pre - m_new), np.exp(lf + m - m_new)
        C_new = f[..., None, None] * C + i[..., None, None] * (v[..., :, None] * k[..., None, :])
        n_new = f[..., None] * n + i[..., None] * k
        a = np.einsum("bhvk,bhk->bhv", C_new, q)
        b = (n_new * q).sum(-1)
        e = np.exp(-m_new)
        den = np.maximum(np.abs(b), e)  # |nᵀq| below 1 (unscaled) is treated as 1
        o = sigmoid(o_pre)
        ht = a / den[..., None]
        ys[t] = o * ht.reshape(len(o), H)
        steps.append(
            dict(
                q=q,
                k=k,
                v=v,
                o=o,
                i_pre=i_pre,
                f_pre=f_pre,
                lf=lf,
                m_prev=m,
                m=m_new,
                i=i,
                f=f,
                C_prev=C,
                n_prev=n,
                C=C_new,
                n=n_new,
                a=a,
                b=b,
                e=e,
                den=den,
                ht=ht,
            )
        )
        C, n, m = C_new, n_new, m_new
    return ys, {"xs": xs, "steps": steps, "H": H, "NH": NH, "state": (C, n, m)}


def backward(cache, p, dys, dstate_last=None):
    """Gradients of L (∂L/∂y_t = dys[t], ∂L/∂(C_T, n_T, m_T) = dstate_last); keys of p plus
    "xs", "C0", "n0", "m0".

    Walking back with the carried (dC, dn, dm) of (C_t, n_t, m_t):
        ∂ǒ = dy ⊙ h̃ ⊙ o(1 − o);  dh̃ = dy ⊙ o;  ∂a = dh̃ / den;  ∂den = −Σ dh̃ ⊙ a / den²
        den = |b| (if |b| ≥ e^{−m}): ∂b = ∂den sign(b), else ∂m −= e^{−m} ∂den
        dC += ∂a qᵀ, dn += ∂b q, ∂q = C_tᵀ ∂a + ∂b n_t
        ∂f′ = ⟨dC, C_{t−1}⟩ + ⟨dn, n_{t−1}⟩, ∂i′ = vᵀ dC k + ⟨dn, k⟩
        ∂v = i′ dC k, ∂k = i′ (dCᵀ v + dn), dC_{t−1} = f′ dC, dn_{t−1} = f′ dn
        through the exponents (∂ǐ += i′ ∂i′, ∂log σ(f̌) += f′ ∂f′, ∂m_{t−1} += f′ ∂f′,
        ∂m_t −= i′ ∂i′ + f′ ∂f′) and the max (∂m_t to its larger argument);
        ∂f̌ = ∂log σ(f̌) ⊙ (1 − σ(f̌)), and k's 1/√d.
    """
    H, NH, steps = cache["H"], cache["NH"], cache["steps"]
    d = H // NH
    T, B = len(steps), cache["xs"].shape[1]
    C_T, n_T, m_T = cache["state"]
    if dstate_last is None:
        dC, dn, dm = np.zeros_like(C_T), np.zeros_like(n_T), np.zeros_like(m_T)
    else:
        dC, dn, dm = (np.array(s, dtype=float) for s in dstate_last)
    du = np.zeros((T, B, 4 * H + 2 * NH))
    for t in reversed(range(T)):
        s = steps[t]
        dy = dys[t]
        do_pre = dy * s["ht"].reshape(B, H) * s["o"] * (1.0 - s["o"])
        dht = (dy * s["o"]).reshape(B, NH, d)
        da = dht / s["den"][..., None]
        dden = -(dht * s["a"]).sum(-1) / s["den"] ** 2
        use_b = np.abs(s["b"]) >= s["e"]
        db = np.where(use_b, dden * np.sign(s["b"]), 0.0)
        dm = dm - np.where(use_b, 0.0, dden) * s["e"]  # den = e^{−m}: ∂/∂m = −e^{−m}
        dC = dC + da[..., :, None] * s["q"][..., None, :]
        dn = dn + db[..., None] * s["q"]
        dq = np.einsum("bhvk,bhv->bhk", s["C"], da) + db[..., None] * s["n"]
        df = (dC * s["C_prev"]).sum((-1, -2)) + (dn * s["n_prev"]).sum(-1)
        di = np.einsum("bhvk,bhv,bhk->bh", dC, s["v"], s["k"]) + (dn * s["k"]).sum(-1)
        dv = s["i"][..., None] * np.einsum("bhvk,bhk->bhv", dC, s["k"])
        dk = s["i"][..., None] * (np.einsum("bhvk,bhv->bhk", dC, s["v"]) + dn)
        dC, dn = s["f"][..., None, None] * dC, s["f"][..., None] * dn
        dip = di * s["i"]
        dlf = df * s["f"]
        dm_prev = df * s["f"]
        dm = dm - di * s["i"] - df * s["f"]
        first = s["lf"] + s["m_prev"] >= s["i_pre"]  # which argument the max took
        dlf = dlf + np.where(first, dm, 0.0)
        dm_prev = dm_prev + np.where(first, dm, 0.0)
        dip = dip + np.where(first, 0.0, dm)
        df_pre = dlf * (1.0 - sigmoid(s["f_pre"]))  # d log σ(x)/dx = 1 − σ(x)
        du[t] = np.concatenate(
            [
                dq.reshape(B, H),
                (dk / np.sqrt(d)).reshape(B, H),
                dv.reshape(B, H),
                do_pre,
                dip,
                df_pre,
            ],
            axis=1,
        )
        dm = dm_prev
    grads = {}
    grads["xs"] = project_backward(cache["xs"], du, p, grads)
    grads["C0"], grads["n0"], grads["m0"] = dC, dn, dm
    return grads
