"""The LSTM on the fast path (peepholes, layer norm): its TorchScript forward / backward loops,
the autograd function over them, its native-kernel backward and :func:`lstm_sequence`."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from rnnkit.cells import LN_EPS
from rnnkit.fast.gemm import (
    _ROWS_PER_THREAD,
    _contiguous,
    _full,
    _grad_weight,
    _grad_weight_prev,
    _mm,
    _mm_add,
    _native_ok,
    _pack,
    _panels,
    _rows,
    _sum_prev,
    _use_fused,
)
from rnnkit.fast.pieces import (
    _ln_backward,
    _ln_param_sums,
    _loop,
    _one_minus,
    _one_minus_square,
    _split_blend,
    _steps_back,
    _sum_tb,
    _tanh_into,
)


def _lstm_forward_loop(
    xp: Tensor,
    h0: Tensor,
    c0: Tensor,
    w: Tensor,
    onednn: bool,
    b_hh: Tensor | None,
    w_cif: Tensor | None,
    w_co: Tensor | None,
    lnh_w: Tensor | None,
    lnh_b: Tensor | None,
    lnc_w: Tensor | None,
    lnc_b: Tensor | None,
    a_h: Tensor | None,
    a_c: Tensor | None,
    gates: Tensor,
    hs: Tensor,
    cs: Tensor,
    ct: Tensor,
    tc: Tensor,
    eps: float,
    scale: Tensor | None,
) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor], list[Tensor]]:
    """With ``scale`` (= 1, 1, 2, 1 per gate block; CPU) the g block of W (or of the LN gain and
    shift) and of ``xp`` arrives doubled and the LN-c gain and shift doubled, so one sigmoid gives
    i, f, o and σ(2 z_g), and tanh is computed as 2σ(2x) − 1 (see :func:`_tanh_into`)."""
    T, B, G = xp.shape[0], xp.shape[1], xp.shape[2]
    H = G // 4
    pre: list[Tensor] = []
    means: list[Tensor] = []
    rstds: list[Tensor] = []
    c_means: list[Tensor] = []
    c_rstds: list[Tensor] = []
    xp_l, g_l, hs_l, cs_l = xp.unbind(0), gates.unbind(0), hs.unbind(0), cs.unbind(0)
    ct_l, tc_l = ct.unbind(0), tc.unbind(0)
    gv = gates.view(T, B, 4, H)
    i_l, f_l = gv.select(2, 0).unbind(0), gv.select(2, 1).unbind(0)
    g2_l, o_l = gv.select(2, 2).unbind(0), gv.select(2, 3).unbind(0)
    ah_l: list[Tensor] = a_h.unbind(0) if a_h is not None else []
    ac_l: list[Tensor] = a_c.unbind(0) if a_c is not None else []
    h, c = h0, c0
    for t in range(T):
        if lnh_w is not None and lnh_b is not None:
            a = _mm(h, w, b_hh, onednn)
            z, mean, rstd = torch.native_layer_norm(a, [G], lnh_w, lnh_b, eps)
            if scale is not None:
                z.addcmul_(xp_l[t], scale)
            else:
                z.add_(xp_l[t])
            pre.append(a)
            means.append(mean)
            rstds.append(rstd)
        elif scale is not None:
            z = _mm(h, w, b_hh, onednn).addcmul_(xp_l[t], scale)
        else:
            z = _mm_add(h, w, b_hh, xp_l[t], onednn)
        if w_cif is not None:
            z.view(B, 4, H).narrow(1, 0, 2).addcmul_(w_cif, c.unsqueeze(1))
        torch.sigmoid(z, out=g_l[t])
        if scale is not None:
            g2_l[t].mul_(2.0).sub_(1.0)  # 2σ(2 z_g) − 1 = tanh(z_g)
        else:
            torch.tanh(z.narrow(1, 2 * H, H), out=g2_l[t])
        c_new = ct_l[t]
        torch.mul(f_l[t], c, out=c_new)
        c_new.addcmul_(i_l[t], g2_l[t])
        if w_co is not None:
            torch.sigmoid(z.narrow(1, 3 * H, H).addcmul_(w_co, c_new), out=o_l[t])
        if lnc_w is not None and lnc_b is not None:
            c_hat, c_mean, c_rstd = torch.native_layer_norm(c_new, [H], lnc_w, lnc_b, eps)
            if scale is not None:  # c_hat is 2 LN(c̃)
                torch.sigmoid(c_hat, out=tc_l[t]).mul_(2.0).sub_(1.0)
            else:
                torch.tanh(c_hat, out=tc_l[t])
            c_means.append(c_mean)
            c_rstds.append(c_rstd)
        else:
            _tanh_into(c_new, tc_l[t], scale is not None)
        if len(ah_l) > 0:
            torch.lerp(h, o_l[t] * tc_l[t], ah_l[t], out=hs_l[t])
            torch.lerp(c, c_new, ac_l[t], out=cs_l[t])
        else:
            torch.mul(o_l[t], tc_l[t], out=hs_l[t])
        h, c = hs_l[t], cs_l[t]
    return pre, means, rstds, c_means, c_rstds


def _lstm_backward_loop(
    dz: Tensor,
    k_c: Tensor,
    f_prev: Tensor,
    ct: Tensor,
    gy: Tensor | None,
    gc_out: Tensor | None,
    w_t: Tensor,
    onednn: bool,
    w_co: Tensor | None,
    lnh_w: Tensor | None,
    lnc_w: Tensor | None,
    pre: list[Tensor],
    means: list[Tensor],
    rstds: list[Tensor],
    c_means: list[Tensor],
    c_rstds: list[Tensor],
    a_h: Tensor | None,
    a_c: Tensor | None,
) -> tuple[Tensor, Tensor, list[Tensor], list[Tensor], list[Tensor], list[Tensor], list[Tensor]]:
    """``dz (T, B, 4, H)`` holds the gate coefficients on entry and ∂L/∂z on return."""
    T, B, H = dz.shape[0], dz.shape[1], dz.shape[3]
    dzo_l, dz3_l = dz.select(2, 3).unbind(0), dz.narrow(2, 0, 3).unbind(0)
    dz2_l = dz.view(T, B, 4 * H).unbind(0)
    kc_l, fp_l, ct_l = k_c.unbind(0), f_prev.unbind(0), ct.unbind(0)
    gy_l: list[Tensor] = gy.unbind(0) if gy is not None else []
    gc_l: list[Tensor] = gc_out.unbind(0) if gc_out is not None else []
    ah_l: list[Tensor] = a_h.unbind(0) if a_h is not None else []
    ac_l: list[Tensor] = a_c.unbind(0) if a_c is not None else []
    da_l: list[Tensor] = []
    dwh_l: list[Tensor] = []
    dbh_l: list[Tensor] = []
    dwc_l: list[Tensor] = []
    dbc_l: list[Tensor] = []
    gh = gy_l[T - 1] if len(gy_l) > 0 else torch.zeros_like(kc_l[0])
    gc = gc_l[T - 1] if len(gc_l) > 0 else torch.zeros_like(kc_l[0])
    for t in range(T - 1, -1, -1):
        gh_new, add = _split_blend(gh, ah_l, t)
        gc_new, dir_c = _split_blend(gc, ac_l, t)
        dzo_l[t].mul_(gh_new)
        if lnc_w is not None:
            g_chat = torch.mul(gh_new, kc_l[t])  # ∂L/∂ĉ
            gct, dw, db = _ln_backward(g_chat, ct_l[t], c_means[t], c_rstds[t], lnc_w)
            dwc_l.append(dw)
            dbc_l.append(db)
            gct.add_(gc_new)
            if w_co is not None:
                gct.addcmul_(dzo_l[t], w_co)
        else:
            gct = torch.addcmul(gc_new, gh_new, kc_l[t])
        dz3_l[t].mul_(gct.unsqueeze(1))
        da = dz2_l[t]
        if lnh_w is not None:
            da, dw, db = _ln_backward(da, pre[t], means[t], rstds[t], lnh_w)
            da_l.append(da)
            dwh_l.append(dw)
            dbh_l.append(db)
        gc = torch.mul(gct, fp_l[t])
        if dir_c is not None:
            gc.add_(dir_c)
        if t > 0:
            if len(gy_l) > 0:
                if add is None:
                    add = gy_l[t - 1]
                else:
                    add.add_(gy_l[t - 1])
            if len(gc_l) > 0:
                gc.add_(gc_l[t - 1])
        if add is None:
            gh = _mm(da, w_t, None, onednn)
        else:
            gh = _mm_add(da, w_t, None, add, onednn)
    return gh, gc, da_l, dwh_l, dbh_l, dwc_l, dbc_l


# ---------------------------------------------------------------------------------------------
# LSTM
# ---------------------------------------------------------------------------------------------
class _LSTMFunction(torch.autograd.Function):
    r"""The LSTM of :class:`~rnnkit.cells.LSTMCell` with optional peepholes and layer norm.

    Forward: z = x̂_t + â_t (â = W_hh h_{t−1} + b_hh or its LN), peepholes add w_ci ⊙ c_{t−1},
    w_cf ⊙ c_{t−1} to z_i, z_f and w_co ⊙ c̃_t to z_o; c̃_t = f ⊙ c_{t−1} + i ⊙ g,
    h̃_t = o ⊙ tanh(ĉ_t) with ĉ = c̃ or LN(c̃).

    Backward, with τ = tanh(ĉ) and every coefficient below precomputed for all t at once:
    ∂z_o = ∂h̃ ⊙ τ o(1−o);  ∂c̃ = ∂c̃_carry + [LN'](∂h̃ ⊙ o(1−τ²)) + ∂z_o ⊙ w_co;
    ∂z_i = ∂c̃ ⊙ g i(1−i);  ∂z_f = ∂c̃ ⊙ c_{t−1} f(1−f);  ∂z_g = ∂c̃ ⊙ i(1−g²);
    ∂c_{t−1} = ∂c̃ ⊙ (f + w_ci g i(1−i) + w_cf c_{t−1} f(1−f));
    ∂a = ∂z (or through LN), ∂h_{t−1} = ∂a W_hh.
    """

    @staticmethod
    def forward(
        ctx, xp, h0, c0, w_hh, b_hh, w_ci, w_cf, w_co, lnh_w, lnh_b, lnc_w, lnc_b, a_h, a_c
    ):
        T, B, G = xp.shape
        H = G // 4
        ctx.native = _native_ok(xp)
        if ctx.native:
            xp, a_h, a_c = xp.contiguous(), _full(a_h, T, B, H), _full(a_c, T, B, H)
            gates = xp.new_empty(T, B, G)
            hs, cs, tc = (xp.new_empty(T, B, H) for _ in "hct")
            ct = xp.new_empty(T, B, H) if a_h is not None else cs
            st_h = xp.new_empty(T, B, 2) if lnh_w is not None else None
            st_c = xp.new_empty(T, B, 2) if lnc_w is not None else None
            ctx.fused = _use_fused(xp) and B >= _ROWS_PER_THREAD * torch.get_num_threads()
            if ctx.fused:
                h0, c0 = h0.contiguous(), c0.contiguous()
                ctx.pre = xp.new_empty(T, B, G) if lnh_w is not None else None
                torch.ops.rnnkit_native.lstm_fused_forward(
                    xp, h0, c0, _panels(w_hh.t()), b_hh, w_ci, w_cf, w_co, lnh_w, lnh_b, lnc_w,
                    lnc_b, a_h, a_c, LN_EPS, gates, hs, cs, ct, tc, st_h, st_c, ctx.pre,
                )  # fmt: skip
            else:
                w, onednn = _pack(w_hh, B)
                pre = torch.ops.rnnkit_native.lstm_forward_seq(
                    xp, h0, c0, w, onednn, b_hh, w_ci, w_cf, w_co, lnh_w, lnh_b, lnc_w, lnc_b,
                    a_h, a_c, LN_EPS, gates, hs, cs, ct, tc, st_h, st_c,
                )  # fmt: skip
                ctx.pre = torch.stack(pre) if pre else None
            ctx.save_for_backward(
                h0, c0, w_hh, b_hh, w_ci, w_cf, w_co, lnh_w, lnc_w, a_h, a_c, gates, hs, cs, ct,
                tc, st_h, st_c,
            )  # fmt: skip
            ctx.set_materialize_grads(False)
            return hs, cs
        w_cif = torch.stack([w_ci, w_cf]) if w_ci is not None else None  # (2, H)
        scale = None
        lnh, lnc, w_in, b_in = (lnh_w, lnh_b), (lnc_w, lnc_b), w_hh, b_hh
        if xp.device.type == "cpu":  # double the g block: tanh from the sigmoid (_tanh_into)
            scale = xp.new_ones(4, H)
            scale[2] = 2.0
            scale = scale.view(G)
            if lnh_w is not None:
                lnh, lnc = (lnh_w * scale, lnh_b * scale), (lnc_w * 2.0, lnc_b * 2.0)
            else:
                w_in = w_hh * scale.unsqueeze(1)
                b_in = b_hh * scale if b_hh is not None else None
        w, onednn = _pack(w_in, B)
        gates = xp.new_empty(T, B, G)  # activated i, f, g, o
        hs, cs = xp.new_empty(T, B, H), xp.new_empty(T, B, H)  # states
        ct = xp.new_empty(T, B, H) if a_h is not None else cs  # the cell's new c̃_t
        tc = xp.new_empty(T, B, H)  # tanh(ĉ_t)
        ctx.lists = _loop(_lstm_forward_loop)(
            xp, h0, c0, w, onednn, b_in, w_cif, w_co, *lnh, *lnc, a_h, a_c,
            gates, hs, cs, ct, tc, LN_EPS, scale,
        )  # fmt: skip
        ctx.save_for_backward(
            h0, c0, w_hh, b_hh, w_ci, w_cf, w_co, lnh_w, lnc_w, a_h, a_c, gates, hs, cs, ct, tc
        )
        ctx.set_materialize_grads(False)
        return hs, cs

    @staticmethod
    @once_differentiable
    def backward(ctx, g_hs, g_cs):
        if ctx.native:
            return _lstm_native_backward(ctx, g_hs, g_cs)
        h0, c0, w_hh, b_hh, w_ci, w_cf, w_co, lnh_w, lnc_w, a_h, a_c, gates, hs, cs, ct, tc = (
            ctx.saved_tensors
        )
        T, B, G = gates.shape
        H = G // 4
        peephole, layer_norm = w_ci is not None, lnh_w is not None

        # Coefficients of the backward step for all t at once (see the class docstring); the
        # (T, B, 4, H) block then turns into ∂z in place, step by step.
        i, f, g, o = gates.view(T, B, 4, H).unbind(2)
        c_prev = torch.cat([c0.unsqueeze(0), cs[:-1]])  # (T, B, H)
        dz = gates.new_empty(T, B, 4, H)
        c_i, c_f, c_g, c_o = dz.unbind(2)
        _one_minus(i, c_i).mul_(g)
        _one_minus(f, c_f).mul_(c_prev)
        _one_minus_square(g, c_g).mul_(i)
        _one_minus(o, c_o).mul_(tc)
        k_c = _one_minus_square(tc, gates.new_empty(T, B, H)).mul_(o)  # ∂h̃/∂ĉ
        if peephole and not layer_norm:
            k_c.addcmul_(c_o, w_co)
        f_prev = f  # ∂c̃/∂c_{t−1} along the cell
        if peephole:
            f_prev = torch.addcmul(f, c_i, w_ci).addcmul_(c_f, w_cf)

        w_t, onednn = _pack(w_hh.t(), B)
        gh, gc, da_l, dwh, dbh, dwc, dbc = _loop(_lstm_backward_loop)(
            dz, k_c, f_prev, ct, g_hs, g_cs, w_t, onednn, w_co, lnh_w, lnc_w, *ctx.lists, a_h, a_c
        )
        dz = dz.view(T, B, G)
        da = _steps_back(da_l) if layer_norm else dz
        h_prev = torch.cat([h0.unsqueeze(0), hs[:-1]])
        g_w = _grad_weight(da.view(T * B, G), h_prev.view(T * B, H))
        g_b = _sum_tb(da) if b_hh is not None else None
        g_ci = g_cf = g_co = None
        if peephole:
            g_ci = _sum_tb(c_i * c_prev)
            g_cf = _sum_tb(c_f * c_prev)
            g_co = _sum_tb(c_o * ct)
        g_ln = [None] * 4
        if layer_norm:
            g_ln = [*_ln_param_sums(dwh, dbh), *_ln_param_sums(dwc, dbc)]
        return (dz, gh, gc, g_w, g_b, g_ci, g_cf, g_co, *g_ln, None, None)


def _lstm_native_backward(ctx, g_hs, g_cs):
    """:class:`_LSTMFunction`'s backward on the native step kernel (same equations)."""
    (h0, c0, w_hh, b_hh, w_ci, w_cf, w_co, lnh_w, lnc_w, a_h, a_c,
     gates, hs, cs, ct, tc, st_h, st_c) = ctx.saved_tensors  # fmt: skip
    T, B, G = gates.shape
    H = G // 4
    dz = gates.new_empty(T, B, G)
    da = gates.new_empty(T, B, G) if lnh_w is not None else None
    dchat = gates.new_empty(T, B, H) if lnc_w is not None else None
    if ctx.fused:
        gh, gc = torch.ops.rnnkit_native.lstm_fused_backward(
            _rows(g_hs), _rows(g_cs), gates, ct, tc, c0, cs, ctx.pre, st_h, st_c,
            w_ci, w_cf, w_co, lnh_w, lnc_w, a_h, a_c, _panels(w_hh), dz, da, dchat,
        )  # fmt: skip
    else:
        c_prev = torch.cat([c0.unsqueeze(0), cs[:-1]])
        w_t, onednn = _pack(w_hh.t(), B)
        pre = [] if ctx.pre is None else list(ctx.pre)
        gh, gc = torch.ops.rnnkit_native.lstm_backward_seq(
            _contiguous(g_hs), _contiguous(g_cs), gates, ct, tc, c_prev, pre, st_h, st_c,
            w_ci, w_cf, w_co, lnh_w, lnc_w, a_h, a_c, w_t, onednn, dz, da, dchat,
        )  # fmt: skip
    d_a = da if da is not None else dz
    g_w, g_b = _grad_weight_prev(d_a, h0, hs, bias=b_hh is not None)
    g_ci = g_cf = g_co = None
    if w_ci is not None:
        dzv = dz.view(T, B, 4, H)
        g_ci = _sum_prev(dzv[:, :, 0], c0, cs)
        g_cf = _sum_prev(dzv[:, :, 1], c0, cs)
        g_co = _sum_tb(dzv[:, :, 3] * ct)
    g_ln: list[Tensor | None] = [None] * 4
    if lnh_w is not None and st_h is not None:  # ∂γ = Σ ∂z ⊙ â, ∂β = Σ ∂z
        normed = (ctx.pre - st_h[..., :1]).mul_(st_h[..., 1:])
        g_ln[0], g_ln[1] = _sum_tb(normed.mul_(dz)), _sum_tb(dz)
    if lnc_w is not None and st_c is not None and dchat is not None:
        normed = (ct - st_c[..., :1]).mul_(st_c[..., 1:])
        g_ln[2], g_ln[3] = _sum_tb(normed.mul_(dchat)), _sum_tb(dchat)
    return (dz, gh, gc, g_w, g_b, g_ci, g_cf, g_co, *g_ln, None, None)


def lstm_sequence(
    xp: Tensor,
    h0: Tensor,
    c0: Tensor,
    params: dict,
    peephole: bool = False,
    layer_norm: bool = False,
    alpha_h: Tensor | None = None,
    alpha_c: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """LSTM over time-major ``xp (T, B, 4H)`` (the input projection, see :class:`LSTMCell`).

    Returns every step's ``(h, c)`` states as two ``(T, B, H)`` tensors; ``alpha_h``/``alpha_c``
    blend states as in the module docstring.
    """
    p = params
    peep = [p["weight_ci"], p["weight_cf"], p["weight_co"]] if peephole else [None] * 3
    ln_names = ("ln_hh_weight", "ln_hh_bias", "ln_c_weight", "ln_c_bias")
    ln = [p[k] for k in ln_names] if layer_norm else [None] * 4
    return _LSTMFunction.apply(
        xp, h0, c0, p["weight_hh"], p["bias_hh"], *peep, *ln, alpha_h, alpha_c
    )
