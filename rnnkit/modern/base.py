"""What the parallel-in-time cells share: the step-cell contract and the stacked layer.

A cell here computes every gate from x_t alone, so the input half of all T steps is one matrix
product and only an elementwise (or, for mLSTM, per-head matrix) recurrence remains. Each cell
offers both paths side by side:

* ``sequence(x, state, lengths, path)``: the **parallel training path** over a whole batch-first
  sequence ``x (B, T, I)``, returning ``(y (B, T, H), final_state)``;
* ``step(u_t, state)`` after ``project_input(x_t)`` — together ``forward(x_t, state)`` — the
  **step path** for generation and truncated BPTT; :meth:`ParallelCell.loop` runs it over a
  sequence and is the oracle the parallel paths are tested against.

With ``lengths`` a sequence's state freezes after its last valid step and its outputs past the
end are zero, exactly as :func:`rnnkit.layers.run_direction` does for the classical cells.

:class:`StackedLayer` stacks ``num_layers`` cells (optionally bidirectional, with dropout between
layers) and keeps ``torch.nn``'s state layout: a tensor state gets a leading
``num_layers · num_directions`` axis, a tuple state (QRNN with a window of 2, mLSTM) is a tuple
of such stacked tensors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.checks import check_positive
from rnnkit.modern.scan import time_mask
from rnnkit.sequence import check_lengths, reverse_padded

__all__ = ["ParallelCell", "StackedLayer", "stack_states", "select_state"]


def _fields(state) -> list[Tensor]:
    return [state] if isinstance(state, Tensor) else list(state)


def _rebuild(like, fields: list[Tensor]):
    if isinstance(like, Tensor):
        return fields[0]
    return type(like)(*fields) if hasattr(like, "_fields") else tuple(fields)


def select_state(state, index: int):
    """The state of one layer·direction out of a stacked state."""
    return _rebuild(state, [t[index] for t in _fields(state)])


def stack_states(states: list):
    """Stack per-layer·direction states along a new leading axis (field by field for tuples)."""
    return _rebuild(states[0], [torch.stack(f, 0) for f in zip(*map(_fields, states))])


def where_state(mask: Tensor, new, old):
    """``new`` where ``mask`` (B, 1) is True, else ``old``, for every field of a state."""
    out = []
    for n, o in zip(_fields(new), _fields(old)):
        m = mask.view(mask.shape[0], *([1] * (n.dim() - 1)))
        out.append(torch.where(m, n, o))
    return _rebuild(new, out)


class ParallelCell(nn.Module):
    """One direction of one layer of a parallel-in-time cell (see the module docstring).

    Subclasses set ``paths`` (their ``sequence`` paths besides ``"loop"``), implement
    ``project_input``, ``step``, ``zero_state`` and ``parallel``, and document equations and
    initialisation.
    """

    paths: tuple[str, ...] = ()

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        check_positive(input_size=input_size, hidden_size=hidden_size)
        self.input_size = input_size
        self.hidden_size = hidden_size

    def _add_input_bias(self, rows: int, bias: bool, **kw) -> None:
        """The input projection's ``bias_ih (rows,)``, or that parameter registered as None when
        ``bias`` is off (``kw``: device and dtype)."""
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(rows, **kw))
        else:
            self.register_parameter("bias_ih", None)

    # -- state ------------------------------------------------------------------------------
    def _param(self) -> Tensor:
        return next(self.parameters())

    def zero_state(self, batch_size: int, device, dtype):
        return torch.zeros(batch_size, self.hidden_size, device=device, dtype=dtype)

    def init_state(self, batch_size: int, device=None, dtype=None):
        """Zero state for ``batch_size`` sequences, on the parameters' device and dtype."""
        p = self._param()
        return self.zero_state(
            batch_size,
            device if device is not None else p.device,
            dtype if dtype is not None else p.dtype,
        )

    def state_shapes(self, batch_size: int) -> list[tuple[int, ...]]:
        """Shapes of the state's tensors (one for a tensor state, one per field of a tuple)."""
        return [(batch_size, self.hidden_size)]

    def check_state(self, state, batch_size: int) -> None:
        want = self.state_shapes(batch_size)
        got = _fields(state) if isinstance(state, (Tensor, tuple, list)) else [state]
        shapes = [tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__ for t in got]
        if shapes != want:
            raise ValueError(
                f"{type(self).__name__} expected a state of shape(s) {want}; got {shapes}"
            )

    # -- the step path ----------------------------------------------------------------------
    def project_input(self, x: Tensor) -> Tensor:
        """Everything that depends on x_t alone, for any leading shape: ``(..., I) → (..., P)``."""
        raise NotImplementedError

    def step(self, u: Tensor, state):
        """One step from the projected input ``u (B, P)``: ``(h (B, H), new_state)``."""
        raise NotImplementedError

    def forward(self, x: Tensor, state=None):
        """One time step: ``x (B, I)``, ``state`` or None (zeros) → ``(h (B, H), new_state)``."""
        name = type(self).__name__
        if not isinstance(x, Tensor) or x.dim() != 2 or x.shape[1] != self.input_size:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(
                f"{name} expected input of shape (batch, {self.input_size}); got {got}"
            )
        if state is None:
            state = self.init_state(x.shape[0], x.device, x.dtype)
        self.check_state(state, x.shape[0])
        return self.step(self.project_input(x), state)

    def loop(self, x: Tensor, state, lengths: Tensor | None = None):
        """The step path over ``x (B, T, I)``: ``(y (B, T, H), final_state)``, lengths frozen."""
        u = self.project_input(x)  # (B, T, P): the input half of every step in one product
        mask = time_mask(lengths, x.shape[1], x.device)
        outputs = []
        for t, u_t in enumerate(u.unbind(1)):
            h, new_state = self.step(u_t, state)
            if mask is not None:
                new_state = where_state(mask[:, t], new_state, state)
                h = h * mask[:, t]
            state = new_state
            outputs.append(h)
        return torch.stack(outputs, 1), state

    # -- the parallel path ------------------------------------------------------------------
    def parallel(self, x: Tensor, state, lengths: Tensor | None, path: str):
        raise NotImplementedError

    def default_path(self, x: Tensor) -> str:
        return self.paths[0]

    def sequence(self, x: Tensor, state, lengths: Tensor | None = None, path: str = "auto"):
        """Run the whole sequence ``x (B, T, I)`` from ``state``: ``(y (B, T, H), final_state)``.

        ``path`` is ``"auto"``, ``"loop"`` (the step path) or one of the cell's ``paths``.
        """
        if path == "auto":
            path = self.default_path(x)
        if path == "loop":
            return self.loop(x, state, lengths)
        if path not in self.paths:
            raise ValueError(
                f"{type(self).__name__} path must be 'auto', 'loop' or one of {self.paths}; "
                f"got {path!r}"
            )
        return self.parallel(x, state, lengths, path)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}"


class StackedLayer(nn.Module):
    """Layers of one parallel cell: ``forward(input, state=None, lengths=None) → (output, state)``.

    Constructor and layout follow rnnkit's ``LSTM``/``GRU`` (and ``torch.nn``): ``input`` is
    ``(T, B, I)``, or ``(B, T, I)`` with ``batch_first=True``; ``output`` holds the top layer's
    outputs of both directions side by side; ``state`` stacks every layer·direction's state on a
    leading axis (index ``layer · D + direction``). ``reverse=True`` runs a unidirectional layer
    back to front (each sequence within its own length); ``bidirectional`` adds a reversed pass.
    ``dropout`` applies between layers in training, a fresh mask per element (``dropout_mode=
    "standard"``) or one mask per sequence shared by every step (``"variational"``, Gal &
    Ghahramani 2016), as rnnkit's LSTM. ``path`` picks the cells' sequence path
    (``"auto"``: the fastest available; ``"loop"``: the step path).
    """

    cell_class: type[ParallelCell] = ParallelCell

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        reverse: bool = False,
        path: str = "auto",
        device=None,
        dtype=None,
        *,
        dropout_mode: str = "standard",
        layer_norm: bool = False,
        weight_drop: float = 0.0,
        zoneout: float = 0.0,
        **cell_options,
    ):
        super().__init__()
        # accepted so one factory can pass every layer the same options; these cells have no
        # W_hh to drop-connect or normalise, and zoneout is not implemented for them
        for label, value, default in (
            ("layer_norm", layer_norm, False),
            ("weight_drop", weight_drop, 0.0),
            ("zoneout", zoneout, 0.0),
        ):
            if value != default:
                raise ValueError(
                    f"{type(self).__name__} does not support {label}={value!r} "
                    f"(it is an option of the LSTM/GRU/RNN layers)"
                )
        if dropout_mode not in ("standard", "variational"):
            raise ValueError(
                f"dropout_mode must be 'standard' or 'variational'; got {dropout_mode!r}"
            )
        if num_layers < 1:
            raise ValueError(f"num_layers must be at least 1; got {num_layers}")
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"dropout must be a probability in [0, 1]; got {dropout!r}")
        if reverse and bidirectional:
            raise ValueError("reverse=True is for a unidirectional layer; bidirectional has both")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.dropout_mode = dropout_mode
        self.bidirectional = bidirectional
        self.reverse = reverse
        self.path = path
        self.cell_options = dict(cell_options)
        D = 2 if bidirectional else 1
        self.cells = nn.ModuleList(
            self.cell_class(
                input_size if layer == 0 else hidden_size * D,
                hidden_size,
                bias=bias,
                device=device,
                dtype=dtype,
                **cell_options,
            )
            for layer in range(num_layers)
            for _ in range(D)
        )

    def reset_parameters(self) -> None:
        for cell in self.cells:
            cell.reset_parameters()

    def init_state(self, batch_size: int, device=None, dtype=None):
        """Zero state of every layer·direction, stacked: ``(num_layers · D, B, ...)``."""
        return stack_states([c.init_state(batch_size, device, dtype) for c in self.cells])

    def forward(self, input: Tensor, state=None, lengths=None):
        name = type(self).__name__
        if not isinstance(input, Tensor) or input.dim() != 3:
            got = tuple(input.shape) if isinstance(input, Tensor) else type(input).__name__
            layout = (
                "(batch, seq_len, features)" if self.batch_first else "(seq_len, batch, features)"
            )
            raise ValueError(f"{name} expected a 3-D input {layout}; got {got}")
        x = input if self.batch_first else input.transpose(0, 1)
        B, T, size = x.shape
        if size != self.input_size:
            raise ValueError(f"{name} expected {self.input_size} input features; got {size}")
        if T == 0:
            raise ValueError(f"{name} got an empty sequence (seq_len 0)")
        dtype = self.cells[0]._param().dtype
        if x.dtype != dtype:
            raise ValueError(
                f"{name} expected input dtype {dtype} (the parameters'); got {x.dtype}"
            )
        if lengths is not None:
            lengths = check_lengths(lengths, B, T)
        if state is None:
            state = self.init_state(B, x.device, x.dtype)
        D = 2 if self.bidirectional else 1
        finals = []
        for layer in range(self.num_layers):
            if layer > 0 and self.training and self.dropout:
                x = self._dropout_between_layers(x)
            outs = []
            for direction in range(D):
                index = layer * D + direction
                cell = self.cells[index]
                s0 = select_state(state, index)
                cell.check_state(s0, B)
                backwards = direction == 1 or self.reverse
                xd = reverse_padded(x, lengths) if backwards else x
                y, s = cell.sequence(xd, s0, lengths, self.path)
                outs.append(reverse_padded(y, lengths) if backwards else y)
                finals.append(s)
            x = torch.cat(outs, -1) if D == 2 else outs[0]
        output = x if self.batch_first else x.transpose(0, 1)
        return output, stack_states(finals)

    def _dropout_between_layers(self, x: Tensor) -> Tensor:
        if self.dropout_mode == "variational":  # one mask per sequence, shared by every step
            keep = 1.0 - self.dropout
            return x * (torch.empty_like(x[:, :1]).bernoulli_(keep) / keep)
        return F.dropout(x, self.dropout, True)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        for key, default in (
            ("num_layers", 1),
            ("bias", True),
            ("batch_first", False),
            ("dropout", 0.0),
            ("dropout_mode", "standard"),
            ("bidirectional", False),
            ("reverse", False),
            ("path", "auto"),
        ):
            if getattr(self, key) != default:
                s += f", {key}={getattr(self, key)!r}"
        for key, value in self.cell_options.items():
            s += f", {key}={value!r}"
        return s
