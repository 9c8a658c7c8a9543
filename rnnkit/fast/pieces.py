"""Pieces the fast path's time loops share: layer-norm statistics and gradients, elementwise
gate-derivative helpers (σ', tanh' and tanh as 2σ(2x) − 1), the blend's gradient split and the
GRU's direct path to h_{t−1} in the backward loops, and :func:`_loop`, which compiles a loop with
TorchScript once (or runs it as Python)."""

from __future__ import annotations

import logging
import warnings

import torch
from torch import Tensor

from rnnkit.fast import switches

logger = logging.getLogger(__name__)


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


def _split_blend(g: Tensor, alpha: list[Tensor], t: int) -> tuple[Tensor, Tensor | None]:
    """∂L/∂s_t split by the blend s_t = s_{t−1} + α_t ⊙ (s̃_t − s_{t−1}) (``alpha``: the α_t
    unbound over time, empty without a blend): the cell's share ∂L/∂s̃_t = α_t ⊙ ∂L/∂s_t and what
    reaches s_{t−1} around the cell, (1 − α_t) ⊙ ∂L/∂s_t (None without a blend)."""
    if len(alpha) > 0:
        g_cell = g * alpha[t]
        return g_cell, g - g_cell
    return g, None


def _gru_shortcut(gy: list[Tensor], t: int, g_new: Tensor, z: Tensor) -> Tensor:
    """Both GRU forms' ∂L/∂h_{t−1} outside the recurrent products, as a new tensor the caller adds
    to in place: the output's ∂L/∂y_{t−1} (``gy``, none at t = 0 or when empty) + ∂h̃_t ⊙ z_t,
    the path h̃_t = n + z ⊙ (h_{t−1} − n) gives h_{t−1} directly."""
    if t > 0 and len(gy) > 0:
        return torch.addcmul(gy[t - 1], g_new, z)
    return g_new * z


def _ln_param_sums(dw: list, db: list) -> tuple[Tensor, Tensor]:
    return torch.stack(dw).sum(0), torch.stack(db).sum(0)


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


_COMPILED: dict = {}


def _loop(fn):
    """``fn`` compiled with TorchScript once (when :data:`SCRIPT`), else ``fn`` itself."""
    if not switches.SCRIPT:
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
