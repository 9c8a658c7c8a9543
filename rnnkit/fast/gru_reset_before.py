"""The GRU on the fast path, the lecture's form (reset applied before the recurrent product,
Cho et al. 2014): its TorchScript loops and the autograd function over them."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from rnnkit.cells import LN_EPS
from rnnkit.fast.gemm import (
    _contiguous,
    _full,
    _grad_weight,
    _grad_weight_prev,
    _mm,
    _mm_add,
    _pack,
    _panels,
    _rows,
    _use_fused,
    _use_native,
    _weight_grads,
)
from rnnkit.fast.pieces import (
    _doubled_n,
    _gru_shortcut,
    _ln_chunks,
    _ln_chunks_backward,
    _ln_chunks_param_grads,
    _loop,
    _one_minus,
    _one_minus_square,
    _split_blend,
    _steps_back,
    _sum_tb,
    _tanh_of_half_,
)


def _gru_reset_before_forward_loop(
    xp: Tensor,
    x_n: Tensor,
    h0: Tensor,
    w_rz: Tensor,
    w_n: Tensor,
    onednn: bool,
    b_rz: Tensor | None,
    b_n: Tensor | None,
    lnw_rz: Tensor | None,
    lnb_rz: Tensor | None,
    lnw_n: Tensor | None,
    lnb_n: Tensor | None,
    alpha: Tensor | None,
    rz: Tensor,
    rh: Tensor,
    n: Tensor,
    hs: Tensor,
    eps: float,
    sig_tanh: bool,
) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor], list[Tensor], list[Tensor]]:
    T, H = xp.shape[0], hs.shape[2]
    pre_rz: list[Tensor] = []
    m_rz: list[Tensor] = []
    s_rz: list[Tensor] = []
    pre_n: list[Tensor] = []
    m_n: list[Tensor] = []
    s_n: list[Tensor] = []
    xp_l, xn_l, rz_l, rh_l, n_l, hs_l = (
        xp.unbind(0),
        x_n.unbind(0),
        rz.unbind(0),
        rh.unbind(0),
        n.unbind(0),
        hs.unbind(0),
    )
    r_l, z_l = rz.narrow(2, 0, H).unbind(0), rz.narrow(2, H, H).unbind(0)
    al: list[Tensor] = alpha.unbind(0) if alpha is not None else []
    h = h0
    for t in range(T):
        x_t = xp_l[t]
        a = _mm(h, w_rz, b_rz, onednn)
        if lnw_rz is not None and lnb_rz is not None:
            pre_rz.append(a)
            a, mean, rstd = _ln_chunks(a, lnw_rz, lnb_rz, 2, eps)
            m_rz.append(mean)
            s_rz.append(rstd)
        torch.add(x_t.narrow(1, 0, 2 * H), a, out=rz_l[t]).sigmoid_()
        torch.mul(r_l[t], h, out=rh_l[t])
        a = _mm(rh_l[t], w_n, b_n, onednn)
        if lnw_n is not None and lnb_n is not None:
            pre_n.append(a)
            a, mean, rstd = _ln_chunks(a, lnw_n, lnb_n, 1, eps)
            m_n.append(mean)
            s_n.append(rstd)
        _tanh_of_half_(torch.add(xn_l[t], a, out=n_l[t]), sig_tanh)
        if len(al) > 0:
            torch.lerp(h, torch.lerp(n_l[t], h, z_l[t]), al[t], out=hs_l[t])
        else:
            torch.lerp(n_l[t], h, z_l[t], out=hs_l[t])
        h = hs_l[t]
    return pre_rz, m_rz, s_rz, pre_n, m_n, s_n


def _gru_reset_before_backward_loop(
    d_rz: Tensor,
    d_n: Tensor,
    r: Tensor,
    z: Tensor,
    gy: Tensor | None,
    w_rz_t: Tensor,
    w_n_t: Tensor,
    onednn: bool,
    lnw_rz: Tensor | None,
    lnw_n: Tensor | None,
    pre_rz: list[Tensor],
    m_rz: list[Tensor],
    s_rz: list[Tensor],
    pre_n: list[Tensor],
    m_n: list[Tensor],
    s_n: list[Tensor],
    alpha: Tensor | None,
) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    """``d_rz (T, B, 2, H)`` and ``d_n (T, B, H)`` hold the coefficients on entry and ∂L/∂(x̂ + â)
    on return (two buffers, so that every step's GEMM operand is contiguous)."""
    T, B, H = d_rz.shape[0], d_rz.shape[1], d_rz.shape[3]
    cr_l, cz_l, dn_l = d_rz.select(2, 0).unbind(0), d_rz.select(2, 1).unbind(0), d_n.unbind(0)
    drz_l = d_rz.view(T, B, 2 * H).unbind(0)
    r_l, z_l = r.unbind(0), z.unbind(0)
    gy_l: list[Tensor] = gy.unbind(0) if gy is not None else []
    al: list[Tensor] = alpha.unbind(0) if alpha is not None else []
    darz_l: list[Tensor] = []
    dan_l: list[Tensor] = []
    gh = gy_l[T - 1] if len(gy_l) > 0 else torch.zeros_like(z_l[0])
    for t in range(T - 1, -1, -1):
        g_new, direct = _split_blend(gh, al, t)
        cz_l[t].mul_(g_new)
        dn = dn_l[t].mul_(g_new)
        if lnw_n is not None:
            dn = _ln_chunks_backward(dn, pre_n[t], m_n[t], s_n[t], lnw_n, 1)
            dan_l.append(dn)
        g_rh = _mm(dn, w_n_t, None, onednn)  # ∂L/∂(r ⊙ h_{t−1})
        cr_l[t].mul_(g_rh)
        drz = drz_l[t]
        if lnw_rz is not None:
            drz = _ln_chunks_backward(drz, pre_rz[t], m_rz[t], s_rz[t], lnw_rz, 2)
            darz_l.append(drz)
        add = _gru_shortcut(gy_l, t, g_new, z_l[t])
        add.addcmul_(g_rh, r_l[t])
        if direct is not None:
            add.add_(direct)
        gh = _mm_add(drz, w_rz_t, None, add, onednn)
    return gh, darz_l, dan_l


class _GRUResetBeforeFunction(torch.autograd.Function):
    r"""The GRU with the reset applied before the product (Cho et al. 2014).

    Forward: â_rz = W_rz h_{t−1} + b_rz (or per-gate LN), r, z = σ(x̂_rz + â_rz),
    â_n = W_n (r ⊙ h_{t−1}) + b_n (or LN), n = tanh(x̂_n + â_n), h̃ = n + z ⊙ (h_{t−1} − n).

    Backward: ∂x̂_n = ∂h̃ ⊙ (1−z)(1−n²), ∂(r ⊙ h) = ∂a_n W_n,
    ∂(x̂_r+â_r) = ∂(r ⊙ h) ⊙ h_{t−1} r(1−r), ∂(x̂_z+â_z) = ∂h̃ ⊙ (h_{t−1} − n) z(1−z),
    ∂h_{t−1} = ∂h̃ ⊙ z + ∂(r ⊙ h) ⊙ r + ∂a_rz W_rz: two recurrent GEMMs per step, each way.
    """

    @staticmethod
    def forward(ctx, xp, h0, w_hh, b_hh, ln_w, ln_b, alpha):
        T, B, G = xp.shape
        H = G // 3
        ctx.native = _use_native(xp, ln_w)
        if ctx.native:
            xp, alpha = xp.contiguous(), _full(alpha, T, B, H)
            rz, rh, n, hs = xp.new_empty(T, B, 2 * H), *(xp.new_empty(T, B, H) for _ in "rnh")
            ctx.fused = _use_fused(xp)
            if ctx.fused:
                h0 = h0.contiguous()
                w_rz, w_n = _panels(w_hh[: 2 * H].t(), 2), _panels(w_hh[2 * H :].t())
                torch.ops.rnnkit_native.gru_rb_fused_forward(
                    xp, h0, w_rz, w_n, b_hh, alpha, rz, rh, n, hs
                )
            else:
                (w_rz, onednn), (w_n, _) = _pack(w_hh[: 2 * H], B), _pack(w_hh[2 * H :], B)
                b_rz, b_n = (None, None) if b_hh is None else (b_hh[: 2 * H], b_hh[2 * H :])
                torch.ops.rnnkit_native.gru_rb_forward_seq(
                    xp, h0, w_rz, w_n, onednn, b_rz, b_n, alpha, rz, rh, n, hs
                )
            ctx.save_for_backward(h0, w_hh, b_hh, ln_w, alpha, rz, rh, n, hs)
            ctx.set_materialize_grads(False)
            return hs
        sig_tanh = xp.device.type == "cpu"
        x_n, w_in, b_in, (lnw, lnb) = _doubled_n(xp, w_hh, b_hh, ln_w, ln_b, sig_tanh)
        (w_rz, onednn), (w_n, _) = _pack(w_in[: 2 * H], B), _pack(w_in[2 * H :], B)
        b_rz, b_n = (None, None) if b_in is None else (b_in[: 2 * H], b_in[2 * H :])
        ln = [None] * 4
        if lnw is not None:
            ln = [lnw[: 2 * H], lnb[: 2 * H], lnw[2 * H :], lnb[2 * H :]]
        rz = xp.new_empty(T, B, 2 * H)
        rh = xp.new_empty(T, B, H)  # r ⊙ h_{t−1}
        n = xp.new_empty(T, B, H)
        hs = xp.new_empty(T, B, H)
        ctx.lists = _loop(_gru_reset_before_forward_loop)(
            xp,
            x_n,
            h0,
            w_rz,
            w_n,
            onednn,
            b_rz,
            b_n,
            *ln,
            alpha,
            rz,
            rh,
            n,
            hs,
            LN_EPS,
            sig_tanh,
        )
        ctx.save_for_backward(h0, w_hh, b_hh, ln_w, alpha, rz, rh, n, hs)
        ctx.set_materialize_grads(False)
        return hs

    @staticmethod
    @once_differentiable
    def backward(ctx, g_hs):
        h0, w_hh, b_hh, ln_w, alpha, rz, rh, n, hs = ctx.saved_tensors
        T, B, H = hs.shape
        if ctx.native:
            # ∂x̂ = ∂â = [∂r, ∂z, ∂n]: one buffer, returned as the input-projection gradient
            dxp = hs.new_empty(T, B, 3 * H)
            d_rz, d_n = dxp[..., : 2 * H], dxp[..., 2 * H :]
            g_w = w_hh.new_empty(3 * H, H)
            bias = b_hh is not None
            if ctx.fused:
                w_n_t, w_rz_t = _panels(w_hh[2 * H :]), _panels(w_hh[: 2 * H])
                gh = torch.ops.rnnkit_native.gru_rb_fused_backward(
                    _rows(g_hs), rz, n, h0, hs, alpha, w_n_t, w_rz_t, dxp
                )
                g_b_rz = _grad_weight_prev(d_rz, h0, hs, out=g_w[: 2 * H], bias=bias)[1]
            else:
                h_prev = torch.cat([h0.unsqueeze(0), hs[:-1]])
                (w_rz_t, onednn), (w_n_t, _) = (
                    _pack(w_hh[: 2 * H].t(), B),
                    _pack(w_hh[2 * H :].t(), B),
                )
                d_rz, d_n = hs.new_empty(T, B, 2 * H), hs.new_empty(T, B, H)
                gh = torch.ops.rnnkit_native.gru_rb_backward_seq(
                    _contiguous(g_hs), rz, n, h_prev, alpha, w_rz_t, w_n_t, onednn, d_rz, d_n
                )
                torch.cat([d_rz, d_n], 2, out=dxp)
                g_b_rz = _weight_grads(
                    d_rz.view(T * B, 2 * H), h_prev.view(T * B, H), bias=bias, out=g_w[: 2 * H]
                )[1]
            g_b_n = _weight_grads(
                d_n.reshape(T * B, H), rh.view(T * B, H), bias=bias, out=g_w[2 * H :]
            )[1]
            g_b = torch.cat([g_b_rz, g_b_n]) if bias else None
            return dxp, gh, g_w, g_b, None, None, None
        pre_rz, m_rz, s_rz, pre_n, m_n, s_n = ctx.lists
        layer_norm = ln_w is not None
        r, z = rz.view(T, B, 2, H).unbind(2)
        h_prev = torch.cat([h0.unsqueeze(0), hs[:-1]])
        # ∂(x̂+â)/∂h̃ for z and n, ∂(x̂_r+â_r)/∂(r ⊙ h) for r; then the gradients, in place
        d_rz, c_n = hs.new_empty(T, B, 2, H), hs.new_empty(T, B, H)
        c_r, c_z = d_rz.unbind(2)
        _one_minus(r, c_r).mul_(h_prev)
        _one_minus(z, c_z).mul_(h_prev - n)
        _one_minus_square(n, c_n).mul_(torch.rsub(z, 1))
        (w_rz_t, onednn), (w_n_t, _) = _pack(w_hh[: 2 * H].t(), B), _pack(w_hh[2 * H :].t(), B)
        lnw_rz, lnw_n = (ln_w[: 2 * H], ln_w[2 * H :]) if layer_norm else (None, None)
        gh, darz_l, dan_l = _loop(_gru_reset_before_backward_loop)(
            d_rz, c_n, r, z, g_hs, w_rz_t, w_n_t, onednn, lnw_rz, lnw_n, *ctx.lists, alpha
        )
        d_rz = d_rz.view(T, B, 2 * H)
        dxp = torch.cat([d_rz, c_n], 2)
        if layer_norm:
            da_rz, da_n = _steps_back(darz_l), _steps_back(dan_l)
        else:
            da_rz, da_n = d_rz, c_n
        da_rz_2d, da_n_2d = da_rz.flatten(0, 1), da_n.flatten(0, 1)
        g_w_rz = _grad_weight(da_rz_2d, h_prev.view(T * B, H))
        g_w_n = _grad_weight(da_n_2d, rh.view(T * B, H))
        g_w = torch.cat([g_w_rz, g_w_n])
        g_b = None
        if b_hh is not None:
            g_b = torch.cat([_sum_tb(da_rz), _sum_tb(da_n)])
        g_ln = (None, None)
        if layer_norm:
            w_rz, b_rz = _ln_chunks_param_grads(d_rz, pre_rz, m_rz, s_rz, 2)
            w_n, b_n = _ln_chunks_param_grads(c_n, pre_n, m_n, s_n, 1)
            g_ln = (torch.cat([w_rz, w_n]), torch.cat([b_rz, b_n]))
        return dxp, gh, g_w, g_b, *g_ln, None
