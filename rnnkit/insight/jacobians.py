"""Step Jacobians J_t = ∂s_t/∂s_{t−1} of a recurrent layer, and the step they differentiate.

s_t is the full state of the stack, flattened to one vector (h_t, plus c_t for an LSTM, for
every layer). The step is re-run through the layer's own cells (evaluation mode) so that
``torch.func.jacrev`` can differentiate it, vectorised over batch and time with ``vmap``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rnnkit.layers import RecurrentLayer


def _layer_cells(layer: RecurrentLayer) -> list[tuple]:
    """(cell, parameter dict) of each layer of a unidirectional rnnkit recurrent layer."""
    if not isinstance(layer, RecurrentLayer):
        raise ValueError(f"expected an rnnkit RNN/LSTM/GRU layer; got {type(layer).__name__}")
    if layer.bidirectional:
        raise ValueError("gradient flow is defined for a unidirectional layer; got bidirectional")
    # The layer owns the parameters under torch's names; its cells hold the step equations.
    return [(layer._cells[k], layer._params(k)) for k in range(layer.num_layers)]


def _flatten_state(states: list) -> Tensor:
    """Per-layer states → one (B, S) tensor: [h⁽⁰⁾, c⁽⁰⁾, h⁽¹⁾, …]."""
    return torch.cat([t for s in states for t in (s if isinstance(s, tuple) else (s,))], -1)


def _unflatten_state(flat: Tensor, cells: list) -> list:
    from rnnkit.state import LSTMState

    out, at = [], 0
    for cell, _ in cells:
        H = cell.hidden_size
        if cell.is_lstm:
            out.append(LSTMState(flat[..., at : at + H], flat[..., at + H : at + 2 * H]))
            at += 2 * H
        else:
            out.append(flat[..., at : at + H])
            at += H
    return out


def _stack_step(cells: list, zoneout: float, x_t: Tensor, states: list) -> tuple[Tensor, list]:
    """One time step of the whole stack (evaluation mode): returns (top h, new per-layer states).

    Zoneout in evaluation is its expectation s_t = p·s_{t−1} + (1 − p)·s̃_t, as in the layer.
    """
    inp, new_states = x_t, []
    for (cell, params), state in zip(cells, states):
        h, new = cell.step(cell.project_input(inp, params), state, params)
        if zoneout:
            if isinstance(new, tuple):
                new = type(new)(*(torch.lerp(n, o, zoneout) for n, o in zip(new, state)))
                h = new[0]
            else:
                new = h = torch.lerp(new, state, zoneout)
        new_states.append(new)
        inp = h
    return inp, new_states


def step_jacobians(layer: RecurrentLayer, x: Tensor, states: Tensor) -> Tensor:
    """Spectral norms ‖∂s_t/∂s_{t−1}‖₂ of the step Jacobians: ``(B, T)``.

    ``x (B, T, I)`` are the inputs and ``states (B, T+1, S)`` the flattened states s_0 … s_T
    (S = H, or 2H for an LSTM's (h, c); summed over stacked layers). Each J_t (S × S) is computed
    with ``torch.func.jacrev`` through the cell's step, vectorised over batch and time with
    ``vmap``; its spectral norm is the largest singular value. Jacobians are made and reduced a
    chunk at a time (about 64 MB each), so memory stays bounded for wide layers.
    """
    norms = [torch.linalg.matrix_norm(j, ord=2) for j in _jacobian_chunks(layer, x, states)]
    return torch.cat(norms).reshape(x.shape[:2])


def step_jacobian_matrices(layer: RecurrentLayer, x: Tensor, states: Tensor) -> Tensor:
    """The step Jacobians J_t = ∂s_t/∂s_{t−1} themselves: ``(B, T, S, S)``.

    See :func:`step_jacobians`; meant for small layers (B·T·S² numbers are kept).
    """
    jac = torch.cat(list(_jacobian_chunks(layer, x, states)))
    S = states.shape[-1]
    return jac.reshape(*x.shape[:2], S, S)


def _jacobian_chunks(layer: RecurrentLayer, x: Tensor, states: Tensor):
    """Yield the step Jacobians of all (b, t) in order, as ``(n, S, S)`` chunks."""
    from torch.func import jacrev, vmap

    cells = _layer_cells(layer)
    zoneout = layer.zoneout
    B, T = x.shape[:2]

    def transition(s_prev: Tensor, x_t: Tensor) -> Tensor:  # one example: (S,), (I,) → (S,)
        _, new = _stack_step(cells, zoneout, x_t, _unflatten_state(s_prev, cells))
        return _flatten_state(new)

    s_prev = states[:, :-1].detach().reshape(B * T, -1)  # (B·T, S)
    inputs = x.detach().reshape(B * T, -1)  # (B·T, I)
    S = s_prev.shape[-1]
    chunk = max(1, 2**26 // (S * S * s_prev.element_size()))
    jac_fn = vmap(jacrev(transition, argnums=0))
    with torch.no_grad():
        for k in range(0, B * T, chunk):
            yield jac_fn(s_prev[k : k + chunk], inputs[k : k + chunk])  # (n, S, S)
