"""Recurrent cells: one time step of the Elman RNN, the LSTM and the GRU.

Every cell is an ``nn.Module`` whose parameter names, shapes and gate order equal
``torch.nn.RNNCell`` / ``LSTMCell`` / ``GRUCell``, so a torch cell's ``state_dict`` loads unchanged
when the extras (peephole, layer norm, ...) are off.

A step is split in two so a time loop can hoist the input half out of the loop:

* ``project_input(x)`` computes the part that depends only on ``x_t`` (``W_ih x_t + b_ih``); it
  accepts any leading shape, so a layer projects all ``T`` steps with one matrix product;
* ``step(xp_t, state)`` adds the recurrent part and applies the nonlinearities.

Both take an optional ``params`` dict. Layers keep their parameters under torch's layer names
(``weight_hh_l0``) and pass them in; a cell used alone uses its own. ``forward(x, state)`` is the
two halves together.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.checks import check_positive
from rnnkit.state import LSTMState, as_lstm_state

__all__ = ["RecurrentCell", "RNNCell", "LSTMCell", "GRUCell", "layer_norm_chunks"]

LN_EPS = 1e-5


def layer_norm_chunks(x: Tensor, weight: Tensor, bias: Tensor, chunks: int) -> Tensor:
    """Layer-normalise each of ``chunks`` equal blocks of the last axis separately.

    LN(a) = γ ⊙ (a − mean(a)) / sqrt(var(a) + ε) + β, with mean and variance taken over one
    block (one gate's pre-activations). ``weight``/``bias`` hold the γ/β of all blocks side by side.
    """
    if chunks == 1:
        return F.layer_norm(x, (x.shape[-1],), weight, bias, LN_EPS)
    size = x.shape[-1] // chunks
    blocks = x.unflatten(-1, (chunks, size))
    normed = F.layer_norm(blocks, (size,), None, None, LN_EPS)
    return (normed * weight.view(chunks, size) + bias.view(chunks, size)).flatten(-2)


class RecurrentCell(nn.Module):
    """What every rnnkit cell shares: shape checks, state creation and ``forward``.

    Subclasses set ``num_gates``, ``is_lstm`` (and ``ln_chunks``) and implement ``step``.
    """

    num_gates: int = 1
    is_lstm: bool = False
    # Gate blocks the input projection's layer norm normalises apart (the GRU's r, z, n: 3).
    ln_chunks: int = 1
    layer_norm: bool = False

    def __init__(self, input_size: int, hidden_size: int, bias: bool, device=None, dtype=None):
        super().__init__()
        check_positive(input_size=input_size, hidden_size=hidden_size)
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bias
        kw = {"device": device, "dtype": dtype}
        gates = self.num_gates * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(gates, input_size, **kw))
        self.weight_hh = nn.Parameter(torch.empty(gates, hidden_size, **kw))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(gates, **kw))
            self.bias_hh = nn.Parameter(torch.empty(gates, **kw))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)

    # -- parameters -------------------------------------------------------------------------
    def param_names(self) -> list[str]:
        """Names of the parameters ``project_input``/``step`` read (None-valued ones included)."""
        return list(self._parameters)

    def own_params(self) -> dict[str, Tensor | None]:
        return {name: getattr(self, name) for name in self.param_names()}

    def _uniform_init(self) -> None:
        # torch's default for recurrent cells: every weight and bias ~ U(-1/sqrt(H), 1/sqrt(H)).
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def _add_layer_norm(self, sizes: dict[str, int], device, dtype) -> None:
        """Register the gain ``ln_{part}_weight`` and shift ``ln_{part}_bias`` of ``sizes[part]``
        units for each normalised part, in that order (values set by :meth:`_init_layer_norm`)."""
        kw = {"device": device, "dtype": dtype}
        for part, size in sizes.items():
            self.register_parameter(f"ln_{part}_weight", nn.Parameter(torch.empty(size, **kw)))
            self.register_parameter(f"ln_{part}_bias", nn.Parameter(torch.empty(size, **kw)))

    def _init_layer_norm(self) -> None:
        # Layer-norm gains start at 1 and shifts at 0, so LN starts as plain standardisation.
        for name, p in self.named_parameters(recurse=False):
            if name.startswith("ln_"):
                nn.init.ones_(p) if name.endswith("_weight") else nn.init.zeros_(p)

    # -- state ------------------------------------------------------------------------------
    def init_state(self, batch_size: int, device=None, dtype=None):
        """Zero state for ``batch_size`` sequences, on the parameters' device and dtype."""
        device = device if device is not None else self.weight_hh.device
        dtype = dtype if dtype is not None else self.weight_hh.dtype
        h = torch.zeros(batch_size, self.hidden_size, device=device, dtype=dtype)
        return LSTMState(h, torch.zeros_like(h)) if self.is_lstm else h

    def check_input(self, x: Tensor) -> None:
        name = type(self).__name__
        if not isinstance(x, Tensor):
            raise ValueError(f"{name} expected a Tensor input; got {type(x).__name__}")
        if x.dim() != 2 or x.shape[1] != self.input_size:
            raise ValueError(
                f"{name} expected input of shape (batch, {self.input_size}); got {tuple(x.shape)}"
            )
        if x.dtype != self.weight_ih.dtype:
            raise ValueError(
                f"{name} expected input dtype {self.weight_ih.dtype} (the parameters' dtype); "
                f"got {x.dtype}"
            )

    def check_state(self, state, batch_size: int) -> None:
        name = type(self).__name__
        expected = (batch_size, self.hidden_size)
        parts = (("h", state.h), ("c", state.c)) if self.is_lstm else (("state", state),)
        for label, t in parts:
            if not isinstance(t, Tensor) or tuple(t.shape) != expected:
                got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
                raise ValueError(f"{name} expected {label} of shape {expected}; got {got}")

    def forward(self, x: Tensor, state=None):
        """One time step: ``x (B, I)``, ``state`` or None (zeros) → ``(h (B, H), new_state)``.

        A 1-D input ``(I,)`` is treated as a batch of one and returned unbatched, like torch.
        """
        unbatched = isinstance(x, Tensor) and x.dim() == 1
        if unbatched:
            x = x.unsqueeze(0)
            if state is not None:
                state = _map(lambda t: t.unsqueeze(0), state)
        self.check_input(x)
        if state is None:
            state = self.init_state(x.shape[0], x.device, x.dtype)
        elif self.is_lstm:
            state = as_lstm_state(state)
        self.check_state(state, x.shape[0])
        h, state = self.step(self.project_input(x), state)
        if unbatched:
            h, state = h.squeeze(0), _map(lambda t: t.squeeze(0), state)
        return h, state

    def project_input(self, x: Tensor, params: dict | None = None) -> Tensor:
        """x̂ = W_ih x + b_ih for every step at once; with ``layer_norm``, x̂ is normalised over
        each of its :attr:`ln_chunks` gate blocks apart: x̂ = LN(W_ih x + b_ih)."""
        p = params if params is not None else self.own_params()
        xp = _affine(x, p["weight_ih"], p["bias_ih"])
        if self.layer_norm:
            xp = layer_norm_chunks(xp, p["ln_ih_weight"], p["ln_ih_bias"], self.ln_chunks)
        return xp

    def _recurrent_term(self, h_prev: Tensor, p: dict) -> Tensor:
        """â = W_hh h_{t−1} + b_hh, or with ``layer_norm`` LN(W_hh h_{t−1} + b_hh) over all gates
        as one block (the Elman RNN and the LSTM)."""
        hp = _affine(h_prev, p["weight_hh"], p["bias_hh"])
        if self.layer_norm:
            hp = layer_norm_chunks(hp, p["ln_hh_weight"], p["ln_hh_bias"], 1)
        return hp

    def step(self, xp: Tensor, state, params: dict | None = None):
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}" + ("" if self.bias else ", bias=False")


def _map(fn, state):
    return LSTMState(fn(state[0]), fn(state[1])) if isinstance(state, tuple) else fn(state)


def _affine(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    return F.linear(x, weight, bias)


class RNNCell(RecurrentCell):
    r"""Elman RNN step.

    .. math:: h_t = g(W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh}),\quad g \in \{\tanh, \mathrm{relu}\}

    With ``layer_norm=True`` both products are layer-normalised before they are added:
    h_t = g(LN(W_ih x_t + b_ih) + LN(W_hh h_{t-1} + b_hh)).

    Initialisation (``reset_parameters``): every weight and bias ~ U(−1/√H, 1/√H), as torch.
    ``init="identity"`` (the IRNN of Le, Jaitly & Hinton 2015) then sets W_hh = I and both biases
    to 0, so at the start a ReLU RNN copies its state forward and gradients neither vanish nor
    explode along the identity path.
    """

    num_gates = 1

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        nonlinearity: str = "tanh",
        init: str = "default",
        layer_norm: bool = False,
        device=None,
        dtype=None,
    ):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu'; got {nonlinearity!r}")
        if init not in ("default", "identity"):
            raise ValueError(f"init must be 'default' or 'identity'; got {init!r}")
        super().__init__(input_size, hidden_size, bias, device, dtype)
        self.nonlinearity = nonlinearity
        self.init = init
        self.layer_norm = layer_norm
        if layer_norm:
            self._add_layer_norm({"ih": hidden_size, "hh": hidden_size}, device, dtype)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """U(−1/√H, 1/√H) everywhere; identity init: W_hh = I, biases 0; LN gain 1, shift 0."""
        self._uniform_init()
        if self.init == "identity":
            with torch.no_grad():
                self.weight_hh.copy_(torch.eye(self.hidden_size))
                if self.bias:
                    self.bias_ih.zero_()
                    self.bias_hh.zero_()
        self._init_layer_norm()

    def step(self, xp: Tensor, state: Tensor, params: dict | None = None):
        p = params if params is not None else self.own_params()
        hp = self._recurrent_term(state, p)
        z = xp + hp
        h = torch.tanh(z) if self.nonlinearity == "tanh" else torch.relu(z)
        return h, h

    def extra_repr(self) -> str:
        s = super().extra_repr()
        if self.nonlinearity != "tanh":
            s += f", nonlinearity={self.nonlinearity!r}"
        if self.init != "default":
            s += f", init={self.init!r}"
        return s + (", layer_norm=True" if self.layer_norm else "")


class LSTMCell(RecurrentCell):
    r"""Long short-term memory step (Hochreiter & Schmidhuber 1997; gates in torch's order i, f, g, o).

    .. math::
        z &= W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh} \\
        i &= \sigma(z_i),\; f = \sigma(z_f),\; g = \tanh(z_g),\; o = \sigma(z_o) \\
        c_t &= f \odot c_{t-1} + i \odot g \\
        h_t &= o \odot \tanh(c_t)

    ``g`` is the candidate cell state (C̃ in the lectures). The cell state ``c`` is updated only by
    elementwise gating, which is why gradients survive many steps when ``f`` is near 1.

    ``peephole=True`` (Gers & Schmidhuber 2000): the gates also see the cell state through
    diagonal weights: i = σ(z_i + w_ci ⊙ c_{t−1}), f = σ(z_f + w_cf ⊙ c_{t−1}),
    o = σ(z_o + w_co ⊙ c_t) (the output gate sees the new cell state).

    ``layer_norm=True`` (Ba, Kiros & Hinton 2016): z = LN(W_ih x_t + b_ih) + LN(W_hh h_{t−1} + b_hh)
    with LN over all 4H pre-activations, and h_t = o ⊙ tanh(LN(c_t)); each LN has a learnable
    gain (init 1) and shift (init 0).

    Initialisation: every weight and bias ~ U(−1/√H, 1/√H) as torch; peephole weights likewise.
    A non-zero ``forget_bias`` then sets the forget-gate slice of ``bias_ih`` to that value and of
    ``bias_hh`` to 0 (Gers et al. 2000; Jozefowicz et al. 2015 recommend 1.0) so the cell starts by
    remembering.
    """

    num_gates = 4
    is_lstm = True

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        forget_bias: float = 0.0,
        peephole: bool = False,
        layer_norm: bool = False,
        device=None,
        dtype=None,
    ):
        super().__init__(input_size, hidden_size, bias, device, dtype)
        self.forget_bias = float(forget_bias)
        self.peephole = peephole
        self.layer_norm = layer_norm
        kw = {"device": device, "dtype": dtype}
        H = hidden_size
        if peephole:
            for gate in ("i", "f", "o"):
                self.register_parameter(f"weight_c{gate}", nn.Parameter(torch.empty(H, **kw)))
        if layer_norm:
            self._add_layer_norm({"ih": 4 * H, "hh": 4 * H, "c": H}, device, dtype)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """U(−1/√H, 1/√H) everywhere; forget-gate bias = ``forget_bias`` if non-zero; LN 1/0."""
        self._uniform_init()
        H = self.hidden_size
        if self.forget_bias != 0.0 and self.bias:
            with torch.no_grad():
                self.bias_ih[H : 2 * H].fill_(self.forget_bias)
                self.bias_hh[H : 2 * H].zero_()
        self._init_layer_norm()

    def step(self, xp: Tensor, state: LSTMState, params: dict | None = None):
        p = params if params is not None else self.own_params()
        h_prev, c_prev = state
        hp = self._recurrent_term(h_prev, p)
        z_i, z_f, z_g, z_o = (xp + hp).chunk(4, dim=-1)
        if self.peephole:
            z_i = z_i + p["weight_ci"] * c_prev
            z_f = z_f + p["weight_cf"] * c_prev
        i, f, g = torch.sigmoid(z_i), torch.sigmoid(z_f), torch.tanh(z_g)
        c = f * c_prev + i * g
        if self.peephole:
            z_o = z_o + p["weight_co"] * c
        o = torch.sigmoid(z_o)
        c_out = layer_norm_chunks(c, p["ln_c_weight"], p["ln_c_bias"], 1) if self.layer_norm else c
        h = o * torch.tanh(c_out)
        return h, LSTMState(h, c)

    def extra_repr(self) -> str:
        s = super().extra_repr()
        if self.forget_bias:
            s += f", forget_bias={self.forget_bias}"
        return (
            s
            + (", peephole=True" if self.peephole else "")
            + (", layer_norm=True" if self.layer_norm else "")
        )


class GRUCell(RecurrentCell):
    r"""Gated recurrent unit step (Cho et al. 2014; gates in torch's order r, z, n).

    .. math::
        r &= \sigma(W_{ir} x + b_{ir} + W_{hr} h_{t-1} + b_{hr}) \\
        z &= \sigma(W_{iz} x + b_{iz} + W_{hz} h_{t-1} + b_{hz}) \\
        n &= \tanh(W_{in} x + b_{in} + r \odot (W_{hn} h_{t-1} + b_{hn}))
             \quad\text{(reset\_after=True, torch / cuDNN)} \\
        n &= \tanh(W_{in} x + b_{in} + W_{hn} (r \odot h_{t-1}) + b_{hn})
             \quad\text{(reset\_after=False, Cho 2014)} \\
        h_t &= (1 - z) \odot n + z \odot h_{t-1}

    The two forms differ only in where the reset gate acts: after the recurrent product (one GEMM
    for all three gates, which is why cuDNN uses it) or before it (the original paper). The
    lectures write the update as h_t = (1 − z′) ⊙ h_{t−1} + z′ ⊙ h̃_t with h̃ = n; that is this
    equation with z′ = 1 − z: torch's z is the "keep" gate, the lecture's z′ the "update" gate.

    ``layer_norm=True``: each gate block of W_ih x + b_ih and of the recurrent term is
    layer-normalised separately (per-gate LN, which works for both forms).

    Initialisation: every weight and bias ~ U(−1/√H, 1/√H), as torch; LN gain 1, shift 0.
    """

    num_gates = 3
    ln_chunks = 3

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        reset_after: bool = True,
        layer_norm: bool = False,
        device=None,
        dtype=None,
    ):
        super().__init__(input_size, hidden_size, bias, device, dtype)
        self.reset_after = reset_after
        self.layer_norm = layer_norm
        if layer_norm:
            self._add_layer_norm({"ih": 3 * hidden_size, "hh": 3 * hidden_size}, device, dtype)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """U(−1/√H, 1/√H) everywhere; LN gain 1, shift 0."""
        self._uniform_init()
        self._init_layer_norm()

    def step(self, xp: Tensor, state: Tensor, params: dict | None = None):
        p = params if params is not None else self.own_params()
        H = self.hidden_size
        h_prev = state
        x_r, x_z, x_n = xp.chunk(3, dim=-1)
        w_hh, b_hh = p["weight_hh"], p["bias_hh"]
        if self.reset_after:
            hp = _affine(h_prev, w_hh, b_hh)
            if self.layer_norm:
                hp = layer_norm_chunks(hp, p["ln_hh_weight"], p["ln_hh_bias"], 3)
            h_r, h_z, h_n = hp.chunk(3, dim=-1)
            r = torch.sigmoid(x_r + h_r)
            z = torch.sigmoid(x_z + h_z)
            n = torch.tanh(x_n + r * h_n)
        else:
            hp = _affine(h_prev, w_hh[: 2 * H], None if b_hh is None else b_hh[: 2 * H])
            if self.layer_norm:
                hp = layer_norm_chunks(hp, p["ln_hh_weight"][: 2 * H], p["ln_hh_bias"][: 2 * H], 2)
            h_r, h_z = hp.chunk(2, dim=-1)
            r = torch.sigmoid(x_r + h_r)
            z = torch.sigmoid(x_z + h_z)
            h_n = _affine(r * h_prev, w_hh[2 * H :], None if b_hh is None else b_hh[2 * H :])
            if self.layer_norm:
                h_n = layer_norm_chunks(
                    h_n, p["ln_hh_weight"][2 * H :], p["ln_hh_bias"][2 * H :], 1
                )
            n = torch.tanh(x_n + h_n)
        h = (1 - z) * n + z * h_prev
        return h, h

    def extra_repr(self) -> str:
        s = super().extra_repr()
        return (
            s
            + ("" if self.reset_after else ", reset_after=False")
            + (", layer_norm=True" if self.layer_norm else "")
        )
