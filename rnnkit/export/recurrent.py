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

import contextlib
import warnings
from typing import Final

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.cells import LN_EPS, GRUCell, LSTMCell, RecurrentCell, RNNCell

__all__ = [
    "Direction",
    "ExportError",
    "OnnxStack",
    "Stack",
    "exportable_cell",
    "exportable_layer",
    "fused_operators",
    "onnx_operator_fits",
]


class ExportError(ValueError):
    """A model (or one of its modules) that cannot be exported, with the reason."""


def _ln(
    x: Tensor, weight: Tensor, bias: Tensor, size: int, chunks: int = 1, eps: float = 1e-5
) -> Tensor:
    """LN of each of ``chunks`` (1–3) ``size``-wide blocks of the last axis, then the blocks'
    γ, β side by side: LN(a) = γ ⊙ (a − mean(a)) / sqrt(var(a) + ε) + β, statistics over one
    block. ``eps`` must equal :data:`rnnkit.cells.LN_EPS` (checked at import; TorchScript reads
    no globals). The blocks are sliced one by one, not split into a list: after inlining the
    branch folds away, where a list would become a nested ONNX loop inside the time loop."""
    if chunks == 1:
        return F.layer_norm(x, [size], weight, bias, eps)
    parts = [
        F.layer_norm(x[..., :size], [size], None, None, eps),
        F.layer_norm(x[..., size : 2 * size], [size], None, None, eps),
    ]
    if chunks == 3:
        parts.append(F.layer_norm(x[..., 2 * size :], [size], None, None, eps))
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
    ln_chunks: Final[int]

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
        self.ln_chunks = 3 if self.kind == "gru" else 1
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
            xp = _ln(xp, self.ln_ih_weight, self.ln_ih_bias, self.ln_size, self.ln_chunks)
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
                    hp = _ln(hp, self.ln_hh_weight, self.ln_hh_bias, H, 3)
                r = torch.sigmoid(x_r + hp[..., :H])
                zg = torch.sigmoid(x_z + hp[..., H : 2 * H])
                n = torch.tanh(x_n + r * hp[..., 2 * H :])
            else:
                hp = F.linear(h, self.weight_hh[: 2 * H], self.bias_hh[: 2 * H])
                if self.layer_norm:
                    hp = _ln(hp, self.ln_hh_weight[: 2 * H], self.ln_hh_bias[: 2 * H], H, 2)
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
        valid = (t_index < L).t().unsqueeze(2).to(x.dtype)  # (T, B, 1)
        # one GEMM for every step, time-major so each step reads one contiguous block
        xp = self.project(x.transpose(0, 1))  # (T, B, G·H)
        outputs: list[Tensor] = []
        for t in range(T):
            m = valid[t]  # (B, 1)
            h_new, c_new = self.step(xp[t], h, c)
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


_FUSED = [True]


@contextlib.contextmanager
def fused_operators(enabled: bool):
    """Within the block, :func:`exportable_layer` uses ONNX's fused operators only if
    ``enabled`` (a graph cannot mix them with scripted loops: see :mod:`rnnkit.export.onnx_io`)."""
    _FUSED.append(enabled)
    try:
        yield
    finally:
        _FUSED.pop()


def exportable_layer(
    layer: nn.Module, name: str = "rnn", script: bool = True, fused: bool | None = None
) -> nn.Module:
    """The exportable form of an rnnkit ``RNN``/``LSTM``/``GRU``: onnxruntime's fused operator
    (:class:`OnnxStack`) where ONNX defines the cell and ``fused``, else a :class:`Stack`
    (scripted, so its time loop exports as an ONNX ``Loop``, unless ``script=False``)."""
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
    fused = _FUSED[-1] if fused is None else fused
    if fused and script and onnx_operator_fits(layer):
        return OnnxStack(layer).eval()
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


# ---------------------------------------------------------------------------------------------
# onnxruntime's own RNN kernels for the cells ONNX defines
# ---------------------------------------------------------------------------------------------
def _onnx_order(kind: str, t: Tensor, H: int) -> Tensor:
    """Gate blocks of a torch-ordered weight or bias in ONNX's order: LSTM i f g o → i o f c,
    GRU r z n → z r h; the Elman RNN has one block."""
    if kind == "lstm":
        i, f, g, o = t.split(H, 0)
        return torch.cat([i, o, f, g], 0)
    if kind == "gru":
        r, z, n = t.split(H, 0)
        return torch.cat([z, r, n], 0)
    return t


class _OnnxRecurrent(torch.autograd.Function):
    """One layer (both directions) as the ONNX ``LSTM``/``GRU``/``RNN`` operator.

    ``forward`` computes the operator's own definition in torch — gates in ONNX's order, weights
    ``W (D, G·H, I)``, ``R (D, G·H, H)``, ``B (D, 2·G·H)`` = [Wb | Rb], peepholes ``P (D, 3H)``
    (i, o, f) — so the traced values, and the parity check against rnnkit, prove the weight
    layout; ``symbolic`` writes the operator with ``sequence_lens``, so padded rows freeze and
    output 0 past their length, and the reverse direction starts at each row's last step.
    """

    @staticmethod
    def forward(ctx, x, lengths, h0, c0, W, R, B, P, kind, directions, relu, reset_after, peep):
        T = x.shape[0]
        H = R.shape[-1]
        t_index = torch.arange(T).unsqueeze(1)  # (T, 1)
        valid = (t_index < lengths.unsqueeze(0)).unsqueeze(2).to(x.dtype)  # (T, B, 1)
        ys, hs, cs = [], [], []
        for d in range(directions):
            xd = x
            if d == 1:  # read each row back to front within its own length
                rev = torch.where(t_index < lengths, lengths - 1 - t_index, t_index)  # (T, B)
                xd = x.gather(0, rev.unsqueeze(2).expand_as(x))
            Wb, Rb = B[d].chunk(2)
            xp = xd @ W[d].T + Wb  # (T, B, G·H)
            h, c = h0[d], c0[d]
            out = []
            for t in range(T):
                if kind == "lstm":
                    z = xp[t] + h @ R[d].T + Rb
                    zi, zo, zf, zc = z.split(H, -1)
                    if peep:
                        pi, po, pf = P[d].split(H)
                        zi, zf = zi + pi * c, zf + pf * c
                    c_new = torch.sigmoid(zf) * c + torch.sigmoid(zi) * torch.tanh(zc)
                    if peep:
                        zo = zo + po * c_new
                    h_new = torch.sigmoid(zo) * torch.tanh(c_new)
                elif kind == "gru":
                    xz, xr, xh = xp[t].split(H, -1)
                    Rz, Rr, Rh = R[d].split(H)
                    bz, br, bh = Rb.split(H)
                    zg = torch.sigmoid(xz + h @ Rz.T + bz)
                    r = torch.sigmoid(xr + h @ Rr.T + br)
                    if reset_after:
                        n = torch.tanh(xh + r * (h @ Rh.T + bh))
                    else:
                        n = torch.tanh(xh + (r * h) @ Rh.T + bh)
                    h_new = (1 - zg) * n + zg * h
                    c_new = c
                else:
                    pre = xp[t] + h @ R[d].T + Rb
                    h_new = torch.relu(pre) if relu else torch.tanh(pre)
                    c_new = c
                m = valid[t]
                h = h + m * (h_new - h)
                c = c + m * (c_new - c)
                out.append(h_new * m)
            y = torch.stack(out, 0)  # (T, B, H)
            if d == 1:
                y = y.gather(0, rev.unsqueeze(2).expand_as(y))
            ys.append(y)
            hs.append(h)
            cs.append(c)
        return torch.stack(ys, 1), torch.stack(hs, 0), torch.stack(cs, 0)  # (T, D, B, H) …

    @staticmethod
    def symbolic(g, x, lengths, h0, c0, W, R, B, P, kind, directions, relu, reset_after, peep):
        H = R.type().sizes()[-1]
        attrs = {
            "hidden_size_i": H,
            "direction_s": "bidirectional" if directions == 2 else "forward",
        }
        seq = g.op("Cast", lengths, to_i=6)  # int32, as the operator wants
        if kind == "lstm":
            inputs = [x, W, R, B, seq, h0, c0] + ([P] if peep else [])
            y, h_n, c_n = g.op("LSTM", *inputs, outputs=3, **attrs)
            return y, h_n, c_n
        if kind == "gru":
            attrs["linear_before_reset_i"] = 1 if reset_after else 0
            y, h_n = g.op("GRU", x, W, R, B, seq, h0, outputs=2, **attrs)
        else:
            attrs["activations_s"] = ["Relu" if relu else "Tanh"] * directions
            y, h_n = g.op("RNN", x, W, R, B, seq, h0, outputs=2, **attrs)
        return y, h_n, h_n


class OnnxStack(nn.Module):
    """The :class:`Stack` contract on onnxruntime's fused ``LSTM``/``GRU``/``RNN`` operators, one
    per layer: for the configurations ONNX defines (no layer norm, no zoneout). The exported
    graph has no per-step nodes at all, which is what makes batched scoring fast."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        cells = layer._cells
        cell = cells[0]
        self.kind = {"LSTM": "lstm", "GRU": "gru", "RNN": "rnn"}[layer.mode]
        self.num_layers = layer.num_layers
        self.directions = 2 if layer.bidirectional else 1
        self.relu = getattr(cell, "nonlinearity", "tanh") == "relu"
        self.reset_after = bool(getattr(cell, "reset_after", True))
        self.peephole = bool(getattr(cell, "peephole", False))
        H = layer.hidden_size
        G = cell.num_gates * H
        for k in range(self.num_layers):
            Ws, Rs, Bs, Ps = [], [], [], []
            for d in range(self.directions):
                p = layer._params(k * self.directions + d)
                w_ih = p["weight_ih"].detach()
                zeros = torch.zeros(G, dtype=w_ih.dtype)
                b_ih = p["bias_ih"].detach() if p["bias_ih"] is not None else zeros
                b_hh = p["bias_hh"].detach() if p["bias_hh"] is not None else zeros
                Ws.append(_onnx_order(self.kind, w_ih, H))
                Rs.append(_onnx_order(self.kind, p["weight_hh"].detach(), H))
                Bs.append(
                    torch.cat([_onnx_order(self.kind, b_ih, H), _onnx_order(self.kind, b_hh, H)])
                )
                if self.peephole:  # ONNX's P is (i, o, f)
                    Ps.append(torch.cat([p["weight_ci"], p["weight_co"], p["weight_cf"]]).detach())
                else:
                    Ps.append(torch.zeros(3 * H, dtype=w_ih.dtype))
            self.register_buffer(f"W{k}", torch.stack(Ws))
            self.register_buffer(f"R{k}", torch.stack(Rs))
            self.register_buffer(f"B{k}", torch.stack(Bs))
            self.register_buffer(f"P{k}", torch.stack(Ps))

    def forward(self, x: Tensor, lengths: Tensor, h: Tensor, c: Tensor):
        D = self.directions
        inp = x.transpose(0, 1)  # (T, B, I): the operator's layout
        hs, cs = [], []
        for k in range(self.num_layers):
            y, h_n, c_n = _OnnxRecurrent.apply(
                inp,
                lengths,
                h[k * D : (k + 1) * D],
                c[k * D : (k + 1) * D],
                getattr(self, f"W{k}"),
                getattr(self, f"R{k}"),
                getattr(self, f"B{k}"),
                getattr(self, f"P{k}"),
                self.kind,
                D,
                self.relu,
                self.reset_after,
                self.peephole,
            )
            T, _, B, H = y.shape
            inp = y.permute(0, 2, 1, 3).reshape(T, B, D * H)  # (T, B, D·H)
            hs.append(h_n)
            cs.append(c_n)
        return inp.transpose(0, 1), torch.cat(hs, 0), torch.cat(cs, 0)


def onnx_operator_fits(layer: nn.Module) -> bool:
    """Whether ONNX's own recurrent operator computes ``layer`` (no layer norm, no zoneout)."""
    cell = layer._cells[0]
    return not getattr(cell, "layer_norm", False) and not layer.zoneout
