"""SRU (Lei et al. 2018, "Simple Recurrent Units for Highly Parallelizable Recurrence").

The three (four) input projections of every step are one GEMM; the recurrence is elementwise,
with the 2018 version's vector recurrence v ⊙ c_{t−1} inside the forget and reset gates and the
highway connection to the input. It runs on the fused native loop of ``elementwise.cpp``
(forward and backward, ∂L/∂v included) or, where that is not built, the torch step loop.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.modern import native
from rnnkit.modern.base import ParallelCell, StackedLayer

__all__ = ["SRUCell", "SRU"]


class SRUCell(ParallelCell):
    r"""One SRU layer direction (the 2018 form).

    .. math::
        \tilde x_t = W x_t,\quad
        f_t = σ(W_f x_t + v_f ⊙ c_{t−1} + b_f),\quad
        r_t = σ(W_r x_t + v_r ⊙ c_{t−1} + b_r)

        c_t = f_t ⊙ c_{t−1} + (1 − f_t) ⊙ \tilde x_t,\quad
        h_t = r_t ⊙ c_t + (1 − r_t) ⊙ \hat x_t

    The highway input x̂_t is x_t itself when I = H, else a fourth projection W_h x_t (the
    2018 paper's choice for mismatched sizes, e.g. above a bidirectional layer). No activation
    on c_t and no highway scaling (the paper's α = 1).

    ``weight_ih (3H or 4H, I)`` stacks the rows of W, W_f, W_r (, W_h); ``bias_ih (2H,)`` holds
    b_f, b_r; ``weight_hh (2H,)`` the elementwise recurrent weights v_f, v_r. Initialisation:
    W's ~ U(±√(3/I)) (variance 1/I, as Lei et al.), biases 0, v ~ U(±1/√H). State: c ``(B, H)``.
    """

    paths = ("native",)

    def __init__(
        self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None
    ):
        super().__init__(input_size, hidden_size)
        kw = {"device": device, "dtype": dtype}
        self.projects_highway = input_size != hidden_size
        rows = (4 if self.projects_highway else 3) * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(rows, input_size, **kw))
        self.weight_hh = nn.Parameter(torch.empty(2 * hidden_size, **kw))
        self._add_input_bias(2 * hidden_size, bias, **kw)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """W ~ U(±√(3/I)), v ~ U(±1/√H), b = 0 (see the class docstring)."""
        bound = math.sqrt(3.0 / self.input_size)
        nn.init.uniform_(self.weight_ih, -bound, bound)
        bound_v = 1.0 / math.sqrt(self.hidden_size)
        nn.init.uniform_(self.weight_hh, -bound_v, bound_v)
        if self.bias_ih is not None:
            nn.init.zeros_(self.bias_ih)

    def project_input(self, x: Tensor) -> Tensor:
        """``(..., 4H)``: [W x_t | W_f x_t + b_f | W_r x_t + b_r | x̂_t]."""
        H = self.hidden_size
        bias = None
        if self.bias_ih is not None:
            zeros = self.bias_ih.new_zeros(H)
            tail = [zeros] if self.projects_highway else []
            bias = torch.cat([zeros, self.bias_ih, *tail])
        u = F.linear(x, self.weight_ih, bias)
        return u if self.projects_highway else torch.cat([u, x], -1)

    def step(self, u: Tensor, state: Tensor):
        xt, f, r, xh = u.chunk(4, -1)
        v_f, v_r = self.weight_hh.chunk(2)
        f = torch.sigmoid(f + v_f * state)
        r = torch.sigmoid(r + v_r * state)
        c = xt + f * (state - xt)  # f c + (1 − f) x̃
        h = xh + r * (c - xh)  # r c + (1 − r) x̂
        return h, c

    def default_path(self, x: Tensor) -> str:
        return "native" if native.usable(x) else "loop"

    def parallel(self, x: Tensor, state: Tensor, lengths: Tensor | None, path: str):
        u = self.project_input(x)  # (B, T, 4H)
        return native.elementwise_scan("sru", u, state, self.weight_hh, lengths)

    def extra_repr(self) -> str:
        return super().extra_repr() + ("" if self.bias_ih is not None else ", bias=False")


class SRU(StackedLayer):
    """Stacked (optionally bidirectional) SRU layers; see :class:`SRUCell` and
    :class:`~rnnkit.modern.base.StackedLayer`."""

    cell_class = SRUCell
