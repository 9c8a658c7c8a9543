"""Recurrent layers over the time loop, and drop-in ``RNN`` / ``LSTM`` / ``GRU``.

* :func:`run_direction` (from :mod:`rnnkit.time_loop`, re-exported here with the padded-sequence
  helpers of :mod:`rnnkit.sequence`) is the one time loop over any cell.
* :class:`Recurrent` wraps one cell in that loop (batch-first, optional ``lengths`` and
  ``reverse``); :class:`Bidirectional` runs two of them in opposite directions.
* :class:`RNN`, :class:`LSTM`, :class:`GRU` mirror ``torch.nn`` exactly (constructor, defaults,
  ``PackedSequence``, ``(h_n, c_n)``, parameter names) and add the extras of the cells plus
  recurrent regularisers. When the configuration is one torch's fused kernel computes, they call
  it (same numbers, cuDNN/oneDNN speed); otherwise they run :func:`run_direction`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import _VF, Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from rnnkit import fast as _fast
from rnnkit.cells import GRUCell, LSTMCell, RecurrentCell, RNNCell
from rnnkit.runtime import cpu_has_native_bf16
from rnnkit.sequence import check_lengths, reverse_padded
from rnnkit.state import LSTMState, as_lstm_state, map_state
from rnnkit.time_loop import run_direction

__all__ = [
    "run_direction",
    "reverse_padded",
    "check_lengths",
    "Recurrent",
    "Bidirectional",
    "RecurrentLayer",
    "RNN",
    "LSTM",
    "GRU",
]


def _check_sequence_input(name: str, x: Tensor, input_size: int, dtype: torch.dtype) -> None:
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} expected a Tensor input; got {type(x).__name__}")
    if x.dim() != 3 or x.shape[-1] != input_size:
        raise ValueError(
            f"{name} expected input of shape (batch, seq_len, {input_size}); got {tuple(x.shape)}"
        )
    if x.dtype != dtype:
        raise ValueError(
            f"{name} expected input dtype {dtype} (the parameters' dtype); got {x.dtype}"
        )
    if x.shape[1] == 0:
        raise ValueError(f"{name} got an empty sequence (seq_len 0)")


def _fused_kernel_needs_fp32(x: Tensor) -> bool:
    """Under a CPU bf16 autocast without native bf16, torch's fused LSTM kernel cannot run."""
    return (
        x.device.type == "cpu"
        and torch.get_autocast_dtype("cpu") == torch.bfloat16
        and not cpu_has_native_bf16()
    )


class Recurrent(nn.Module):
    """Run one cell over a batch-first sequence: ``forward(x, state=None, lengths=None)``.

    ``x (B, T, I)`` → ``(y (B, T, H), final_state)``. See :func:`run_direction` for lengths and
    ``reverse``. Works with any :class:`~rnnkit.cells.RecurrentCell`.
    """

    def __init__(self, cell: RecurrentCell, reverse: bool = False):
        super().__init__()
        self.cell = cell
        self.reverse = reverse

    def forward(self, x: Tensor, state=None, lengths=None):
        _check_sequence_input("Recurrent", x, self.cell.input_size, self.cell.weight_ih.dtype)
        B, T = x.shape[:2]
        if lengths is not None:
            lengths = check_lengths(lengths, B, T)
        if state is None:
            state = self.cell.init_state(B, x.device, x.dtype)
        elif self.cell.is_lstm:
            state = as_lstm_state(state)
        self.cell.check_state(state, B)
        y, final, _ = run_direction(self.cell, x, state, lengths, self.reverse)
        return y, final

    def extra_repr(self) -> str:
        return "reverse=True" if self.reverse else ""


class Bidirectional(nn.Module):
    """Two :class:`Recurrent` passes, one forward and one backward, outputs concatenated.

    ``forward(x, state=None, lengths=None)`` → ``(y (B, T, H_f + H_b), (state_f, state_b))``.
    With ``lengths`` the backward pass starts at each sequence's own last step.
    """

    def __init__(self, forward_cell: RecurrentCell, backward_cell: RecurrentCell):
        super().__init__()
        self.forward_layer = Recurrent(forward_cell)
        self.backward_layer = Recurrent(backward_cell, reverse=True)

    def forward(self, x: Tensor, state=None, lengths=None):
        s_f, s_b = state if state is not None else (None, None)
        y_f, s_f = self.forward_layer(x, s_f, lengths)
        y_b, s_b = self.backward_layer(x, s_b, lengths)
        return torch.cat([y_f, y_b], -1), (s_f, s_b)


# ---------------------------------------------------------------------------------------------
# torch.nn-compatible layers
# ---------------------------------------------------------------------------------------------
class RecurrentLayer(nn.Module):
    """Common base of :class:`RNN`, :class:`LSTM` and :class:`GRU` (torch.nn's ``RNNBase``).

    Parameters live on the layer under torch's names (``weight_ih_l0``, ``bias_hh_l1_reverse``,
    plus ``weight_ci_l0`` for peepholes and ``ln_ih_weight_l0`` … for layer norm) so state dicts
    move between rnnkit and ``torch.nn`` both ways when the extras are off. One cell per layer and
    direction supplies the step math; it reads the layer's parameters at each call.

    Extras beyond torch: ``dropout_mode="variational"`` (one dropout mask per sequence between
    layers; Gal & Ghahramani 2016), ``weight_drop`` (DropConnect on W_hh, one mask per forward;
    Merity et al. 2018), ``zoneout`` (Krueger et al. 2017), ``learn_init_state`` (trainable h_0,
    c_0), ``lengths=`` instead of packing, and ``return_cell_states`` (LSTM).
    """

    mode: str = ""
    #: the cell each layer and direction is built of (set by the subclasses)
    cell_class: type[RecurrentCell] = RecurrentCell

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device=None,
        dtype=None,
        *,
        dropout_mode: str = "standard",
        weight_drop: float = 0.0,
        zoneout: float = 0.0,
        learn_init_state: bool = False,
        return_cell_states: bool = False,
        **cell_options,
    ):
        super().__init__()
        if proj_size:
            raise ValueError("proj_size is not supported by rnnkit layers; use proj_size=0")
        if num_layers < 1:
            raise ValueError(f"num_layers must be at least 1; got {num_layers}")
        for label, p in (("dropout", dropout), ("weight_drop", weight_drop), ("zoneout", zoneout)):
            if not (isinstance(p, (int, float)) and 0.0 <= p <= 1.0):
                raise ValueError(f"{label} must be a probability in [0, 1]; got {p!r}")
        if dropout_mode not in ("standard", "variational"):
            raise ValueError(
                f"dropout_mode must be 'standard' or 'variational'; got {dropout_mode!r}"
            )
        if return_cell_states and self.mode != "LSTM":
            raise ValueError("return_cell_states is only meaningful for LSTM")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.proj_size = 0
        self.dropout_mode = dropout_mode
        self.weight_drop = float(weight_drop)
        self.zoneout = float(zoneout)
        self.learn_init_state = learn_init_state
        self.return_cell_states = return_cell_states
        self.cell_options = dict(cell_options)
        # Set False to force the reference time loop even where the fused kernel applies
        # (tests and benchmarks use it to compare the two paths).
        self.allow_fused = True
        # Set False to run the reference loop instead of rnnkit.fast (hand-written BPTT).
        self.allow_fast = True
        num_directions = 2 if bidirectional else 1
        kw = {"device": device, "dtype": dtype}

        self._cells: list[RecurrentCell] = []  # plain list: the layer owns the parameters
        self._param_names: list[list[tuple[str, str]]] = []  # per cell: (cell name, layer name)
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else hidden_size * num_directions
            for direction in range(num_directions):
                suffix = f"_l{layer}" + ("_reverse" if direction == 1 else "")
                cell = self.cell_class(layer_input, hidden_size, bias, **cell_options, **kw)
                names = []
                for name, param in cell.named_parameters(recurse=False):
                    self.register_parameter(name + suffix, param)
                    names.append((name, name + suffix))
                self._cells.append(cell)
                self._param_names.append(names)
        if learn_init_state:
            shape = (num_layers * num_directions, 1, hidden_size)
            self.init_h = nn.Parameter(torch.zeros(shape, **kw))
            if self.mode == "LSTM":
                self.init_c = nn.Parameter(torch.zeros(shape, **kw))

    # -- construction -------------------------------------------------------------------------
    def reset_parameters(self) -> None:
        """Re-initialise every cell as its ``reset_parameters`` documents; zero learned h_0."""
        for cell, names in zip(self._cells, self._param_names):
            for cell_name, layer_name in names:  # point the cell at the layer's current tensors
                cell._parameters[cell_name] = getattr(self, layer_name)
            cell.reset_parameters()
        if self.learn_init_state:
            nn.init.zeros_(self.init_h)
            if self.mode == "LSTM":
                nn.init.zeros_(self.init_c)

    def flatten_parameters(self) -> None:
        """No-op kept for drop-in compatibility with ``torch.nn.RNNBase``."""

    @property
    def all_weights(self) -> list[list[Tensor]]:
        return [[getattr(self, ln) for _, ln in names] for names in self._param_names]

    def _params(self, index: int) -> dict[str, Tensor]:
        return {cn: getattr(self, ln) for cn, ln in self._param_names[index]} | (
            {} if self.bias else {"bias_ih": None, "bias_hh": None}
        )

    @property
    def _fusable(self) -> bool:
        """True when torch's fused kernel computes exactly this configuration."""
        cell = self._cells[0]
        if getattr(cell, "layer_norm", False) or getattr(cell, "peephole", False):
            return False
        if isinstance(cell, GRUCell) and not cell.reset_after:
            return False
        device = getattr(self, self._param_names[0][0][1]).device
        if self.allow_fast and _fast.prefers_fast(self.mode, cell, device):
            return False  # e.g. torch's GRU on CPU is a per-step loop the fast path beats
        return self.allow_fused and not self.zoneout and not self.return_cell_states

    # -- forward ------------------------------------------------------------------------------
    def forward(self, input, hx=None, lengths=None):
        """Same contract as ``torch.nn.RNN/LSTM/GRU.forward``, plus ``lengths`` for padded input.

        Returns ``(output, h_n)`` (``(output, (h_n, c_n))`` for LSTM); with
        ``return_cell_states=True`` a third element holds the top layer's cell state at every
        step, laid out like ``output``.
        """
        name = type(self).__name__
        is_lstm = self.mode == "LSTM"
        packed = isinstance(input, PackedSequence)
        unbatched = False
        if packed:
            if lengths is not None:
                raise ValueError("pass either a PackedSequence or lengths=, not both")
            x, lengths = pad_packed_sequence(input, batch_first=True)
        else:
            if not isinstance(input, Tensor):
                raise ValueError(
                    f"{name} expected a Tensor or PackedSequence; got {type(input).__name__}"
                )
            if input.dim() == 2:
                unbatched = True
                x = input.unsqueeze(0)
            elif input.dim() == 3:
                x = input if self.batch_first else input.transpose(0, 1)
            else:
                layout = (
                    "(batch, seq_len, features)"
                    if self.batch_first
                    else "(seq_len, batch, features)"
                )
                raise ValueError(
                    f"{name} expected a 3-D input {layout} or 2-D unbatched (seq_len, features); "
                    f"got {input.dim()}-D shape {tuple(input.shape)}"
                )
        dtype = getattr(self, self._param_names[0][0][1]).dtype
        _check_sequence_input(name, x, self.input_size, dtype)
        B, T = x.shape[:2]
        if lengths is not None:
            lengths = check_lengths(lengths, B, T)

        state = self._initial_state(hx, B, x, unbatched)
        # Under mixed precision rnnkit's own cells and hand-written BPTT run in the weights'
        # precision (their backward is written for one dtype), and so does torch's fused kernel
        # where oneDNN cannot build it in bf16 (a CPU without native bf16)
        if torch.is_autocast_enabled(x.device.type) and (
            not self._fusable or _fused_kernel_needs_fp32(x)
        ):
            with torch.autocast(x.device.type, enabled=False):
                x, state = x.to(dtype), map_state(lambda t: t.to(dtype), state)
                y, final, cs = self._forward_any(x, state, lengths)
        else:
            y, final, cs = self._forward_any(x, state, lengths)

        if packed:
            output = _repack_like(y, lengths, input)
            cs = _repack_like(cs, lengths, input) if cs is not None else None
        elif unbatched:
            output = y.squeeze(0)
            final = map_state(lambda t: t.squeeze(1), final)
            cs = cs.squeeze(0) if cs is not None else None
        else:
            output = y if self.batch_first else y.transpose(0, 1)
            if cs is not None and not self.batch_first:
                cs = cs.transpose(0, 1)
        final = tuple(final) if is_lstm else final
        if self.return_cell_states:
            return output, final, cs
        return output, final

    def _initial_state(self, hx, batch_size: int, x: Tensor, unbatched: bool):
        """Validate ``hx`` (or build it) as ``(L·D, B, H)`` tensors; LSTMState for LSTM."""
        D = 2 if self.bidirectional else 1
        expected = (self.num_layers * D, batch_size, self.hidden_size)
        is_lstm = self.mode == "LSTM"
        if hx is None:
            if self.learn_init_state:
                h = self.init_h.expand(-1, batch_size, -1)
                return LSTMState(h, self.init_c.expand(-1, batch_size, -1)) if is_lstm else h
            h = torch.zeros(expected, device=x.device, dtype=x.dtype)
            return LSTMState(h, torch.zeros_like(h)) if is_lstm else h
        if is_lstm:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise ValueError("LSTM expected hx as a tuple (h_0, c_0)")
            hx = LSTMState(*hx)
        if unbatched:
            hx = map_state(lambda t: t.unsqueeze(1) if t.dim() == 2 else t, hx)
        parts = (("h_0", hx.h), ("c_0", hx.c)) if is_lstm else (("h_0", hx),)
        for label, t in parts:
            if not isinstance(t, Tensor) or tuple(t.shape) != expected:
                got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
                raise ValueError(
                    f"{type(self).__name__} expected {label} of shape {expected} "
                    f"(num_layers*num_directions, batch, hidden_size); got {got}"
                )
            if t.dtype != x.dtype and not torch.is_autocast_enabled(x.device.type):
                raise ValueError(f"{label} has dtype {t.dtype}; expected {x.dtype} like the input")
        return hx

    def _dropout_between_layers(self, y: Tensor) -> Tensor:
        if not (self.training and self.dropout):
            return y
        if self.dropout_mode == "variational":  # one mask per sequence, shared by every step
            mask = torch.empty_like(y[:, :1]).bernoulli_(1 - self.dropout) / (1 - self.dropout)
            return y * mask
        return F.dropout(y, self.dropout, True)

    def _dropped(self, params: dict[str, Tensor]) -> dict[str, Tensor]:
        """DropConnect on the recurrent weights: one mask for the whole forward pass."""
        if self.weight_drop and self.training:
            params = dict(params)
            params["weight_hh"] = F.dropout(params["weight_hh"], self.weight_drop, True)
        return params

    def _forward_loop(self, x: Tensor, state, lengths):
        D = 2 if self.bidirectional else 1
        finals_h, finals_c = [], []
        cs = None
        for layer in range(self.num_layers):
            if layer > 0:
                x = self._dropout_between_layers(x)
            outs, cell_states = [], []
            for direction in range(D):
                idx = layer * D + direction
                s0 = LSTMState(state.h[idx], state.c[idx]) if self.mode == "LSTM" else state[idx]
                want_cs = self.return_cell_states and layer == self.num_layers - 1
                y, s, c = run_direction(
                    self._cells[idx],
                    x,
                    s0,
                    lengths,
                    reverse=direction == 1,
                    params=self._dropped(self._params(idx)),
                    zoneout=self.zoneout,
                    training=self.training,
                    return_cell_states=want_cs,
                    fast=self.allow_fast,
                )
                outs.append(y)
                cell_states.append(c)
                if self.mode == "LSTM":
                    finals_h.append(s.h)
                    finals_c.append(s.c)
                else:
                    finals_h.append(s)
            x = torch.cat(outs, -1) if D == 2 else outs[0]
            if self.return_cell_states and layer == self.num_layers - 1:
                cs = torch.cat(cell_states, -1) if D == 2 else cell_states[0]
        h_n = torch.stack(finals_h, 0)
        final = LSTMState(h_n, torch.stack(finals_c, 0)) if self.mode == "LSTM" else h_n
        return x, final, cs

    def _vf(self):
        if self.mode == "LSTM":
            return _VF.lstm
        if self.mode == "GRU":
            return _VF.gru
        return _VF.rnn_relu if self._cells[0].nonlinearity == "relu" else _VF.rnn_tanh

    def _flat_weights_for(self, layers: Sequence[int]) -> list[Tensor]:
        D = 2 if self.bidirectional else 1
        flat = []
        for layer in layers:
            for direction in range(D):
                p = self._dropped(self._params(layer * D + direction))
                flat += [p["weight_ih"], p["weight_hh"]]
                if self.bias:
                    flat += [p["bias_ih"], p["bias_hh"]]
        return flat

    def _forward_any(self, x: Tensor, state, lengths):
        """``(y, final, cs)`` from torch's fused kernel where the layer allows it (``cs`` is
        None there), else from rnnkit's time loop."""
        if self._fusable:
            return (*self._forward_fused(x, state, lengths), None)
        return self._forward_loop(x, state, lengths)

    def _forward_fused(self, x: Tensor, state, lengths):
        """Call torch's fused RNN kernel (oneDNN/cuDNN) on the layer's own parameters."""
        D = 2 if self.bidirectional else 1
        vf = self._vf()
        per_layer = self.training and self.dropout and self.dropout_mode == "variational"
        groups = (
            [[k] for k in range(self.num_layers)] if per_layer else [list(range(self.num_layers))]
        )
        finals_h, finals_c = [], []
        for group in groups:
            if group[0] > 0:
                x = self._dropout_between_layers(x)
            lo, hi = group[0] * D, (group[-1] + 1) * D
            hx = (state.h[lo:hi], state.c[lo:hi]) if self.mode == "LSTM" else state[lo:hi]
            flat = self._flat_weights_for(group)
            dropout = 0.0 if per_layer else self.dropout
            # the kernel's arguments after the state, the same in its packed and padded overloads
            kernel_args = (flat, self.bias, len(group), dropout, self.training, self.bidirectional)
            if lengths is not None:
                packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
                order = packed.sorted_indices
                hx = map_state(lambda t, order=order: t.index_select(1, order), hx)
                out = vf(packed.data, packed.batch_sizes, hx, *kernel_args)
                y_packed = PackedSequence(
                    out[0], packed.batch_sizes, order, packed.unsorted_indices
                )
                x, _ = pad_packed_sequence(y_packed, batch_first=True, total_length=x.shape[1])
                unsort = packed.unsorted_indices
                rest = [t.index_select(1, unsort) for t in out[1:]]
            else:
                out = vf(x, hx, *kernel_args, True)  # batch_first
                x, rest = out[0], list(out[1:])
            finals_h.append(rest[0])
            if self.mode == "LSTM":
                finals_c.append(rest[1])
        h_n = torch.cat(finals_h, 0)
        final = LSTMState(h_n, torch.cat(finals_c, 0)) if self.mode == "LSTM" else h_n
        return x, final

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        for key in ("dropout_mode", "weight_drop", "zoneout", "learn_init_state"):
            value = getattr(self, key)
            default = {"dropout_mode": "standard"}.get(
                key, 0.0 if key != "learn_init_state" else False
            )
            if value != default:
                s += f", {key}={value!r}"
        for key, value in self.cell_options.items():
            s += f", {key}={value!r}"
        return s


def _repack_like(y: Tensor, lengths: Tensor, like: PackedSequence) -> PackedSequence:
    """Pack batch-first ``y`` with the same batch order and ``batch_sizes`` as ``like``."""
    if like.sorted_indices is None:  # input was packed with enforce_sorted=True
        return pack_padded_sequence(y, lengths, batch_first=True, enforce_sorted=True)
    order = like.sorted_indices
    packed = pack_padded_sequence(
        y.index_select(0, order), lengths.index_select(0, order.cpu()), batch_first=True
    )
    return PackedSequence(packed.data, packed.batch_sizes, order, like.unsorted_indices)


class RNN(RecurrentLayer):
    """Elman RNN layer, drop-in for ``torch.nn.RNN``; extras: ``init="identity"``, ``layer_norm``.

    Each layer computes h_t = g(W_ih x_t + b_ih + W_hh h_{t−1} + b_hh) (see :class:`RNNCell`).
    """

    mode = "RNN"
    cell_class = RNNCell

    def __init__(
        self,
        *args,
        nonlinearity: str = "tanh",
        init: str = "default",
        layer_norm: bool = False,
        **kwargs,
    ):
        super().__init__(
            *args, nonlinearity=nonlinearity, init=init, layer_norm=layer_norm, **kwargs
        )


class LSTM(RecurrentLayer):
    """LSTM layer, drop-in for ``torch.nn.LSTM``; extras: ``forget_bias``, ``peephole``,
    ``layer_norm`` (see :class:`LSTMCell`), ``return_cell_states``."""

    mode = "LSTM"
    cell_class = LSTMCell

    def __init__(
        self,
        *args,
        forget_bias: float = 0.0,
        peephole: bool = False,
        layer_norm: bool = False,
        **kwargs,
    ):
        super().__init__(
            *args, forget_bias=forget_bias, peephole=peephole, layer_norm=layer_norm, **kwargs
        )


class GRU(RecurrentLayer):
    """GRU layer, drop-in for ``torch.nn.GRU``; extras: ``reset_after=False`` (Cho 2014 form),
    ``layer_norm`` (see :class:`GRUCell`)."""

    mode = "GRU"
    cell_class = GRUCell

    def __init__(self, *args, reset_after: bool = True, layer_norm: bool = False, **kwargs):
        super().__init__(*args, reset_after=reset_after, layer_norm=layer_norm, **kwargs)
