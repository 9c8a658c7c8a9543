"""The fast path's matrix products: oneDNN GEMMs on fp32 CPU (weights reordered once per
sequence), the batched weight gradients (rnnkit's native kernel or ``torch.mm``), the packed
panels of the fused kernels, :func:`linear` with its hand-written backward, and the checks of
where the native / fused kernels run."""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from rnnkit.fast import switches

logger = logging.getLogger(__name__)


try:
    _LP = torch.ops.mkldnn._linear_pointwise.default
    _REORDER = torch.ops.mkldnn._reorder_linear_weight
    _HAVE_ONEDNN = torch.backends.mkldnn.is_available()
except (AttributeError, RuntimeError):  # pragma: no cover - torch built without oneDNN
    _HAVE_ONEDNN = False


# ---------------------------------------------------------------------------------------------
# GEMMs
# ---------------------------------------------------------------------------------------------
_ONEDNN_WORKS: bool | None = None
# oneDNN's linear reads a transposed weight view in place (∂x = ∂y W with W (N, K) passed as the
# (K, N) view Wᵀ): measured 1–2 ms faster than copying Wᵀ first for a (4096 × 1536)·(1536 × 512)
# product, as the copy is skipped and oneDNN prefers that layout for this shape.
_ONEDNN_STRIDED = False


def _onednn_works() -> bool:
    """The oneDNN ops used here are torch-internal: check once that they compute a product
    (and whether :data:`_ONEDNN_STRIDED` holds)."""
    global _ONEDNN_WORKS, _ONEDNN_STRIDED
    if _ONEDNN_WORKS is None:
        try:
            x, w = torch.ones(2, 3), torch.ones(4, 3)
            y = _LP(x, _REORDER(w, 2), None, "none", [], "")
            _ONEDNN_WORKS = bool(torch.equal(y, torch.full((2, 4), 3.0)))
        except Exception as err:  # a torch without these ops: torch.mm everywhere
            logger.info("rnnkit.fast: oneDNN GEMMs unavailable (%s); using torch.mm", err)
            _ONEDNN_WORKS = False
        if _ONEDNN_WORKS:
            try:
                a, b = torch.arange(6.0).view(2, 3), torch.arange(12.0).view(3, 4)
                _ONEDNN_STRIDED = bool(torch.equal(_LP(a, b.t(), None, "none", [], ""), a @ b))
            except Exception:  # a build that wants contiguous weights
                _ONEDNN_STRIDED = False
    return _ONEDNN_WORKS


def _onednn(t: Tensor) -> bool:
    return (
        switches.GEMM_BACKEND == "auto"
        and _HAVE_ONEDNN
        and t.device.type == "cpu"
        and t.dtype == torch.float32
        and _onednn_works()
    )


# A oneDNN call costs ~15 µs before any arithmetic, ``torch.addmm`` ~5 µs: below about 2²⁰
# multiply-adds per product (B·K·N; e.g. B=32, H=128 Elman RNN) ``torch.addmm`` wins (measured).
_ONEDNN_MIN_MACS = 1 << 20


def _pack(weight: Tensor, batch: int) -> tuple[Tensor, bool]:
    """W (N, K) made ready for :func:`_mm`: oneDNN's blocked layout for ``batch`` rows, or Wᵀ."""
    if _onednn(weight) and batch * weight.numel() >= _ONEDNN_MIN_MACS:
        return _REORDER(weight.contiguous(), batch), True
    return weight.t(), False


def _mm(x: Tensor, w: Tensor, bias: Tensor | None, onednn: bool) -> Tensor:
    """x Wᵀ (+ b), ``w`` from :func:`_pack`."""
    if onednn:
        return torch.ops.mkldnn._linear_pointwise(x, w, bias, "none", [], "")
    if bias is None:
        return torch.mm(x, w)
    return torch.addmm(bias, x, w)


def _mm_add(x: Tensor, w: Tensor, bias: Tensor | None, add: Tensor, onednn: bool) -> Tensor:
    """x Wᵀ (+ b) + ``add`` (a separate ``add_`` measured faster than oneDNN's binary post-op)."""
    if onednn:
        return torch.ops.mkldnn._linear_pointwise(x, w, bias, "none", [], "").add_(add)
    out = torch.addmm(add, x, w)
    if bias is not None:
        out.add_(bias)
    return out


_WGRAD_ROWS = 8  # result rows per tile of weight_grad.cpp (dy's width when dy2 follows)


def _native_wgrad(dy: Tensor) -> bool:
    """:func:`_weight_grads` runs on rnnkit's kernel for this ∂y (see :data:`WGRAD_BACKEND`)."""
    return (
        switches.WGRAD_BACKEND == "native"
        and dy.dtype == torch.float32
        and _native_ok(dy)
        and _use_fused(dy)
    )


def _rows(t: Tensor | None) -> Tensor | None:
    """``t`` with contiguous rows (last dimension) and any other strides, copied only when its rows
    are not: how the native kernels read their operands (a batch-first output's gradient, a
    transposed view, is read in place)."""
    return t if t is None or t.stride(-1) == 1 else t.contiguous()


def _weight_grads(
    dy: Tensor,
    x: Tensor,
    x0: Tensor | None = None,
    bias: bool = False,
    out: Tensor | None = None,
    dy2: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """``(Σ_k ∂y_kᵀ x̃_k, Σ_k ∂y_k)`` over the rows k of ``dy (R, M)``: a weight gradient as one
    (M × R)·(R × N) product, and the bias gradient when ``bias`` (else None).

    x̃ is ``x`` or, with ``x0``, the rows of x0 followed by the first R − len(x0) rows of ``x``:
    the previous states h_{−1}, h_0, …, h_{T−2} without a concatenated copy. With ``dy2 (R, M2)``
    ∂y is ``[dy dy2]`` (columns side by side) without a concatenated copy. ``out`` (optional)
    receives the product.
    """
    M = dy.shape[1] + (0 if dy2 is None else dy2.shape[1])
    if out is None:
        out = dy.new_empty(M, x.shape[1])
    if _native_wgrad(dy) and (dy2 is None or dy.shape[1] % _WGRAD_ROWS == 0):
        dy, x, x0, dy2 = _rows(dy), _rows(x), _rows(x0), _rows(dy2)  # read in place
        db = torch.ops.rnnkit_native.weight_grad(dy, x, x0, out, bias, dy2)
        return out, (db if bias else None)
    if dy2 is not None:
        M1 = dy.shape[1]
        db1 = _weight_grads(dy, x, x0, bias, out[:M1])[1]
        db2 = _weight_grads(dy2, x, x0, bias, out[M1:])[1]
        return out, (torch.cat([db1, db2]) if bias else None)
    head, rest = (dy, None) if x0 is None else (dy[: x0.shape[0]], dy[x0.shape[0] :])
    first = x if x0 is None else x0
    torch.mm(head.t(), first, out=out)
    if rest is not None and rest.shape[0] > 0:
        out.addmm_(rest.t(), x[: rest.shape[0]])
    return out, (dy.sum(0) if bias else None)


def _grad_weight(dy: Tensor, x: Tensor) -> Tensor:
    """Σ over rows of dyᵀ x: the weight gradient of y = x Wᵀ as one GEMM, (N × R)·(R × K)."""
    return _weight_grads(dy, x)[0]


_FUSED_DTYPES: dict[torch.dtype, bool] = {}


def _use_fused(xp: Tensor) -> bool:
    """The fused sequences' tile GEMM exists for ``xp``'s dtype (call once the native kernels
    are known to be built: :func:`_native_ok`)."""
    if not switches.FUSED:
        return False
    if xp.dtype not in _FUSED_DTYPES:
        probe = torch.zeros(1, dtype=xp.dtype)
        _FUSED_DTYPES[xp.dtype] = bool(torch.ops.rnnkit_native.tile_gemm_supported(probe))
    return _FUSED_DTYPES[xp.dtype]


# The fused LSTM splits the batch between threads (layer norm needs whole rows): it runs where
# every thread gets at least this many rows (kMinRows in rnnkit/native/tile_gemm.h).
_ROWS_PER_THREAD = 8

PANEL = 16  # hidden units per packed panel of the fused kernels (one AVX-512 vector of floats)


def _panels(b: Tensor, gates: int = 1) -> Tensor:
    """The right operand ``b (K, gates·H)`` of a GEMM packed for the fused kernels' tile GEMM.

    Result ``(G, K, gates·16)`` with G = ⌈H / 16⌉: panel g holds units 16g … 16g + 15 of every gate
    (gates side by side, so one tile holds all gates of its units), units past H zero.
    """
    K, N = b.shape
    H = N // gates
    G = -(-H // PANEL)
    p = b.reshape(K, gates, H)
    if G * PANEL != H:
        p = F.pad(p, (0, G * PANEL - H))
    return p.view(K, gates, G, PANEL).permute(2, 0, 1, 3).contiguous().view(G, K, gates * PANEL)


def _sum_prev(d: Tensor, s0: Tensor, ss: Tensor) -> Tensor:
    """Σ over t and rows of d_t ⊙ s_{t−1} for ``d (T, B, H)``, s_{−1} = ``s0``, states ``ss``."""
    out = (d[0] * s0).sum(0)
    if d.shape[0] > 1:
        out += (d[1:] * ss[:-1]).sum((0, 1))
    return out


def _grad_weight_prev(
    dy: Tensor,
    h0: Tensor,
    hs: Tensor,
    out: Tensor | None = None,
    bias: bool = False,
    dy2: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """``(Σ_t ∂y_tᵀ h_{t−1}, Σ_t Σ_b ∂y_t)`` (the second only with ``bias``) for ``dy (T, B, N)``
    (with ``dy2 (T, B, N2)``: ∂y = [dy dy2]), h_{−1} = ``h0``, without concatenating h0 and hs.

    ``dy`` may be a slice of the last dimension of a larger buffer (its rows are not copied).
    """
    T, B, N = dy.shape
    rest = None if dy2 is None else dy2.reshape(T * B, -1)
    return _weight_grads(dy.reshape(T * B, N), hs.reshape(T * B, -1), h0, bias, out, rest)


class _Linear(torch.autograd.Function):
    """y = x Wᵀ + b with the forward and ∂x = ∂y W on oneDNN, ∂W = ∂yᵀ x (and ∂b in the same pass)
    by :func:`_weight_grads`."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _LP(x, weight.contiguous(), bias, "none", [], "")

    @staticmethod
    @once_differentiable
    def backward(ctx, dy: Tensor):
        x, weight = ctx.saved_tensors
        dy = dy.contiguous()
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            w_t = weight.t() if _ONEDNN_STRIDED else weight.t().contiguous()
            dx = _LP(dy, w_t, None, "none", [], "")
        bias = ctx.has_bias and ctx.needs_input_grad[2]
        if ctx.needs_input_grad[1]:
            dw, db = _weight_grads(dy, x, bias=bias)
        elif bias:
            db = dy.sum(0)
        return dx, dw, db


def linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``F.linear`` over any leading shape, with the GEMMs of :class:`_Linear` on fp32 CPU."""
    if not _onednn(weight):
        return F.linear(x, weight, bias)
    lead = x.shape[:-1]
    y = _Linear.apply(x.reshape(-1, x.shape[-1]), weight, bias)
    return y.view(*lead, weight.shape[0])


def _native_ok(xp: Tensor) -> bool:
    """Native kernels: CPU, float32/float64, built (tried once per process)."""
    if (
        not switches.NATIVE
        or xp.device.type != "cpu"
        or xp.dtype not in (torch.float32, torch.float64)
    ):
        return False
    from rnnkit import native

    return native.available()


def _use_native(xp: Tensor, ln_w: Tensor | None) -> bool:
    """The GRU kernels cover every option but layer norm."""
    return ln_w is None and _native_ok(xp)


def _contiguous(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.contiguous()


def _full(alpha: Tensor | None, T: int, B: int, H: int) -> Tensor | None:
    """α as a dense (T, B, H) tensor (it may arrive as (T, B, 1) for lengths)."""
    return None if alpha is None else alpha.expand(T, B, H).contiguous()
