"""Which cells the fast path covers, and :func:`run_direction`, the layer-level entry point:
project the input for all steps, build the length / zoneout blend coefficients, run the family's
sequence function and hand back ``(y, final_state, cs)`` as :func:`rnnkit.layers.run_direction`."""

from __future__ import annotations

import torch
from torch import Tensor

from rnnkit.cells import GRUCell, LSTMCell, RecurrentCell, RNNCell, layer_norm_chunks
from rnnkit.fast.gemm import linear
from rnnkit.fast.gru import gru_sequence
from rnnkit.fast.lstm import lstm_sequence
from rnnkit.fast.rnn import rnn_sequence
from rnnkit.sequence import reverse_padded, step_mask
from rnnkit.state import LSTMState


# ---------------------------------------------------------------------------------------------
# The layer-level entry point
# ---------------------------------------------------------------------------------------------
def supports(cell: RecurrentCell) -> bool:
    """True when the fast path computes ``cell`` (rnnkit's own cells, any of their options)."""
    return type(cell) in (RNNCell, LSTMCell, GRUCell)


def prefers_fast(mode: str, cell: RecurrentCell, device: torch.device) -> bool:
    """True where the fast path beats torch's fused kernel (measured: benchmarks/cells.py).

    On CPU torch's GRU and Elman RNN are native per-step loops under autograd (only the LSTM
    has a oneDNN kernel), so the fast path wins for them; on CUDA cuDNN wins everywhere.
    """
    return device.type == "cpu" and mode in ("GRU", "RNN")


def layer_supported(layer) -> bool:
    """True when ``layer`` (an rnnkit RecurrentLayer) runs on the fast path when not fused."""
    return all(supports(cell) for cell in layer._cells)


def _project(cell: RecurrentCell, x: Tensor, params: dict) -> tuple[Tensor, dict]:
    """The cell's ``project_input`` (W_ih x + b_ih, then LN if the cell has it) on oneDNN GEMMs.

    Where b_hh is simply added to the pre-activations (LSTM and Elman RNN without layer norm) it
    is folded into the projection's bias, and the returned parameters have ``bias_hh = None``.
    """
    b_ih = params["bias_ih"]
    if b_ih is not None and not cell.layer_norm and not isinstance(cell, GRUCell):
        b_ih = b_ih + params["bias_hh"]
        params = {**params, "bias_hh": None}
    xp = linear(x, params["weight_ih"], b_ih)
    if cell.layer_norm:
        chunks = 3 if isinstance(cell, GRUCell) else 1
        xp = layer_norm_chunks(xp, params["ln_ih_weight"], params["ln_ih_bias"], chunks)
    return xp, params


def _zoneout_keep(zoneout: float, training: bool, steps: int, shape, n_states: int, like: Tensor):
    """Per state, the (T, B, H) keep-new coefficients 1 − d of zoneout (or the scalar 1 − p).

    Masks are drawn step by step, h before c, exactly as the reference loop draws them.
    """
    if not training:
        return [1.0 - zoneout] * n_states
    draws = [[] for _ in range(n_states)]
    for _ in range(steps):
        for k in range(n_states):
            draws[k].append(
                torch.empty(shape, dtype=like.dtype, device=like.device).bernoulli_(zoneout)
            )
    return [1 - torch.stack(d) for d in draws]


def run_direction(
    cell: RecurrentCell,
    x: Tensor,
    state,
    lengths: Tensor | None,
    reverse: bool,
    params: dict | None,
    zoneout: float,
    training: bool,
    return_cell_states: bool,
):
    """Same contract and results as :func:`rnnkit.layers.run_direction`, on the fast path; it
    hands every argument on, so the defaults live there only."""
    p = params if params is not None else cell.own_params()
    B, T = x.shape[:2]
    if reverse:
        x = reverse_padded(x, lengths)
    xp, p = _project(cell, x.transpose(0, 1), p)  # (T, B, G): one GEMM for every step
    mask = None
    if lengths is not None:
        mask = step_mask(lengths, T).to(device=x.device, dtype=x.dtype)  # (T, B, 1)
    n_states = 2 if cell.is_lstm else 1
    alphas = [mask] * n_states
    if zoneout:
        keep = _zoneout_keep(zoneout, training, T, (B, cell.hidden_size), n_states, x)
        alphas = [k if mask is None else mask * k for k in keep]
        alphas = [
            torch.full((T, B, 1), a, dtype=x.dtype, device=x.device) if isinstance(a, float) else a
            for a in alphas
        ]

    cs = None
    if isinstance(cell, LSTMCell):
        hs, cs_all = lstm_sequence(
            xp,
            state.h.contiguous(),
            state.c.contiguous(),
            p,
            cell.peephole,
            cell.layer_norm,
            *alphas,
        )
        final = LSTMState(hs[-1], cs_all[-1])
        if return_cell_states:
            cs = cs_all if mask is None else cs_all * mask
            cs = cs.transpose(0, 1)
    elif isinstance(cell, GRUCell):
        hs = gru_sequence(xp, state.contiguous(), p, cell.reset_after, cell.layer_norm, alphas[0])
        final = hs[-1]
    else:
        hs = rnn_sequence(xp, state.contiguous(), p, cell.nonlinearity, cell.layer_norm, alphas[0])
        final = hs[-1]
    y = (hs if mask is None else hs * mask).transpose(0, 1)  # (B, T, H)
    if reverse:
        y = reverse_padded(y, lengths)
        cs = reverse_padded(cs, lengths) if cs is not None else None
    return y, final, cs
