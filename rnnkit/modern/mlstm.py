"""mLSTM, the matrix-memory cell of xLSTM (Beck et al. 2024), in its parallel and chunkwise forms.

Per head, the memory is a d × d matrix written with an outer product and read with a query; the
input gate is exponential, kept finite by a running maximum m_t (the stabiliser). The gates
depend on x_t only, so a whole sequence has a closed, attention-like form (``"parallel"``:
O(T²) memory per head), and a chunk of it can start from a carried state, so
``"chunkwise"`` runs the parallel form over chunks of ``chunk_size`` steps and carries
(C, n, m) between them (O(T · chunk_size)). ``"loop"`` is the step path.

Every output is invariant to the stabiliser: C, n are stored divided by e^{m}, and the
denominator max(|n̄ᵀq|, e^{−m}) is max(|nᵀq|, 1) e^{−m}; so the three paths agree although each
picks m its own way only up to ties.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.modern.base import ParallelCell, StackedLayer
from rnnkit.modern.scan import time_mask

__all__ = ["MLSTMState", "MLSTMCell", "MLSTM"]


class MLSTMState(NamedTuple):
    """Stabilised mLSTM state: ``C (B, NH, d, d)`` (value × key), ``n (B, NH, d)``, ``m (B, NH)``."""

    C: Tensor
    n: Tensor
    m: Tensor


class MLSTMCell(ParallelCell):
    r"""One mLSTM layer direction with ``num_heads`` heads of size d = H / num_heads.

    .. math::
        q_t = W_q x_t + b_q,\ k_t = (W_k x_t + b_k)/\sqrt d,\ v_t = W_v x_t + b_v,\
        o_t = σ(W_o x_t + b_o),\ \check\imath_t = w_i x_t + b_i,\ \check f_t = w_f x_t + b_f

        m_t = \max(\log σ(\check f_t) + m_{t−1},\ \check\imath_t),\quad
        i'_t = e^{\check\imath_t − m_t},\quad f'_t = e^{\log σ(\check f_t) + m_{t−1} − m_t}

        C_t = f'_t C_{t−1} + i'_t\, v_t k_t^⊤,\quad n_t = f'_t n_{t−1} + i'_t k_t,\quad
        h_t = o_t ⊙ \frac{C_t q_t}{\max(|n_t^⊤ q_t|,\ e^{−m_t})}

    (the gates ǐ, f̌ and m are one scalar per head; C, n are the stabilised memory C/e^{m}).
    Parallel form over a chunk from the state (C₀, n₀, m₀), with F_t = Σ_{r≤t} log σ(f̌_r):
    D_{ts} = F_t − F_s + ǐ_s (s ≤ t), m_t = max(max_s D_{ts}, F_t + m₀),
    h̃_t = [Σ_s e^{D_ts − m_t} (q_tᵀk_s) v_s + e^{F_t + m₀ − m_t} C₀ q_t] / max(|·|, e^{−m_t}),
    with the same weights on k_s and n₀ in the denominator's n_tᵀ q_t.

    ``weight_ih (4H + 2·NH, I)`` stacks the rows of q, k, v, o (H each) then ǐ, f̌ (NH each);
    ``bias_ih`` likewise. Initialisation: weights ~ U(±1/√I); biases 0 except b_f, spaced
    linearly from 3 to 6 over the heads (xLSTM's choice: forget gates start near 1). State:
    :class:`MLSTMState`, zero at the start (m₀ = 0 with C₀ = n₀ = 0 contributes nothing).
    """

    paths = ("chunkwise", "parallel")

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        num_heads: int = 4,
        chunk_size: int = 64,
        device=None,
        dtype=None,
    ):
        super().__init__(input_size, hidden_size)
        if num_heads < 1 or hidden_size % num_heads:
            raise ValueError(
                f"hidden_size ({hidden_size}) must be a multiple of num_heads ({num_heads})"
            )
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive number of steps; got {chunk_size}")
        self.num_heads = num_heads
        self.head_size = hidden_size // num_heads
        self.chunk_size = chunk_size
        kw = {"device": device, "dtype": dtype}
        rows = 4 * hidden_size + 2 * num_heads
        self.weight_ih = nn.Parameter(torch.empty(rows, input_size, **kw))
        self._add_input_bias(rows, bias, **kw)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """W ~ U(±1/√I); biases 0, forget biases linspace(3, 6) over heads (class docstring)."""
        bound = 1.0 / math.sqrt(self.input_size)
        nn.init.uniform_(self.weight_ih, -bound, bound)
        if self.bias_ih is not None:
            with torch.no_grad():
                self.bias_ih.zero_()
                self.bias_ih[-self.num_heads :] = torch.linspace(3.0, 6.0, self.num_heads)

    def zero_state(self, batch_size: int, device, dtype):
        NH, d = self.num_heads, self.head_size
        kw = {"device": device, "dtype": dtype}
        return MLSTMState(
            torch.zeros(batch_size, NH, d, d, **kw),
            torch.zeros(batch_size, NH, d, **kw),
            torch.zeros(batch_size, NH, **kw),
        )

    def state_shapes(self, batch_size: int) -> list[tuple[int, ...]]:
        NH, d = self.num_heads, self.head_size
        return [(batch_size, NH, d, d), (batch_size, NH, d), (batch_size, NH)]

    def project_input(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight_ih, self.bias_ih)  # (..., 4H + 2NH)

    def _split(self, u: Tensor):
        """q, k, v ``(..., NH, d)`` (k scaled by 1/√d), o ``(..., H)``, ǐ, log σ(f̌) ``(..., NH)``."""
        H, NH, d = self.hidden_size, self.num_heads, self.head_size
        q, k, v, o = (u[..., j * H : (j + 1) * H].unflatten(-1, (NH, d)) for j in range(4))
        i_pre, f_pre = u[..., 4 * H : 4 * H + NH], u[..., 4 * H + NH :]
        return q, k / math.sqrt(d), v, torch.sigmoid(o.flatten(-2)), i_pre, F.logsigmoid(f_pre)

    def step(self, u: Tensor, state: MLSTMState):
        C, n, m = state
        q, k, v, o, i_pre, log_f = self._split(u)  # q, k, v (B, NH, d); gates (B, NH)
        m_new = torch.maximum(log_f + m, i_pre)
        i = torch.exp(i_pre - m_new)
        f = torch.exp(log_f + m - m_new)
        C = f[..., None, None] * C + i[..., None, None] * (v.unsqueeze(-1) * k.unsqueeze(-2))
        n = f[..., None] * n + i[..., None] * k
        num = (C @ q.unsqueeze(-1)).squeeze(-1)  # (B, NH, d): C q
        den = torch.maximum((n * q).sum(-1).abs(), torch.exp(-m_new))  # (B, NH)
        h = o * (num / den[..., None]).flatten(-2)
        return h, MLSTMState(C, n, m_new)

    def _chunk(self, u: Tensor, state: MLSTMState, mask: Tensor | None):
        """The parallel form over one chunk ``u (B, L, P)`` from ``state``: (y (B, L, H), state)."""
        C0, n0, m0 = state
        q, k, v, o, i_pre, log_f = self._split(u)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, NH, L, d)
        i_pre, log_f = i_pre.transpose(1, 2), log_f.transpose(1, 2)  # (B, NH, L)
        if mask is not None:  # padded steps: keep the memory (f′ = 1, i′ = 0)
            keep = mask.squeeze(-1).unsqueeze(1)  # (B, 1, L)
            log_f = log_f.masked_fill(~keep, 0.0)
            i_pre = i_pre.masked_fill(~keep, float("-inf"))
        L = u.shape[1]
        F_cum = log_f.cumsum(-1)  # (B, NH, L)
        causal = torch.ones(L, L, dtype=torch.bool, device=u.device).tril()
        D = (F_cum.unsqueeze(-1) - F_cum.unsqueeze(-2) + i_pre.unsqueeze(-2)).masked_fill(
            ~causal, float("-inf")
        )  # (B, NH, L, L): log weight of step s's write in the memory read at t
        from_state = F_cum + m0.unsqueeze(-1)  # (B, NH, L): log weight of the carried memory
        m = torch.maximum(D.amax(-1), from_state)  # (B, NH, L)
        W = torch.exp(D - m.unsqueeze(-1))
        s0 = torch.exp(from_state - m)  # (B, NH, L)
        S = (q @ k.transpose(-1, -2)) * W  # (B, NH, L, L)
        num = S @ v + s0.unsqueeze(-1) * (q @ C0.transpose(-1, -2))  # (B, NH, L, d)
        nq = S.sum(-1) + s0 * (q @ n0.unsqueeze(-1)).squeeze(-1)  # (B, NH, L)
        den = torch.maximum(nq.abs(), torch.exp(-m))
        y = o * (num / den.unsqueeze(-1)).transpose(1, 2).flatten(-2)  # (B, L, H)
        # the state after the chunk's last step (padding at the end left it unchanged)
        w_last = W[..., -1, :]  # (B, NH, L)
        s_last = s0[..., -1]
        C = (v.transpose(-1, -2) * w_last.unsqueeze(-2)) @ k + s_last[..., None, None] * C0
        n = (w_last.unsqueeze(-1) * k).sum(-2) + s_last[..., None] * n0
        if mask is not None:
            y = y * mask
        return y, MLSTMState(C, n, m[..., -1])

    def parallel(self, x: Tensor, state: MLSTMState, lengths: Tensor | None, path: str):
        u = self.project_input(x)  # (B, T, 4H + 2NH)
        mask = time_mask(lengths, x.shape[1], x.device)
        T = x.shape[1]
        size = T if path == "parallel" else self.chunk_size
        outs = []
        for start in range(0, T, size):
            part = None if mask is None else mask[:, start : start + size]
            y, state = self._chunk(u[:, start : start + size], state, part)
            outs.append(y)
        return torch.cat(outs, 1), state

    def extra_repr(self) -> str:
        s = super().extra_repr() + f", num_heads={self.num_heads}, chunk_size={self.chunk_size}"
        return s + ("" if self.bias_ih is not None else ", bias=False")


class MLSTM(StackedLayer):
    """Stacked (optionally bidirectional) mLSTM layers; see :class:`MLSTMCell` (options
    ``num_heads``, ``chunk_size``) and :class:`~rnnkit.modern.base.StackedLayer`."""

    cell_class = MLSTMCell
