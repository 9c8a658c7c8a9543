"""The reference time loop over any cell: :func:`run_direction`, and zoneout.

:func:`run_direction` hoists the input projection of all steps into a single matrix product,
walks time with ``unbind`` (indexing ``xp[t]`` inside the loop makes the backward pass grow with
T²), freezes the state of sequences that have ended, and applies zoneout. rnnkit's own cells are
handed to :mod:`rnnkit.fast` (hand-written BPTT) unless ``fast=False``; this loop is what the fast
path is tested against. :mod:`rnnkit.layers` builds its layers on it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rnnkit import fast as _fast
from rnnkit.cells import RecurrentCell
from rnnkit.sequence import reverse_padded, step_mask
from rnnkit.state import LSTMState

__all__ = ["run_direction"]


def _zoneout(prev, new, p: float, training: bool):
    """Zoneout (Krueger et al. 2017): each unit keeps its previous value with probability p.

    Training: s_t = d ⊙ s_{t−1} + (1 − d) ⊙ s̃_t with d ~ Bernoulli(p) per unit and step;
    evaluation uses the expectation s_t = p s_{t−1} + (1 − p) s̃_t.
    """

    def mix(a: Tensor, b: Tensor) -> Tensor:
        if training:
            d = torch.empty_like(b).bernoulli_(p)
            return torch.lerp(b, a, d)
        return torch.lerp(b, a, p)

    if isinstance(new, tuple):
        return LSTMState(*(mix(a, b) for a, b in zip(prev, new)))
    return mix(prev, new)


def run_direction(
    cell: RecurrentCell,
    x: Tensor,
    state,
    lengths: Tensor | None = None,
    reverse: bool = False,
    params: dict | None = None,
    zoneout: float = 0.0,
    training: bool = False,
    return_cell_states: bool = False,
    fast: bool = True,
):
    """Run ``cell`` over ``x (B, T, I)`` from ``state``; returns ``(y (B, T, H), final_state, cs)``.

    With ``lengths`` the state of sequence b stops changing after step ``lengths[b]``, outputs past
    the end are zero, and ``final_state`` is the state after the last valid step. ``reverse`` reads
    each sequence back to front within its own length. ``cs`` is every step's cell state
    ``(B, T, H)`` when ``return_cell_states`` (LSTM), else None.

    With ``fast`` (the default) rnnkit's cells run on :mod:`rnnkit.fast` (hand-written BPTT, equal
    to rounding); the loop below is the reference it is tested against.
    """
    if fast and _fast.supports(cell):
        return _fast.run_direction(
            cell, x, state, lengths, reverse, params, zoneout, training, return_cell_states
        )
    if reverse:
        x = reverse_padded(x, lengths)
    xp = cell.project_input(x, params)  # (B, T, G·H): one GEMM for every step
    masks = None
    if lengths is not None:
        masks = step_mask(lengths, x.shape[1]).to(x.device).unbind(0)  # T × (B, 1)
    outputs, cells = [], []
    for t, xp_t in enumerate(xp.unbind(1)):
        h, new_state = cell.step(xp_t, state, params)
        if zoneout:
            new_state = _zoneout(state, new_state, zoneout, training)
            h = new_state[0] if isinstance(new_state, tuple) else new_state
        if masks is not None:
            m = masks[t]
            if isinstance(new_state, tuple):
                new_state = LSTMState(*(torch.where(m, n, o) for n, o in zip(new_state, state)))
            else:
                new_state = torch.where(m, new_state, state)
            h = h * m
        state = new_state
        outputs.append(h)
        if return_cell_states:
            cells.append(state[1] * masks[t] if masks is not None else state[1])
    y = torch.stack(outputs, 1)  # (B, T, H)
    cs = torch.stack(cells, 1) if return_cell_states else None
    if reverse:
        y = reverse_padded(y, lengths)
        cs = reverse_padded(cs, lengths) if cs is not None else None
    return y, state, cs
