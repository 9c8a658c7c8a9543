"""The Elman RNN on the fast path: its TorchScript forward / backward loops, the
autograd function over them (native kernels on CPU) and :func:`rnn_sequence`."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from rnnkit.cells import LN_EPS
from rnnkit.fast.gemm import (
    _ROWS_PER_THREAD,
    _full,
    _grad_weight,
    _grad_weight_prev,
    _mm,
    _mm_add,
    _native_ok,
    _pack,
    _panels,
    _rows,
    _use_fused,
)
from rnnkit.fast.pieces import (
    _ln_backward,
    _ln_param_sums,
    _loop,
    _one_minus_square,
    _split_blend,
    _steps_back,
    _sum_tb,
    _tanh_into,
)


# ---------------------------------------------------------------------------------------------
# The time loops (TorchScript-compatible: run as compiled graphs, or as Python)
#
# Shared conventions: ``alpha`` is None or the (T, B, H | 1) blend coefficients; forward loops
# write into the preallocated buffers they are given and return the per-step layer-norm inputs
# and statistics; backward loops turn coefficient buffers into gradients in place, start from
# ∂L/∂s_{T−1} = gy[T−1] and return ∂L/∂s_0's predecessor (the initial state's gradient) and the
# per-step pieces that the batched weight gradients need, in reverse time order.
# ---------------------------------------------------------------------------------------------
def _rnn_forward_loop(
    xp: Tensor,
    h0: Tensor,
    w: Tensor,
    onednn: bool,
    b_hh: Tensor | None,
    ln_w: Tensor | None,
    ln_b: Tensor | None,
    alpha: Tensor | None,
    relu: bool,
    hs: Tensor,
    ht: Tensor,
    eps: float,
    sig_tanh: bool,
) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
    pre: list[Tensor] = []
    means: list[Tensor] = []
    rstds: list[Tensor] = []
    xp_l, hs_l, ht_l = xp.unbind(0), hs.unbind(0), ht.unbind(0)
    al: list[Tensor] = alpha.unbind(0) if alpha is not None else []
    h = h0
    for t in range(len(xp_l)):
        if ln_w is not None and ln_b is not None:
            a = _mm(h, w, b_hh, onednn)
            z, mean, rstd = torch.native_layer_norm(a, [a.shape[1]], ln_w, ln_b, eps)
            z.add_(xp_l[t])
            pre.append(a)
            means.append(mean)
            rstds.append(rstd)
        else:
            z = _mm_add(h, w, b_hh, xp_l[t], onednn)
        if relu:
            torch.clamp(z, 0.0, None, out=ht_l[t])
        else:
            _tanh_into(z, ht_l[t], sig_tanh)
        if len(al) > 0:
            torch.lerp(h, ht_l[t], al[t], out=hs_l[t])
        h = hs_l[t]
    return pre, means, rstds


def _rnn_backward_loop(
    dz: Tensor,
    gy: Tensor | None,
    w_t: Tensor,
    onednn: bool,
    ln_w: Tensor | None,
    pre: list[Tensor],
    means: list[Tensor],
    rstds: list[Tensor],
    alpha: Tensor | None,
) -> tuple[Tensor, list[Tensor], list[Tensor], list[Tensor]]:
    """``dz`` holds g'(z_t) on entry and ∂L/∂z_t on return."""
    T = dz.shape[0]
    dz_l = dz.unbind(0)
    gy_l: list[Tensor] = gy.unbind(0) if gy is not None else []
    al: list[Tensor] = alpha.unbind(0) if alpha is not None else []
    da_l: list[Tensor] = []
    dw_l: list[Tensor] = []
    db_l: list[Tensor] = []
    gh = gy_l[T - 1] if len(gy_l) > 0 else torch.zeros_like(dz_l[0])
    for t in range(T - 1, -1, -1):
        g_new, add = _split_blend(gh, al, t)
        da = dz_l[t].mul_(g_new)
        if ln_w is not None:
            da, dw, db = _ln_backward(da, pre[t], means[t], rstds[t], ln_w)
            da_l.append(da)
            dw_l.append(dw)
            db_l.append(db)
        if t > 0 and len(gy_l) > 0:
            if add is None:
                add = gy_l[t - 1]
            else:
                add.add_(gy_l[t - 1])
        if add is None:
            gh = _mm(da, w_t, None, onednn)
        else:
            gh = _mm_add(da, w_t, None, add, onednn)
    return gh, da_l, dw_l, db_l


# ---------------------------------------------------------------------------------------------
# Elman RNN
# ---------------------------------------------------------------------------------------------
class _RNNFunction(torch.autograd.Function):
    r"""h̃_t = g(x̂_t + â_t), â_t = W_hh h_{t−1} + b_hh (or LN of it), g = tanh or relu.

    Backward per step: ∂z_t = ∂h̃_t ⊙ g'(z_t) (g' = 1 − h̃² or [h̃ > 0], precomputed for all t),
    ∂a_t = ∂z_t (or through LN), ∂h_{t−1} = ∂a_t W_hh (+ what reaches h_{t−1} directly).
    """

    @staticmethod
    def forward(ctx, xp, h0, w_hh, b_hh, ln_w, ln_b, alpha, relu):
        T, B, H = xp.shape
        ctx.relu = relu
        ctx.fused = (
            ln_w is None
            and _native_ok(xp)
            and _use_fused(xp)
            and B >= _ROWS_PER_THREAD * torch.get_num_threads()
        )
        if ctx.fused:  # rnnkit/native/rnn_fused.cpp
            xp, h0, alpha = xp.contiguous(), h0.contiguous(), _full(alpha, T, B, H)
            hs = xp.new_empty(T, B, H)
            ht = hs if alpha is None else xp.new_empty(T, B, H)
            torch.ops.rnnkit_native.rnn_fused_forward(
                xp, h0, _panels(w_hh.t()), b_hh, alpha, relu, hs, ht
            )
            ctx.save_for_backward(h0, w_hh, b_hh, ln_w, alpha, hs, ht)
            ctx.set_materialize_grads(False)
            return hs
        w, onednn = _pack(w_hh, B)
        hs = xp.new_empty(T, B, H)  # states s_t
        ht = hs if alpha is None else xp.new_empty(T, B, H)  # the cell's outputs h̃_t
        ctx.lists = _loop(_rnn_forward_loop)(
            xp,
            h0,
            w,
            onednn,
            b_hh,
            ln_w,
            ln_b,
            alpha,
            relu,
            hs,
            ht,
            LN_EPS,
            xp.device.type == "cpu",
        )
        ctx.save_for_backward(h0, w_hh, b_hh, ln_w, alpha, hs, ht)
        ctx.set_materialize_grads(False)
        return hs

    @staticmethod
    @once_differentiable
    def backward(ctx, g_hs):
        h0, w_hh, b_hh, ln_w, alpha, hs, ht = ctx.saved_tensors
        T, B, H = hs.shape
        if ctx.fused:
            dz = hs.new_empty(T, B, H)
            gh = torch.ops.rnnkit_native.rnn_fused_backward(
                _rows(g_hs), ht, alpha, ctx.relu, _panels(w_hh), dz
            )
            g_w, g_b = _grad_weight_prev(dz, h0, hs, bias=b_hh is not None)
            return dz, gh, g_w, g_b, None, None, None, None
        pre, means, rstds = ctx.lists
        layer_norm = ln_w is not None
        dz = (ht > 0).to(ht.dtype) if ctx.relu else _one_minus_square(ht, hs.new_empty(T, B, H))
        w_t, onednn = _pack(w_hh.t(), B)
        gh, da_l, dw_l, db_l = _loop(_rnn_backward_loop)(
            dz, g_hs, w_t, onednn, ln_w, pre, means, rstds, alpha
        )
        da = _steps_back(da_l) if layer_norm else dz
        h_prev = torch.cat([h0.unsqueeze(0), hs[:-1]])  # (T, B, H)
        g_w = _grad_weight(da.view(T * B, H), h_prev.view(T * B, H))
        g_b = _sum_tb(da) if b_hh is not None else None
        g_ln = _ln_param_sums(dw_l, db_l) if layer_norm else (None, None)
        return dz, gh, g_w, g_b, *g_ln, None, None


def rnn_sequence(
    xp: Tensor,
    h0: Tensor,
    params: dict,
    nonlinearity: str = "tanh",
    layer_norm: bool = False,
    alpha: Tensor | None = None,
) -> Tensor:
    """Elman RNN over time-major ``xp (T, B, H)`` (the input projection, see :class:`RNNCell`).

    Returns every step's state ``(T, B, H)``; ``alpha (T, B, H or 1)`` blends states as in the
    module docstring.
    """
    ln_w = params["ln_hh_weight"] if layer_norm else None
    ln_b = params["ln_hh_bias"] if layer_norm else None
    return _RNNFunction.apply(
        xp, h0, params["weight_hh"], params["bias_hh"], ln_w, ln_b, alpha, nonlinearity == "relu"
    )
