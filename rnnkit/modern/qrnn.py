"""QRNN (Bradbury et al. 2016, "Quasi-Recurrent Neural Networks"): convolutional gates, fo-pooling.

The gates come from a causal convolution of width ``window`` (1 or 2) over the inputs, one GEMM
for every step (the window's taps stacked as rows of one weight), and the only recurrence is the
elementwise fo-pooling, run by the fused native loop of ``elementwise.cpp`` (forward and
backward) or, where that is not built, by the torch step loop.

A window of 2 needs x_{t−1} at step t, across a truncated-BPTT boundary too: the state then
carries the previous input's projection W₁ x_{t−1} (3H wide, the same for every layer), so the
first step of the next window sees exactly what an unbroken sequence would.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.modern import native
from rnnkit.modern.base import ParallelCell, StackedLayer

__all__ = ["QRNNState", "QRNNCell", "QRNN"]


class QRNNState(NamedTuple):
    """QRNN state with a window of 2: the memory ``c (B, H)`` and ``prev = W₁ x_{t−1} (B, 3H)``."""

    c: Tensor
    prev: Tensor


class QRNNCell(ParallelCell):
    r"""One QRNN layer direction with fo-pooling.

    .. math::
        [\check z_t; \check f_t; \check o_t] = W_0 x_t + W_1 x_{t−1} + b \quad(\text{window } 2;
        W_1 x_{t−1} \text{ absent for window } 1)

        z_t = \tanh \check z_t,\ f_t = σ(\check f_t),\ o_t = σ(\check o_t),\quad
        c_t = f_t ⊙ c_{t−1} + (1 − f_t) ⊙ z_t,\quad h_t = o_t ⊙ c_t

    ``weight_ih (window·3H, I)`` stacks W₀'s rows (z, f, o) then W₁'s; ``bias_ih (3H,)``.
    Initialisation: weights and bias ~ U(±1/√(window·I)), torch's ``Conv1d`` default for a
    convolution of that width. State: ``c (B, H)`` (window 1) or :class:`QRNNState` (window 2),
    zero at the start (x_0 = 0 before the first input, the causal zero padding).
    """

    paths = ("native",)

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        window: int = 1,
        device=None,
        dtype=None,
    ):
        super().__init__(input_size, hidden_size)
        if window not in (1, 2):
            raise ValueError(f"QRNN window must be 1 or 2 (a causal convolution); got {window}")
        self.window = window
        kw = {"device": device, "dtype": dtype}
        self.weight_ih = nn.Parameter(torch.empty(window * 3 * hidden_size, input_size, **kw))
        self._add_input_bias(3 * hidden_size, bias, **kw)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Weights and bias ~ U(−1/√(window·I), 1/√(window·I)) (``nn.Conv1d``'s default)."""
        bound = 1.0 / math.sqrt(self.window * self.input_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def zero_state(self, batch_size: int, device, dtype):
        c = torch.zeros(batch_size, self.hidden_size, device=device, dtype=dtype)
        if self.window == 1:
            return c
        return QRNNState(
            c, torch.zeros(batch_size, 3 * self.hidden_size, device=device, dtype=dtype)
        )

    def state_shapes(self, batch_size: int) -> list[tuple[int, ...]]:
        c = (batch_size, self.hidden_size)
        return [c] if self.window == 1 else [c, (batch_size, 3 * self.hidden_size)]

    def project_input(self, x: Tensor) -> Tensor:
        """``(..., window·3H)``: [W₀ x_t + b | W₁ x_t] (the second half is used one step later)."""
        u = F.linear(x, self.weight_ih)
        if self.bias_ih is None:
            return u
        if self.window == 1:
            return u + self.bias_ih
        H3 = 3 * self.hidden_size
        return torch.cat([u[..., :H3] + self.bias_ih, u[..., H3:]], -1)

    def step(self, u: Tensor, state):
        if self.window == 2:
            c, prev = state
            H3 = 3 * self.hidden_size
            u, nxt = u[..., :H3] + prev, u[..., H3:]
        else:
            c = state
        z, f, o = u.chunk(3, -1)
        z, f = torch.tanh(z), torch.sigmoid(f)
        c = z + f * (c - z)  # f c + (1 − f) z
        h = torch.sigmoid(o) * c
        return h, (QRNNState(c, nxt) if self.window == 2 else c)

    def default_path(self, x: Tensor) -> str:
        return "native" if native.usable(x) else "loop"

    def parallel(self, x: Tensor, state, lengths: Tensor | None, path: str):
        u = self.project_input(x)  # (B, T, window·3H): the convolution as one GEMM
        if self.window == 2:
            c0, prev = state
            H3 = 3 * self.hidden_size
            taps = u[..., H3:]  # W₁ x_t, added at step t + 1
            shifted = torch.cat([prev.unsqueeze(1), taps[:, :-1]], 1)
            gates = u[..., :H3] + shifted
            last = x.shape[1] - 1 if lengths is None else (lengths.to(x.device) - 1)
            nxt = taps[:, -1] if lengths is None else taps[torch.arange(x.shape[0]), last]
        else:
            c0, gates = state, u
        y, c = native.elementwise_scan("qrnn", gates, c0, None, lengths)
        return y, (QRNNState(c, nxt) if self.window == 2 else c)

    def extra_repr(self) -> str:
        s = super().extra_repr() + ("" if self.bias_ih is not None else ", bias=False")
        return s + (f", window={self.window}" if self.window != 1 else "")


class QRNN(StackedLayer):
    """Stacked (optionally bidirectional) QRNN layers; see :class:`QRNNCell` (option ``window``)
    and :class:`~rnnkit.modern.base.StackedLayer`."""

    cell_class = QRNNCell
