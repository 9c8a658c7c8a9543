"""Recurrent state types and the helpers that walk them.

A cell's state is either a single tensor ``h`` of shape ``(B, H)`` (Elman RNN, GRU) or an
:class:`LSTMState` ``(h, c)``. Layers use the same types with a leading ``num_layers * num_directions``
axis, exactly as ``torch.nn.RNN/GRU`` (a tensor) and ``torch.nn.LSTM`` (a tuple) do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor


class LSTMState(NamedTuple):
    """Hidden and cell state of an LSTM: ``h`` is what the cell outputs, ``c`` its memory."""

    h: Tensor
    c: Tensor


State = Tensor | LSTMState | tuple


def map_state(fn: Callable[[Tensor], Tensor], state):
    """Apply ``fn`` to every tensor inside ``state`` (tensor, tuple, list, dict or None)."""
    if state is None:
        return None
    if isinstance(state, Tensor):
        return fn(state)
    if isinstance(state, LSTMState):
        return LSTMState(*(map_state(fn, s) for s in state))
    if isinstance(state, tuple):
        return tuple(map_state(fn, s) for s in state)
    if isinstance(state, list):
        return [map_state(fn, s) for s in state]
    if isinstance(state, dict):
        return {k: map_state(fn, v) for k, v in state.items()}
    raise TypeError(f"unsupported state type {type(state).__name__}")


def detach_state(state):
    """Cut the autograd graph at a truncated-BPTT window boundary.

    The values carry on into the next window (the model keeps its memory), but gradients stop
    here, so backpropagation through time costs one window, not the whole history.
    """
    return map_state(lambda t: t.detach(), state)


def zero_state(
    batch_size: int,
    hidden_size: int,
    lstm: bool = False,
    *,
    leading: tuple[int, ...] = (),
    device=None,
    dtype=None,
):
    """All-zero state of shape ``(*leading, batch_size, hidden_size)``; an ``LSTMState`` if ``lstm``."""
    shape = (*leading, batch_size, hidden_size)
    h = torch.zeros(shape, device=device, dtype=dtype)
    if lstm:
        return LSTMState(h, torch.zeros_like(h))
    return h


def as_lstm_state(state) -> LSTMState | None:
    """Accept an ``LSTMState`` or any ``(h, c)`` pair."""
    if state is None or isinstance(state, LSTMState):
        return state
    if isinstance(state, (tuple, list)) and len(state) == 2:
        return LSTMState(state[0], state[1])
    raise ValueError(f"an LSTM state must be a pair (h, c) of tensors; got {type(state).__name__}")
