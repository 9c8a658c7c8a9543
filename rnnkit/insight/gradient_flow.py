"""Gradient flow across time: how the gradient of a last-step loss reaches every earlier step.

For a recurrent layer run over T steps with a loss L_T on the last step only, backpropagation
through time gives

    ∂L_T/∂s_t = ∂L_T/∂s_T · J_T · J_{T−1} ⋯ J_{t+1},      J_k = ∂s_k/∂s_{k−1},

where s_t is the full state (h_t, plus c_t for an LSTM). :func:`gradient_flow` measures
‖∂L_T/∂h_t‖ (and ‖∂L_T/∂c_t‖, ‖∂L_T/∂x_t‖) at every distance T − t, the spectral norm
‖J_k‖₂ of every step Jacobian (:mod:`rnnkit.insight.jacobians`), and the parameter-gradient norm
before and after clipping. If every ‖J_k‖₂ ≤ γ < 1 the gradient shrinks at least like γ^(T−t)
(vanishing); with ‖J_k‖₂ > 1 it may grow (exploding). :func:`language_model_probe` supplies real
inputs and a real loss for a trained language model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.insight.jacobians import _flatten_state, _layer_cells, _stack_step, step_jacobians
from rnnkit.layers import RecurrentLayer


@dataclass
class GradientFlow:
    """Per-distance gradient norms of one configuration; index d = distance T − t (0 … T−1).

    ``grad_state[d]`` = ‖∂L_T/∂s_t‖ (h and, for an LSTM, c together), ``grad_h``/``grad_c`` its
    parts, ``grad_x[d]`` = ‖∂L_T/∂x_t‖, ``jacobian[d]`` = ‖∂s_t/∂s_{t−1}‖₂; each is a mean over
    the batch of per-sequence norms. ``param_grad_norm`` is the global parameter-gradient norm of
    the batch-mean loss, ``clipped_grad_norm`` the same after clipping to ``clip``.
    """

    label: str
    length: int
    grad_state: list[float]
    grad_h: list[float]
    grad_c: list[float] | None
    grad_x: list[float]
    jacobian: list[float]
    param_grad_norm: float
    clipped_grad_norm: float
    clip: float

    def ratio(self, distance: int, reference: int = 1) -> float:
        """‖∂L_T/∂s_{T−distance}‖ / ‖∂L_T/∂s_{T−reference}‖ (nan when out of range)."""
        if max(distance, reference) >= self.length:
            return math.nan
        ref = self.grad_state[reference]
        return self.grad_state[distance] / ref if ref > 0 else math.nan


def gradient_flow(
    layer: RecurrentLayer,
    x: Tensor,
    loss_fn: Callable[[Tensor], Tensor] | None = None,
    label: str = "",
    clip: float = 1.0,
    jacobian_batch: int = 8,
    params: Sequence[nn.Parameter] | None = None,
) -> GradientFlow:
    """Measure how the gradient of a last-step loss flows back through ``layer`` over ``x``.

    ``x (B, T, I)`` (batch-first whatever ``layer.batch_first`` says) is run through the layer's
    cells step by step from a zero state, in evaluation mode, keeping every state s_t. The loss is
    L_T = Σ_b ℓ(h_T⁽ᵇ⁾) with ``loss_fn(h_T (B, H)) → (B,)`` per-sequence losses (default: the
    projection ℓ = u·h_T on a fixed random unit vector u, so ‖∂ℓ/∂h_T‖ = 1). Summing over the
    batch makes each sequence's gradient its own, so the norms are per sequence, then averaged.

    Returns a :class:`GradientFlow`. The step-Jacobian norms use the first ``jacobian_batch``
    sequences (fewer when the state is wider than 128; 0 skips them, giving nan). ``params``
    (default: the layer's) are the parameters whose gradient of the batch-mean loss is reported
    before and after clipping to ``clip``.
    """
    cells = _layer_cells(layer)
    B, T = x.shape[:2]
    was_training = layer.training
    layer.eval()
    x = x.detach().requires_grad_(True) if x.is_leaf else x
    x.retain_grad()
    dtype = x.dtype
    if loss_fn is None:
        gen = torch.Generator().manual_seed(0)
        u = torch.randn(layer.hidden_size, generator=gen, dtype=torch.float64)
        u = (u / u.norm()).to(dtype)

        def loss_fn(h: Tensor) -> Tensor:
            return h @ u

    states = [cell.init_state(B, x.device, dtype) for cell, _ in cells]
    trajectory, top = [_flatten_state(states).detach()], []
    for t in range(T):
        h, states = _stack_step(cells, layer.zoneout, x[:, t], states)
        for part in states[-1] if isinstance(states[-1], tuple) else (states[-1],):
            part.retain_grad()
        top.append(states[-1])
        trajectory.append(_flatten_state(states).detach())
    per_example = loss_fn(h)  # (B,)
    params = list(params) if params is not None else list(layer.parameters())
    for p in params:
        p.grad = None
    per_example.sum().backward()

    def norms(grads: list[Tensor | None]) -> list[float]:  # time order → distance order
        return [float(g.norm(dim=-1).mean()) if g is not None else 0.0 for g in reversed(grads)]

    is_lstm = isinstance(top[0], tuple)
    grad_h = norms([s.h.grad if is_lstm else s.grad for s in top])
    grad_c = norms([s.c.grad for s in top]) if is_lstm else None
    if is_lstm:
        both = [
            torch.cat(
                [
                    s.h.grad if s.h.grad is not None else torch.zeros_like(s.h),
                    s.c.grad if s.c.grad is not None else torch.zeros_like(s.c),
                ],
                -1,
            )
            for s in top
        ]
        grad_state = norms(both)
    else:
        grad_state = grad_h
    grad_x = norms([x.grad[:, t] for t in range(T)])

    # the same gradients, as a training step would see them: of the batch-mean loss
    with torch.no_grad():
        for p in params:
            if p.grad is not None:
                p.grad /= B
    before = float(torch.nn.utils.clip_grad_norm_(params, clip if clip > 0 else math.inf))
    # clip_grad_norm_ returns the norm it found; measure what clipping left
    after = math.sqrt(sum(float(p.grad.pow(2).sum()) for p in params if p.grad is not None))
    for p in params:
        p.grad = None

    # an S × S SVD costs ~S³: wide states (a trained 256-unit LSTM has S = 512) use fewer sequences
    S = sum(2 * cell.hidden_size if cell.is_lstm else cell.hidden_size for cell, _ in cells)
    n = min(B, jacobian_batch, max(1, round(jacobian_batch * (128 / S) ** 2)))
    jacobian = [math.nan] * T
    if n > 0:
        traj = torch.stack(trajectory, 1)  # (B, T+1, S)
        jac = step_jacobians(layer, x[:n].detach(), traj[:n])  # (n, T)
        jacobian = [float(v) for v in jac.mean(0).flip(0)]
    layer.train(was_training)
    return GradientFlow(
        label=label,
        length=T,
        grad_state=grad_state,
        grad_h=grad_h,
        grad_c=grad_c,
        grad_x=grad_x,
        jacobian=jacobian,
        param_grad_norm=before,
        clipped_grad_norm=after,
        clip=clip,
    )


def language_model_probe(
    model: nn.Module, ids: Tensor, length: int, batch_size: int, seed: int = 0
) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
    """Real inputs and a real loss for diagnosing a trained language model's ``.rnn`` layer.

    Cuts ``batch_size`` windows of ``length + 1`` tokens at random offsets of ``ids`` (1-D);
    returns the embedded inputs ``x (B, T, E)`` (part of the graph, so the embedding gets its
    gradient) and ℓ(h_T) = cross-entropy of the model's next-token prediction after the last step.
    """
    n = ids.numel()
    if n < length + 1:
        raise ValueError(f"the text has {n} tokens; --length {length} needs at least {length + 1}")
    gen = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, n - length, (batch_size,), generator=gen)
    windows = torch.stack([ids[s : s + length + 1] for s in starts.tolist()])  # (B, T+1)
    device = next(model.parameters()).device
    windows = windows.to(device)
    x = model.embedding(windows[:, :-1])  # (B, T, E)
    x.retain_grad()
    targets = windows[:, -1]

    def loss_fn(h_last: Tensor) -> Tensor:
        return F.cross_entropy(model.decoder(h_last), targets, reduction="none")

    return x, loss_fn
