"""The GRU on the fast path, torch's form (reset after the recurrent product): its TorchScript
loops, the autograd function over them (native kernels on CPU) and :func:`gru_sequence`, which
picks this form or :mod:`rnnkit.fast.gru_reset_before`."""

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
)
from rnnkit.fast.gru_reset_before import _GRUResetBeforeFunction
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


def _gru_forward_loop(
    xp: Tensor,
    x_n: Tensor,
    h0: Tensor,
    w: Tensor,
    onednn: bool,
    b_hh: Tensor | None,
    ln_w: Tensor | None,
    ln_b: Tensor | None,
    alpha: Tensor | None,
    rz: Tensor,
    n: Tensor,
    hs: Tensor,
    eps: float,
    sig_tanh: bool,
) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor]]:
    """With ``sig_tanh`` the n block of the recurrent part (W_hh or the LN gain and shift) and
    ``x_n`` arrive doubled (see :func:`_tanh_of_half_`)."""
    T, H = xp.shape[0], hs.shape[2]
    a_n: list[Tensor] = []
    pre: list[Tensor] = []
    means: list[Tensor] = []
    rstds: list[Tensor] = []
    xp_l, rz_l, n_l, hs_l = xp.unbind(0), rz.unbind(0), n.unbind(0), hs.unbind(0)
    xn_l = x_n.unbind(0)
    r_l, z_l = rz.narrow(2, 0, H).unbind(0), rz.narrow(2, H, H).unbind(0)
    al: list[Tensor] = alpha.unbind(0) if alpha is not None else []
    h = h0
    for t in range(T):
        a = _mm(h, w, b_hh, onednn)
        if ln_w is not None and ln_b is not None:
            pre.append(a)
            a, mean, rstd = _ln_chunks(a, ln_w, ln_b, 3, eps)
            means.append(mean)
            rstds.append(rstd)
        x_t = xp_l[t]
        torch.add(x_t.narrow(1, 0, 2 * H), a.narrow(1, 0, 2 * H), out=rz_l[t]).sigmoid_()
        an = a.narrow(1, 2 * H, H)
        a_n.append(an)
        _tanh_of_half_(torch.addcmul(xn_l[t], r_l[t], an, out=n_l[t]), sig_tanh)
        if len(al) > 0:
            torch.lerp(h, torch.lerp(n_l[t], h, z_l[t]), al[t], out=hs_l[t])
        else:
            torch.lerp(n_l[t], h, z_l[t], out=hs_l[t])  # n + z (h − n)
        h = hs_l[t]
    return a_n, pre, means, rstds


def _gru_backward_loop(
    dahat: Tensor,
    z: Tensor,
    gy: Tensor | None,
    w_t: Tensor,
    onednn: bool,
    ln_w: Tensor | None,
    pre: list[Tensor],
    means: list[Tensor],
    rstds: list[Tensor],
    alpha: Tensor | None,
) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    """``dahat (T, B, 3, H)`` holds ∂â/∂h̃ on entry and ∂L/∂â on return; also returns ∂L/∂h̃."""
    T, B, H = dahat.shape[0], dahat.shape[1], dahat.shape[3]
    dahat_l, d2_l = dahat.unbind(0), dahat.view(T, B, 3 * H).unbind(0)
    z_l = z.unbind(0)
    gy_l: list[Tensor] = gy.unbind(0) if gy is not None else []
    al: list[Tensor] = alpha.unbind(0) if alpha is not None else []
    g_news: list[Tensor] = []
    da_l: list[Tensor] = []
    gh = gy_l[T - 1] if len(gy_l) > 0 else torch.zeros_like(z_l[0])
    for t in range(T - 1, -1, -1):
        g_new, direct = _split_blend(gh, al, t)
        g_news.append(g_new)
        dahat_l[t].mul_(g_new.unsqueeze(1))
        da = d2_l[t]
        if ln_w is not None:
            da = _ln_chunks_backward(da, pre[t], means[t], rstds[t], ln_w, 3)
            da_l.append(da)
        add = _gru_shortcut(gy_l, t, g_new, z_l[t])
        if direct is not None:
            add.add_(direct)
        gh = _mm_add(da, w_t, None, add, onednn)
    return gh, g_news, da_l


# ---------------------------------------------------------------------------------------------
# GRU
# ---------------------------------------------------------------------------------------------
class _GRUFunction(torch.autograd.Function):
    r"""The GRU of :class:`~rnnkit.cells.GRUCell`, reset after the product (torch's form).

    Forward: â = W_hh h_{t−1} + b_hh (or per-gate LN), r = σ(x̂_r + â_r), z = σ(x̂_z + â_z),
    n = tanh(x̂_n + r ⊙ â_n), h̃ = n + z ⊙ (h_{t−1} − n).

    Backward, coefficients precomputed for all t: ∂(x̂_z+â_z) = ∂h̃ ⊙ (h_{t−1} − n) z(1−z);
    ∂x̂_n = ∂h̃ ⊙ (1−z)(1−n²) =: ∂h̃ ⊙ q_n;  ∂â_n = ∂h̃ ⊙ q_n r;
    ∂(x̂_r+â_r) = ∂h̃ ⊙ q_n â_n r(1−r);  ∂h_{t−1} = ∂h̃ ⊙ z + ∂a W_hh.
    """

    @staticmethod
    def forward(ctx, xp, h0, w_hh, b_hh, ln_w, ln_b, alpha):
        T, B, G = xp.shape
        H = G // 3
        ctx.native = _use_native(xp, ln_w)
        if ctx.native:
            xp, alpha = xp.contiguous(), _full(alpha, T, B, H)
            rz, n, a_n, hs = xp.new_empty(T, B, 2 * H), *(xp.new_empty(T, B, H) for _ in "nah")
            ctx.fused = _use_fused(xp)
            if ctx.fused:
                h0 = h0.contiguous()
                torch.ops.rnnkit_native.gru_fused_forward(
                    xp, h0, _panels(w_hh.t(), 3), b_hh, alpha, rz, n, a_n, hs
                )
            else:
                w, onednn = _pack(w_hh, B)
                torch.ops.rnnkit_native.gru_forward_seq(
                    xp, h0, w, onednn, b_hh, alpha, rz, n, a_n, hs
                )
            ctx.save_for_backward(h0, w_hh, b_hh, ln_w, alpha, rz, n, a_n, hs)
            ctx.set_materialize_grads(False)
            return hs
        sig_tanh = xp.device.type == "cpu"
        x_n, w_in, b_in, ln_in = _doubled_n(xp, w_hh, b_hh, ln_w, ln_b, sig_tanh)
        w, onednn = _pack(w_in, B)
        rz = xp.new_empty(T, B, 2 * H)
        n = xp.new_empty(T, B, H)
        hs = xp.new_empty(T, B, H)
        a_n, *ctx.lists = _loop(_gru_forward_loop)(
            xp, x_n, h0, w, onednn, b_in, *ln_in, alpha, rz, n, hs, LN_EPS, sig_tanh
        )
        a_n = torch.stack(a_n)  # â_n, the (normalised) recurrent part of n
        if sig_tanh:
            a_n.mul_(0.5)
        ctx.save_for_backward(h0, w_hh, b_hh, ln_w, alpha, rz, n, a_n, hs)
        ctx.set_materialize_grads(False)
        return hs

    @staticmethod
    @once_differentiable
    def backward(ctx, g_hs):
        h0, w_hh, b_hh, ln_w, alpha, rz, n, a_n, hs = ctx.saved_tensors
        T, B, H = hs.shape
        if ctx.native:
            da, dxn = hs.new_empty(T, B, 3 * H), hs.new_empty(T, B, H)
            if ctx.fused:
                # returns with da = ∂x̂ = [∂â_r, ∂â_z, ∂x̂_n] and dxn = ∂â_n (swapped in the loop)
                gh = torch.ops.rnnkit_native.gru_fused_backward(
                    _rows(g_hs), rz, n, a_n, h0, hs, alpha, _panels(w_hh), da, dxn
                )
                g_w, g_b = _grad_weight_prev(da[..., : 2 * H], h0, hs, None, b_hh is not None, dxn)
                return da, gh, g_w, g_b, None, None, None
            h_prev = torch.cat([h0.unsqueeze(0), hs[:-1]])
            w_t, onednn = _pack(w_hh.t(), B)
            gh = torch.ops.rnnkit_native.gru_backward_seq(
                _contiguous(g_hs), rz, n, a_n, h_prev, alpha, w_t, onednn, da, dxn
            )
            g_w = _grad_weight(da.view(T * B, 3 * H), h_prev.view(T * B, H))
            g_b = _sum_tb(da) if b_hh is not None else None
            da[..., 2 * H :].copy_(dxn)  # ∂x̂ = ∂â for r and z; ∂x̂_n has no factor r
            return da, gh, g_w, g_b, None, None, None
        pre, means, rstds = ctx.lists
        layer_norm = ln_w is not None
        r, z = rz.view(T, B, 2, H).unbind(2)
        h_prev = torch.cat([h0.unsqueeze(0), hs[:-1]])
        # ∂â_{r,z,n}/∂h̃ for all t, turned into ∂â in place, step by step
        dahat = hs.new_empty(T, B, 3, H)
        c_r, c_z, c_n = dahat.unbind(2)
        q_n = torch.rsub(z, 1).mul_(_one_minus_square(n, c_n))  # (1 − z)(1 − n²)
        _one_minus(r, c_r).mul_(a_n).mul_(q_n)
        _one_minus(z, c_z).mul_(h_prev - n)
        torch.mul(q_n, r, out=c_n)

        w_t, onednn = _pack(w_hh.t(), B)
        gh, g_news, da_l = _loop(_gru_backward_loop)(
            dahat, z, g_hs, w_t, onednn, ln_w, pre, means, rstds, alpha
        )
        dahat = dahat.view(T, B, 3 * H)
        da = _steps_back(da_l) if layer_norm else dahat
        g_w = _grad_weight(da.view(T * B, 3 * H), h_prev.view(T * B, H))
        g_b = _sum_tb(da) if b_hh is not None else None
        g_ln = (None, None)
        if layer_norm:
            g_ln = _ln_chunks_param_grads(dahat, pre, means, rstds, 3)
        # ∂x̂ equals ∂â for r and z; for n it is ∂h̃ ⊙ q_n (no factor r): reuse the buffer
        torch.mul(q_n, _steps_back(g_news), out=c_n)
        return dahat, gh, g_w, g_b, *g_ln, None


def gru_sequence(
    xp: Tensor,
    h0: Tensor,
    params: dict,
    reset_after: bool = True,
    layer_norm: bool = False,
    alpha: Tensor | None = None,
) -> Tensor:
    """GRU over time-major ``xp (T, B, 3H)`` (the input projection, see :class:`GRUCell`).

    Returns every step's state ``(T, B, H)``; ``alpha`` blends states as in the module docstring.
    """
    ln_w = params["ln_hh_weight"] if layer_norm else None
    ln_b = params["ln_hh_bias"] if layer_norm else None
    fn = _GRUFunction if reset_after else _GRUResetBeforeFunction
    return fn.apply(xp, h0, params["weight_hh"], params["bias_hh"], ln_w, ln_b, alpha)
