"""Exportable recurrent layers: the cells' own equations, written so ONNX can carry them.

torch's fused ``_VF.lstm/gru`` calls and rnnkit's hand-written autograd functions
(:mod:`rnnkit.fast`) are not what an exporter can translate with masks, both GRU forms, layer
norm and peepholes, so export goes through this cell-by-cell form instead. It reads the *same
parameter tensors* as the rnnkit layer or cell it wraps and computes the equations of
:mod:`rnnkit.cells` (stated again on :meth:`Direction.step`), so it is exact up to float rounding.

* :class:`Direction` is one cell running one way over ``x (B, T, I)``; with ``lengths`` the state
  freezes after each sequence's last step and outputs past it are 0 (the reverse direction reads
  each sequence back to front within its own length), exactly as
  :func:`rnnkit.layers.run_direction`. Scripted (``torch.jit.script``) its time loop becomes an
  ONNX ``Loop`` with a dynamic trip count; called eagerly while tracing, :meth:`Direction.step`
  is a plain chain of ops (the one-step graphs of language models and decoders).
* :class:`Stack` is the layers × directions of an rnnkit ``RNN``/``LSTM``/``GRU`` with torch's
  state layout ``(L·D, B, H)``.
* :func:`exportable_layer` / :func:`exportable_cell` build them and say, naming the module, why a
  configuration cannot be exported (learned initial states, projections).
"""

import warnings
from typing import Final

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.cells import LN_EPS, GRUCell, LSTMCell, RecurrentCell, RNNCell

__all__ = ["Direction", "Stack", "exportable_cell", "exportable_layer", "ExportError"]


class ExportError(ValueError):
    """A model (or one of its modules) that cannot be exported, with the reason."""


def _ln(x: Tensor, weight: Tensor, bias: Tensor, size: int, eps: float = 1e-5) -> Tensor:
    """LN of each ``size``-wide block of the last axis, then the blocks' γ, β side by side:
    LN(a) = γ ⊙ (a − mean(a)) / sqrt(var(a) + ε) + β, statistics over one block. ``eps`` must equal :data:`rnnkit.cells.LN_EPS` (checked at import;
    TorchScript reads no globals)."""
    parts: list[Tensor] = []
    for block in x.split(size, -1):
        parts.append(F.layer_norm(block, [size], None, None, eps))
    return torch.cat(parts, -1) * weight + bias


assert LN_EPS == 1e-5, "keep _ln's eps default equal to rnnkit.cells.LN_EPS"


class Direction(nn.Module):
    """One recurrent cell over time in one direction (see the module docstring).

    ``forward(x (B, T, I), lengths (B,), h (B, H), c (B, H))`` → ``(y (B, T, H), h_T, c_T)``;
    the GRU and Elman RNN have no ``c`` and hand back ``h`` in its place.
    """

    kind: Final[str]
    reverse: Final[bool]
    layer_norm: Final[bool]
    peephole: Final[bool]
    reset_after: Final[bool]
    relu: Final[bool]
    has_bias: Final[bool]
    zoneout: Final[float]
    hidden_size: Final[int]
    ln_size: Final[int]

    def __init__(
        self, cell: RecurrentCell, params: dict, reverse: bool = False, zoneout: float = 0.0
    ):
        super().__init__()
        if isinstance(cell, LSTMCell):
            self.kind = "lstm"
        elif isinstance(cell, GRUCell):
            self.kind = "gru"
        elif isinstance(cell, RNNCell):
            self.kind = "rnn"
        else:
            raise ExportError(f"{type(cell).__name__} is not one of rnnkit's RNN/LSTM/GRU cells")
        self.reverse = reverse
        self.layer_norm = bool(getattr(cell, "layer_norm", False))
        self.peephole = bool(getattr(cell, "peephole", False))
        self.reset_after = bool(getattr(cell, "reset_after", True))
        self.relu = getattr(cell, "nonlinearity", "tanh") == "relu"
        self.has_bias = params.get("bias_ih") is not None
        self.zoneout = float(zoneout)
        self.hidden_size = cell.hidden_size
        # LN block of the input projection: all 4H (LSTM), one gate (GRU), H (Elman)
        self.ln_size = 4 * cell.hidden_size if self.kind == "lstm" else cell.hidden_size
        G = cell.num_gates * cell.hidden_size
        empty = torch.zeros(1, dtype=params["weight_ih"].dtype)

        def take(name: str, fallback: Tensor) -> Tensor:
            value = params.get(name)
            return (value if value is not None else fallback).detach()

        # buffers, not parameters: the graph reads them as constants (initializers)
        self.register_buffer("weight_ih", take("weight_ih", empty))
        self.register_buffer("weight_hh", take("weight_hh", empty))
        zeros = torch.zeros(G, dtype=empty.dtype)
        self.register_buffer("bias_ih", take("bias_ih", zeros))
        self.register_buffer("bias_hh", take("bias_hh", zeros))
        for name in ("weight_ci", "weight_cf", "weight_co"):
            self.register_buffer(name, take(name, empty))
        for name in (
            "ln_ih_weight",
            "ln_ih_bias",
            "ln_hh_weight",
            "ln_hh_bias",
            "ln_c_weight",
            "ln_c_bias",
        ):
            self.register_buffer(name, take(name, empty))

    def project(self, x: Tensor) -> Tensor:
        """The input half of a step for any leading shape: W_ih x + b_ih (then LN with layer
        norm; per gate block for the GRU)."""
        xp = F.linear(x, self.weight_ih, self.bias_ih)
        if self.layer_norm:
            xp = _ln(xp, self.ln_ih_weight, self.ln_ih_bias, self.ln_size)
        return xp

    def step(self, xp: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        r"""One step from the projected input ``xp``; returns the new ``(h, c)``.

        Elman: h = g(x̂ + W_hh h_prev + b_hh), g ∈ {tanh, relu} (LN on both terms with layer norm).
        LSTM:  z = x̂ + W_hh h_prev + b_hh; i, f, o = σ(z_i [+ w_ci c_prev], z_f [+ w_cf c_prev],
               z_o [+ w_co c]); g = tanh(z_g); c = f c_prev + i g; h = o tanh(c) (LN(c) with
               layer norm).
        GRU:   r, z = σ(x̂_r + W_hr h_prev + b_hr, x̂_z + W_hz h_prev + b_hz);
               n = tanh(x̂_n + r ⊙ (W_hn h_prev + b_hn)) (reset_after) or
               tanh(x̂_n + W_hn (r ⊙ h_prev) + b_hn) (Cho 2014); h = (1 − z) n + z h_prev.
        Zoneout in evaluation keeps the expectation s = p s_prev + (1 − p) s̃.
        """
        H = self.hidden_size
        if self.kind == "lstm":
            hp = F.linear(h, self.weight_hh, self.bias_hh)
            if self.layer_norm:
                hp = _ln(hp, self.ln_hh_weight, self.ln_hh_bias, 4 * H)
            z = xp + hp
            z_i, z_f, z_g, z_o = (
                z[..., :H],
                z[..., H : 2 * H],
                z[..., 2 * H : 3 * H],
                z[..., 3 * H :],
            )
            if self.peephole:
                z_i = z_i + self.weight_ci * c
                z_f = z_f + self.weight_cf * c
            c_new = torch.sigmoid(z_f) * c + torch.sigmoid(z_i) * torch.tanh(z_g)
            if self.peephole:
                z_o = z_o + self.weight_co * c_new
            c_out = _ln(c_new, self.ln_c_weight, self.ln_c_bias, H) if self.layer_norm else c_new
            h_new = torch.sigmoid(z_o) * torch.tanh(c_out)
        elif self.kind == "gru":
            x_r, x_z, x_n = xp[..., :H], xp[..., H : 2 * H], xp[..., 2 * H :]
            if self.reset_after:
                hp = F.linear(h, self.weight_hh, self.bias_hh)
                if self.layer_norm:
                    hp = _ln(hp, self.ln_hh_weight, self.ln_hh_bias, H)
                r = torch.sigmoid(x_r + hp[..., :H])
                zg = torch.sigmoid(x_z + hp[..., H : 2 * H])
                n = torch.tanh(x_n + r * hp[..., 2 * H :])
            else:
                hp = F.linear(h, self.weight_hh[: 2 * H], self.bias_hh[: 2 * H])
                if self.layer_norm:
                    hp = _ln(hp, self.ln_hh_weight[: 2 * H], self.ln_hh_bias[: 2 * H], H)
                r = torch.sigmoid(x_r + hp[..., :H])
                zg = torch.sigmoid(x_z + hp[..., H:])
                hn = F.linear(r * h, self.weight_hh[2 * H :], self.bias_hh[2 * H :])
                if self.layer_norm:
                    hn = _ln(hn, self.ln_hh_weight[2 * H :], self.ln_hh_bias[2 * H :], H)
                n = torch.tanh(x_n + hn)
            h_new = (1 - zg) * n + zg * h
            c_new = h_new
        else:
            hp = F.linear(h, self.weight_hh, self.bias_hh)
            if self.layer_norm:
                hp = _ln(hp, self.ln_hh_weight, self.ln_hh_bias, H)
            pre = xp + hp
            h_new = torch.relu(pre) if self.relu else torch.tanh(pre)
            c_new = h_new
        if self.zoneout > 0.0:
            h_new = h_new + self.zoneout * (h - h_new)
            c_new = c_new + self.zoneout * (c - c_new) if self.kind == "lstm" else h_new
        return h_new, c_new

    def forward(
        self, x: Tensor, lengths: Tensor, h: Tensor, c: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        T = x.shape[1]
        t_index = torch.arange(T, device=x.device).unsqueeze(0)  # (1, T)
        L = lengths.unsqueeze(1)  # (B, 1)
        if self.reverse:  # within each sequence's own length; padding stays at the end
            rev = torch.where(t_index < L, L - 1 - t_index, t_index)  # (B, T)
            x = x.gather(1, rev.unsqueeze(2).expand(x.shape[0], T, x.shape[2]))
        valid = (t_index < L).unsqueeze(2).to(x.dtype)  # (B, T, 1)
        xp = self.project(x)  # (B, T, G·H): one GEMM for every step
        outputs: list[Tensor] = []
        for t in range(T):
            m = valid[:, t]  # (B, 1)
            h_new, c_new = self.step(xp[:, t], h, c)
            h = h + m * (h_new - h)  # frozen once the sequence has ended
            c = c + m * (c_new - c)
            outputs.append(h_new * m)
        y = torch.stack(outputs, 1)  # (B, T, H)
        if self.reverse:
            y = y.gather(1, rev.unsqueeze(2).expand(y.shape[0], T, y.shape[2]))
        return y, h, c


class Stack(nn.Module):
    """Layers × directions of an rnnkit ``RNN``/``LSTM``/``GRU``, batch-first, torch's state
    layout: ``forward(x (B, T, I), lengths (B,), h (L·D, B, H), c (L·D, B, H))`` →
    ``(y (B, T, D·H), h_n, c_n)`` (``c`` is ``h`` again for the GRU and Elman RNN)."""

    num_directions: Final[int]

    def __init__(self, directions: list[Direction], num_directions: int):
        super().__init__()
        self.directions = nn.ModuleList(directions)
        self.num_directions = num_directions

    def forward(
        self, x: Tensor, lengths: Tensor, h: Tensor, c: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        inp = x
        pending: list[Tensor] = []
        hs: list[Tensor] = []
        cs: list[Tensor] = []
        for idx, direction in enumerate(self.directions):
            y, h_n, c_n = direction(inp, lengths, h[idx], c[idx])
            pending.append(y)
            hs.append(h_n)
            cs.append(c_n)
            if len(pending) == self.num_directions:
                inp = torch.cat(pending, -1)
                pending = []
        return inp, torch.stack(hs, 0), torch.stack(cs, 0)

    def step(self, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One time step of a unidirectional stack, ``x (B, I)`` → ``(y (B, H), h_n, c_n)``
        (eager only: traced into a loop-free graph)."""
        if self.num_directions != 1:
            raise ExportError("a bidirectional layer has no one-step form")
        hs, cs = [], []
        inp = x
        for idx, direction in enumerate(self.directions):
            inp, c_n = direction.step(direction.project(inp), h[idx], c[idx])
            hs.append(inp)
            cs.append(c_n)
        return inp, torch.stack(hs, 0), torch.stack(cs, 0)


def exportable_layer(layer: nn.Module, name: str = "rnn", script: bool = True) -> Stack:
    """A :class:`Stack` over the parameters of an rnnkit ``RNN``/``LSTM``/``GRU`` (scripted, so
    its time loop exports as an ONNX ``Loop``, unless ``script=False``)."""
    from rnnkit.layers import RecurrentLayer

    if not isinstance(layer, RecurrentLayer):
        raise ExportError(
            f"module {name!r} ({type(layer).__name__}) is not an rnnkit RNN/LSTM/GRU layer; "
            "export knows those (torch.nn layers: swap in the rnnkit drop-in)"
        )
    if layer.learn_init_state:
        raise ExportError(
            f"module {name!r}: learn_init_state=True is not exportable yet (the learned h_0 "
            "would have to become the runner's initial state)"
        )
    D = 2 if layer.bidirectional else 1
    directions = [
        Direction(cell, layer._params(i), reverse=(i % D == 1), zoneout=layer.zoneout)
        for i, cell in enumerate(layer._cells)
    ]
    stack = Stack(directions, D).eval()
    if not script:
        return stack
    with warnings.catch_warnings():  # deprecated in favour of torch.export, which cannot loop
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.script(stack)


def exportable_cell(cell: RecurrentCell, name: str = "cell") -> Direction:
    """A :class:`Direction` (for its :meth:`~Direction.step`) over a single rnnkit cell."""
    if not isinstance(cell, (RNNCell, LSTMCell, GRUCell)):
        raise ExportError(
            f"module {name!r} ({type(cell).__name__}) is not an rnnkit RNN/LSTM/GRU cell"
        )
    return Direction(cell, cell.own_params()).eval()
