"""minGRU and minLSTM (Feng et al. 2024, "Were RNNs All We Needed?"): gates from x_t alone.

Dropping h_{t−1} from the gates leaves h_t = a_t ⊙ h_{t−1} + b_t with a_t, b_t known for every
step in advance, so training runs the recurrence as a parallel scan (the log-space scan of
:mod:`rnnkit.modern.scan`, or the fused native loop of ``elementwise.cpp`` on CPU, where a
sequential pass over memory beats the scan's logcumsumexp) while generation costs one
elementwise step per token. Both cells use the paper's log-space variant: the candidate goes
through g(x) = x + ½ (x ≥ 0), σ(x) (x < 0), which keeps every h_t positive so log h exists.

Paths of ``sequence``: ``"native"`` (the fused C++ loop, forward and backward; CPU float32/64),
``"log"`` (the log-space scan; ``chunk_size`` bounds its memory and float error), ``"loop"``
(the step path). ``"auto"`` takes native where it is built, else log.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.modern import native
from rnnkit.modern.base import ParallelCell, StackedLayer
from rnnkit.modern.scan import chunked_log_scan, freeze_padding, time_mask

__all__ = ["g", "log_g", "MinGRUCell", "MinLSTMCell", "MinGRU", "MinLSTM"]


def g(x: Tensor) -> Tensor:
    """g(x) = x + ½ for x ≥ 0, σ(x) for x < 0: continuous, positive, g(0) = ½."""
    return torch.where(x >= 0, x + 0.5, torch.sigmoid(x))


def log_g(x: Tensor) -> Tensor:
    """log g(x) = log(x + ½) for x ≥ 0, −softplus(−x) = log σ(x) for x < 0."""
    return torch.where(x >= 0, torch.log(F.relu(x) + 0.5), -F.softplus(-x))


def _final_and_masked(h: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor]:
    """The scan's last row is the final state (padding froze it); zero the padded outputs."""
    final = h[:, -1]
    mask = time_mask(lengths, h.shape[1], h.device)
    return (h if mask is None else h * mask), final


class _MinCell(ParallelCell):
    """Shared by minGRU and minLSTM: one (chunks·H, I) projection, a tensor state h."""

    paths = ("native", "log")
    chunks = 2
    native_name = ""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        chunk_size: int | None = None,
        device=None,
        dtype=None,
    ):
        super().__init__(input_size, hidden_size)
        kw = {"device": device, "dtype": dtype}
        self.weight_ih = nn.Parameter(torch.empty(self.chunks * hidden_size, input_size, **kw))
        self._add_input_bias(self.chunks * hidden_size, bias, **kw)
        self.chunk_size = chunk_size
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Every weight and bias ~ U(−1/√I, 1/√I), torch's ``nn.Linear`` default (I = input_size)."""
        bound = 1.0 / math.sqrt(self.input_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def project_input(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight_ih, self.bias_ih)  # (..., chunks·H)

    def default_path(self, x: Tensor) -> str:
        return "native" if native.usable(x) else "log"

    def log_coefficients(self, u: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def parallel(self, x: Tensor, state: Tensor, lengths: Tensor | None, path: str):
        u = self.project_input(x)  # (B, T, chunks·H): one GEMM for every step
        if path == "native":
            return native.elementwise_scan(self.native_name, u, state, None, lengths)
        log_a, log_b = self.log_coefficients(u)
        log_a, log_b = freeze_padding(log_a, log_b, time_mask(lengths, x.shape[1], x.device))
        h = chunked_log_scan(log_a, log_b, state, self.chunk_size)  # (B, T, H)
        return _final_and_masked(h, lengths)

    def extra_repr(self) -> str:
        s = super().extra_repr() + ("" if self.bias_ih is not None else ", bias=False")
        return s + (f", chunk_size={self.chunk_size}" if self.chunk_size else "")


class MinGRUCell(_MinCell):
    r"""minGRU step (Feng et al. 2024, log-space version).

    .. math::
        z_t = σ(W_z x_t + b_z),\quad \tilde h_t = g(W_h x_t + b_h),\quad
        h_t = (1 − z_t) ⊙ h_{t−1} + z_t ⊙ \tilde h_t

    with g(x) = x + ½ (x ≥ 0), σ(x) (x < 0). As a scan h_t = a_t ⊙ h_{t−1} + b_t with
    log a_t = log(1 − z_t) = −softplus(ž_t) and log b_t = log z_t + log g(ȟ_t), where
    log z_t = log a_t + ž_t (ž, ȟ the pre-activations) saves a second softplus.

    ``weight_ih (2H, I)`` stacks the rows of ȟ then ž; ``bias_ih (2H,)``. Initialisation: see
    ``reset_parameters`` (U(±1/√I) for all). State: h ``(B, H)``, zero at the start.
    """

    chunks = 2
    native_name = "mingru"

    def step(self, u: Tensor, state: Tensor):
        k, z = u.chunk(2, -1)
        h = state + torch.sigmoid(z) * (g(k) - state)  # (1 − z) h + z h̃
        return h, h

    def log_coefficients(self, u: Tensor) -> tuple[Tensor, Tensor]:
        k, z = u.chunk(2, -1)
        log_a = -F.softplus(z)  # log(1 − σ(z))
        return log_a, log_a + z + log_g(k)  # log σ(z) = log(1 − σ(z)) + z


class MinLSTMCell(_MinCell):
    r"""minLSTM step (Feng et al. 2024, log-space version with the normalised gates).

    .. math::
        f_t = σ(W_f x_t + b_f),\ i_t = σ(W_i x_t + b_i),\ \tilde h_t = g(W_h x_t + b_h),\
        f'_t = \frac{f_t}{f_t + i_t},\ i'_t = \frac{i_t}{f_t + i_t},\
        h_t = f'_t ⊙ h_{t−1} + i'_t ⊙ \tilde h_t

    In logs, with d = softplus(−f̌) − softplus(−ǐ) = log(i/f): log f′ = −softplus(d),
    log i′ = −softplus(−d). ``weight_ih (3H, I)`` stacks the rows of ȟ, f̌, ǐ; ``bias_ih (3H,)``.
    Initialisation: U(±1/√I) for all. State: h ``(B, H)``, zero at the start.
    """

    chunks = 3
    native_name = "minlstm"

    def step(self, u: Tensor, state: Tensor):
        k, f, i = u.chunk(3, -1)
        f, i = torch.sigmoid(f), torch.sigmoid(i)
        h = (f * state + i * g(k)) / (f + i)
        return h, h

    def log_coefficients(self, u: Tensor) -> tuple[Tensor, Tensor]:
        k, f, i = u.chunk(3, -1)
        d = F.softplus(-f) - F.softplus(-i)  # log i_t − log f_t
        return -F.softplus(d), -F.softplus(-d) + log_g(k)


class MinGRU(StackedLayer):
    """Stacked (optionally bidirectional) minGRU layers; see :class:`MinGRUCell` and
    :class:`~rnnkit.modern.base.StackedLayer`. Extra option: ``chunk_size`` of the log scan."""

    cell_class = MinGRUCell


class MinLSTM(StackedLayer):
    """Stacked (optionally bidirectional) minLSTM layers; see :class:`MinLSTMCell` and
    :class:`~rnnkit.modern.base.StackedLayer`. Extra option: ``chunk_size`` of the log scan."""

    cell_class = MinLSTMCell
