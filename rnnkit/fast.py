r"""Fast path of the recurrent layers: hand-written BPTT for the cells torch's fused kernels lack.

This module owns the time loop for layer-norm and peephole LSTMs, both GRU forms, the Elman RNN
(tanh, ReLU / identity init) and the extras zoneout, ``lengths`` and weight drop, as one
``torch.autograd.Function`` per cell family. Autograd would record every step's ops and replay them
one by one; here

* the forward loop runs without autograd and keeps only what the backward needs (activated gates,
  cell states, layer-norm statistics), written into preallocated ``(T, B, ·)`` buffers;
* everything off the recurrent chain is batched over all T steps: the gate derivatives
  σ' = σ(1 − σ), tanh' = 1 − tanh² and their products are computed as ``(T, B, ·)`` tensors
  before the backward loop, so each backward step is a handful of elementwise ops plus one
  recurrent GEMM  ∂L/∂h_{t−1} = ∂L/∂a_t · W_hh  (a_t = W_hh h_{t−1} + b_hh);
* the weight gradients are single large GEMMs over every step,
  ∂L/∂W_hh = Σ_t ∂a_tᵀ h_{t−1} = (T·B × G)ᵀ · (T·B × H), and likewise for the input projection
  W_ih x_t + b_ih, which is hoisted out of the loop (one GEMM forward, two backward);
* on fp32 CPU the step and projection GEMMs run on oneDNN (``torch.ops.mkldnn._linear_pointwise``,
  the recurrent weight reordered once per sequence into oneDNN's blocked layout), about twice the
  rate of ``torch.mm`` where MKL takes a slow path (AMD CPUs); the weight gradients, long
  reductions over T·B rows, run on rnnkit's own kernel where its tile GEMM is compiled
  (``rnnkit/native/weight_grad.cpp``, 3–15% faster than ``torch.mm`` here and summing the bias
  gradient in the same pass), else on ``torch.mm``, which reads the transposed operand in place;
  float64 and CUDA use ``torch.mm``;
* the time loops themselves are TorchScript functions (Python fallback where TorchScript is
  unavailable), which takes the Python interpreter out of the per-step overhead;
* on CPU the GRU, LSTM and Elman RNN run in rnnkit's native kernels (:mod:`rnnkit.native`, C++
  built on first use where a compiler is present; :data:`NATIVE`). Where their tile GEMM is
  compiled (AVX-512; :data:`FUSED`) a whole sequence is one call: one OpenMP team whose threads
  each run a share of the batch rows (or of the hidden units) through every step, the recurrent
  product computed by rnnkit's own register-tiled GEMM on weights packed into 16-unit panels
  (:func:`_panels`) and each tile's gate arithmetic done while it is in cache — a oneDNN call
  through torch costs ~15 µs per step before any arithmetic. Elsewhere the C++ loop calls the
  GEMMs above each step and does the gate arithmetic in one vectorised pass per step, where torch
  ops need five to fifteen passes. The TorchScript loops below remain the fallback and the path
  on GPUs;
* on CPU, tanh is computed as 2σ(2x) − 1: torch's CPU tanh measured ~9× slower per element than
  its sigmoid, and the factor 2 is folded into the weights: the g rows of the LSTM's W_hh (or of
  its LN gain and shift), so a single sigmoid over all four gate blocks yields i, f, o and
  σ(2 z_g), and the n rows of the GRU's (with x̂_n doubled once for the whole sequence).

State updates with ``lengths`` and zoneout share one form: with a per-step, per-unit coefficient
α_t the state is s_t = s_{t−1} + α_t ⊙ (s̃_t − s_{t−1}) (``torch.lerp``), where s̃_t is the cell's
new state; α = m_t (1 if step t is inside the sequence, else 0) for lengths, α = m_t (1 − d_t) for
zoneout in training (d ~ Bernoulli(p), one mask per step and state, drawn in the reference loop's
order so both paths see the same masks) and α = m_t (1 − p) in evaluation. The output is
y_t = m_t ⊙ s^h_t. Backward: ∂L/∂s̃_t = α_t ⊙ ∂L/∂s_t and s_{t−1} receives (1 − α_t) ⊙ ∂L/∂s_t
besides its path through the cell.

:func:`run_direction` is the drop-in for :func:`rnnkit.layers.run_direction`; the layers call it
when :func:`supports` says the cell is covered. Backward through a fast-path forward works once
per graph or repeatedly with ``retain_graph=True``, but not twice-differentiably.
"""

from __future__ import annotations

import logging
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from rnnkit.cells import LN_EPS, GRUCell, LSTMCell, RecurrentCell, RNNCell, layer_norm_chunks
from rnnkit.state import LSTMState

__all__ = [
    "GEMM_BACKEND",
    "WGRAD_BACKEND",
    "NATIVE",
    "FUSED",
    "SCRIPT",
    "supports",
    "prefers_fast",
    "layer_supported",
    "run_direction",
    "rnn_sequence",
    "lstm_sequence",
    "gru_sequence",
    "linear",
]

logger = logging.getLogger(__name__)

# "auto": oneDNN for float32 on CPU where available, torch.mm otherwise; "torch": always torch.mm.
GEMM_BACKEND = "auto"
# Compile the time loops with TorchScript (the same functions run as Python when False).
SCRIPT = True
# On CPU, do each step's gate arithmetic in rnnkit's native kernels (rnnkit/native, built on first
# use) where they could be built; False = the torch-op loops below.
NATIVE = True

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
        GEMM_BACKEND == "auto"
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


# Weight gradients: "native" = rnnkit/native/weight_grad.cpp for float32 where the tile GEMM is
# compiled (AVX-512), torch.mm elsewhere; "mm" = always ``torch.mm`` on the transposed view (the
# BLAS reads it in place).
WGRAD_BACKEND = "native"


_WGRAD_ROWS = 8  # result rows per tile of weight_grad.cpp (dy's width when dy2 follows)


def _native_wgrad(dy: Tensor) -> bool:
    """:func:`_weight_grads` runs on rnnkit's kernel for this ∂y (see :data:`WGRAD_BACKEND`)."""
    return (
        WGRAD_BACKEND == "native"
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


# Run the GRU, LSTM and Elman RNN on the fused sequences of rnnkit/native (gru_fused.cpp,
# lstm_steps.cpp, rnn_fused.cpp: their own tile GEMM, one thread team for the whole sequence)
# where that GEMM is compiled for the dtype: float32 needs AVX-512, float64 always runs (the
# tests). False = the step-by-step loops around oneDNN / torch.mm.
FUSED = True
_FUSED_DTYPES: dict[torch.dtype, bool] = {}


def _use_fused(xp: Tensor) -> bool:
    """The fused sequences' tile GEMM exists for ``xp``'s dtype (call once the native kernels
    are known to be built: :func:`_native_ok`)."""
    if not FUSED:
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


# ---------------------------------------------------------------------------------------------
# Layer norm pieces (TorchScript-compatible)
# ---------------------------------------------------------------------------------------------
def _ln_chunks(
    a: Tensor, weight: Tensor, bias: Tensor, chunks: int, eps: float
) -> tuple[Tensor, Tensor, Tensor]:
    """LN of each of ``chunks`` blocks of ``a (B, N)`` (as :func:`layer_norm_chunks`), with stats."""
    if chunks == 1:
        return torch.native_layer_norm(a, [a.shape[1]], weight, bias, eps)
    B, size = a.shape[0], a.shape[1] // chunks
    normed, mean, rstd = torch.native_layer_norm(a.view(B, chunks, size), [size], None, None, eps)
    out = torch.addcmul(bias.view(chunks, size), normed, weight.view(chunks, size))
    return out.view(B, chunks * size), mean, rstd


def _ln_backward(
    dy: Tensor, a: Tensor, mean: Tensor, rstd: Tensor, weight: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """One step of LN's backward, y = γ ⊙ (a − μ)/σ + β:

    ∂a = σ⁻¹ (ĝ − mean(ĝ) − â mean(ĝ ⊙ â)) with ĝ = γ ⊙ ∂y and â = (a − μ)/σ;
    ∂γ = Σ_b ∂y ⊙ â and ∂β = Σ_b ∂y, this step's share (summed over steps afterwards).
    """
    # with ∂β requested the op wants a bias tensor for its shape; it never reads the values
    return torch.ops.aten.native_layer_norm_backward(
        dy, a, [a.shape[1]], mean, rstd, weight, weight, [True, True, True]
    )


def _ln_chunks_backward(
    dy: Tensor, a: Tensor, mean: Tensor, rstd: Tensor, weight: Tensor, chunks: int
) -> Tensor:
    """∂a of per-block LN (one γ/β per block of ``a (B, N)``): the formula above, block by block."""
    B, size = a.shape[0], a.shape[1] // chunks
    g = (dy * weight).view(B, chunks, size)
    out = torch.ops.aten.native_layer_norm_backward(
        g, a.view(B, chunks, size), [size], mean, rstd, None, None, [True, False, False]
    )[0]
    return out.view(B, chunks * size)


def _ln_chunks_param_grads(dy: Tensor, pre: list, mean: list, rstd: list, chunks: int):
    """(∂γ, ∂β) = (Σ ∂y ⊙ â, Σ ∂y) of per-block LN over all steps and sequences at once."""
    T, B, N = dy.shape
    a = torch.stack(pre).view(T, B, chunks, -1)
    mean, rstd = (torch.stack(x).view(T, B, chunks, 1) for x in (mean, rstd))
    normed = (a - mean).mul_(rstd).view(T, B, N)
    return (normed.mul_(dy)).sum((0, 1)), dy.sum((0, 1))


def _sum_tb(x: Tensor) -> Tensor:
    return x.sum((0, 1))


def _one_minus(x: Tensor, out: Tensor) -> Tensor:
    """out = x (1 − x), the derivative of the sigmoid that produced x, with no temporaries."""
    torch.mul(x, x, out=out)
    return torch.sub(x, out, out=out)


def _one_minus_square(x: Tensor, out: Tensor) -> Tensor:
    """out = 1 − x², the derivative of the tanh that produced x."""
    torch.mul(x, x, out=out)
    return out.neg_().add_(1)


def _tanh_of_half_(u: Tensor, via_sigmoid: bool) -> Tensor:
    """tanh(u / 2) in place where ``via_sigmoid`` (the caller doubled the pre-activation v = u / 2
    upstream, in its weights: tanh(v) = 2σ(2v) − 1 then costs one op less), else tanh(u)."""
    if via_sigmoid:
        return u.sigmoid_().mul_(2.0).sub_(1.0)
    return u.tanh_()


def _tanh_into(x: Tensor, out: Tensor, via_sigmoid: bool) -> Tensor:
    """out = tanh(x); on CPU as 2σ(2x) − 1, since torch's CPU tanh measured ~9× slower per element
    than its sigmoid here (absolute error stays at the level of one rounding of 1)."""
    if via_sigmoid:
        return torch.mul(x, 2.0, out=out).sigmoid_().mul_(2.0).sub_(1.0)
    return torch.tanh(x, out=out)


def _ln_param_sums(dw: list, db: list) -> tuple[Tensor, Tensor]:
    return torch.stack(dw).sum(0), torch.stack(db).sum(0)


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
        g_new = gh
        add: Tensor | None = None
        if len(al) > 0:
            g_new = gh * al[t]
            add = gh - g_new  # what reaches s_{t−1} around the cell
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
        gh_new, gc_new = gh, gc
        add: Tensor | None = None
        dir_c: Tensor | None = None
        if len(ah_l) > 0:
            gh_new = gh * ah_l[t]
            add = gh - gh_new
            gc_new = gc * ac_l[t]
            dir_c = gc - gc_new
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
        g_new = gh
        direct: Tensor | None = None
        if len(al) > 0:
            g_new = gh * al[t]
            direct = gh - g_new
        g_news.append(g_new)
        dahat_l[t].mul_(g_new.unsqueeze(1))
        da = d2_l[t]
        if ln_w is not None:
            da = _ln_chunks_backward(da, pre[t], means[t], rstds[t], ln_w, 3)
            da_l.append(da)
        if t > 0 and len(gy_l) > 0:
            add = torch.addcmul(gy_l[t - 1], g_new, z_l[t])
        else:
            add = g_new * z_l[t]
        if direct is not None:
            add.add_(direct)
        gh = _mm_add(da, w_t, None, add, onednn)
    return gh, g_news, da_l


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
        g_new = gh
        direct: Tensor | None = None
        if len(al) > 0:
            g_new = gh * al[t]
            direct = gh - g_new
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
        if t > 0 and len(gy_l) > 0:
            add = torch.addcmul(gy_l[t - 1], g_new, z_l[t])
        else:
            add = torch.mul(g_new, z_l[t])
        add.addcmul_(g_rh, r_l[t])
        if direct is not None:
            add.add_(direct)
        gh = _mm_add(drz, w_rz_t, None, add, onednn)
    return gh, darz_l, dan_l


_COMPILED: dict = {}


def _loop(fn):
    """``fn`` compiled with TorchScript once (when :data:`SCRIPT`), else ``fn`` itself."""
    if not SCRIPT:
        return fn
    compiled = _COMPILED.get(fn)
    if compiled is None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch.jit.script is deprecated upstream
                compiled = torch.jit.script(fn)
        except Exception as err:  # TorchScript missing or unable: run the Python loop
            logger.info("rnnkit.fast: running %s as Python (%s)", fn.__name__, err)
            compiled = fn
        _COMPILED[fn] = compiled
    return compiled


def _steps_back(items: list) -> Tensor:
    """Stack per-step tensors collected in reverse time order into time order (T, ...)."""
    return torch.stack(items[::-1])


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


# ---------------------------------------------------------------------------------------------
# GRU
# ---------------------------------------------------------------------------------------------
def _doubled_n(xp, w_hh, b_hh, ln_w, ln_b, double: bool):
    """The GRU's candidate inputs for :func:`_tanh_of_half_`: with ``double``, x̂_n and the
    recurrent n block (the rows of W_hh and b_hh, or the LN gain and shift) times 2.

    Returns ``(x_n, W_hh, b_hh, (ln_w, ln_b))`` for the forward loop; the backward keeps the
    originals."""
    H = xp.shape[2] // 3
    x_n = xp[..., 2 * H :]
    if not double:
        return x_n, w_hh, b_hh, (ln_w, ln_b)
    scale = xp.new_ones(3, 1)
    scale[2] = 2.0
    scale = scale.expand(3, H).reshape(3 * H)
    if ln_w is not None:
        return x_n * 2.0, w_hh, b_hh, (ln_w * scale, ln_b * scale)
    b = b_hh * scale if b_hh is not None else None
    return x_n * 2.0, w_hh * scale.unsqueeze(1), b, (ln_w, ln_b)


def _native_ok(xp: Tensor) -> bool:
    """Native kernels: CPU, float32/float64, built (tried once per process)."""
    if not NATIVE or xp.device.type != "cpu" or xp.dtype not in (torch.float32, torch.float64):
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


# ---------------------------------------------------------------------------------------------
# The layer-level entry point
# ---------------------------------------------------------------------------------------------
def supports(cell: RecurrentCell) -> bool:
    """True when the fast path computes ``cell`` (rnnkit's own cells, any of their options)."""
    return type(cell) in (RNNCell, LSTMCell, GRUCell)


def prefers_fast(mode: str, cell: RecurrentCell, device: torch.device) -> bool:
    """True where the fast path beats torch's fused kernel (measured: benchmarks/cells.py).

    On CPU torch's GRU and Elman RNN are native per-step loops under autograd (only the LSTM
    has a oneDNN kernel), so the fast path wins for them; on CUDA cuDNN wins everywhere.
    """
    return device.type == "cpu" and mode in ("GRU", "RNN")


def layer_supported(layer) -> bool:
    """True when ``layer`` (an rnnkit RecurrentLayer) runs on the fast path when not fused."""
    return all(supports(cell) for cell in layer._cells)


def _project(cell: RecurrentCell, x: Tensor, params: dict) -> tuple[Tensor, dict]:
    """The cell's ``project_input`` (W_ih x + b_ih, then LN if the cell has it) on oneDNN GEMMs.

    Where b_hh is simply added to the pre-activations (LSTM and Elman RNN without layer norm) it
    is folded into the projection's bias, and the returned parameters have ``bias_hh = None``.
    """
    b_ih = params["bias_ih"]
    if b_ih is not None and not cell.layer_norm and not isinstance(cell, GRUCell):
        b_ih = b_ih + params["bias_hh"]
        params = {**params, "bias_hh": None}
    xp = linear(x, params["weight_ih"], b_ih)
    if cell.layer_norm:
        chunks = 3 if isinstance(cell, GRUCell) else 1
        xp = layer_norm_chunks(xp, params["ln_ih_weight"], params["ln_ih_bias"], chunks)
    return xp, params


def _zoneout_keep(zoneout: float, training: bool, steps: int, shape, n_states: int, like: Tensor):
    """Per state, the (T, B, H) keep-new coefficients 1 − d of zoneout (or the scalar 1 − p).

    Masks are drawn step by step, h before c, exactly as the reference loop draws them.
    """
    if not training:
        return [1.0 - zoneout] * n_states
    draws = [[] for _ in range(n_states)]
    for _ in range(steps):
        for k in range(n_states):
            draws[k].append(
                torch.empty(shape, dtype=like.dtype, device=like.device).bernoulli_(zoneout)
            )
    return [1 - torch.stack(d) for d in draws]


def run_direction(
    cell: RecurrentCell,
    x: Tensor,
    state,
    lengths: Tensor | None = None,
    reverse: bool = False,
    params: dict | None = None,
    zoneout: float = 0.0,
    training: bool = False,
    return_cell_states: bool = False,
):
    """Same contract and results as :func:`rnnkit.layers.run_direction`, on the fast path."""
    from rnnkit.layers import reverse_padded  # layers imports this module

    p = params if params is not None else cell.own_params()
    B, T = x.shape[:2]
    if reverse:
        x = reverse_padded(x, lengths)
    xp, p = _project(cell, x.transpose(0, 1), p)  # (T, B, G): one GEMM for every step
    mask = None
    if lengths is not None:
        steps = torch.arange(T).unsqueeze(1)  # (T, 1)
        mask = (steps < lengths.unsqueeze(0)).to(device=x.device, dtype=x.dtype).unsqueeze(-1)
    n_states = 2 if cell.is_lstm else 1
    alphas = [mask] * n_states
    if zoneout:
        keep = _zoneout_keep(zoneout, training, T, (B, cell.hidden_size), n_states, x)
        alphas = [k if mask is None else mask * k for k in keep]
        alphas = [
            torch.full((T, B, 1), a, dtype=x.dtype, device=x.device) if isinstance(a, float) else a
            for a in alphas
        ]

    cs = None
    if isinstance(cell, LSTMCell):
        hs, cs_all = lstm_sequence(
            xp,
            state.h.contiguous(),
            state.c.contiguous(),
            p,
            cell.peephole,
            cell.layer_norm,
            *alphas,
        )
        final = LSTMState(hs[-1], cs_all[-1])
        if return_cell_states:
            cs = cs_all if mask is None else cs_all * mask
            cs = cs.transpose(0, 1)
    elif isinstance(cell, GRUCell):
        hs = gru_sequence(xp, state.contiguous(), p, cell.reset_after, cell.layer_norm, alphas[0])
        final = hs[-1]
    else:
        hs = rnn_sequence(xp, state.contiguous(), p, cell.nonlinearity, cell.layer_norm, alphas[0])
        final = hs[-1]
    y = (hs if mask is None else hs * mask).transpose(0, 1)  # (B, T, H)
    if reverse:
        y = reverse_padded(y, lengths)
        cs = reverse_padded(cs, lengths) if cs is not None else None
    return y, final, cs
