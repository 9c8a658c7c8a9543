"""The fresh recurrent layers the instruments measure: memory-task cells and gradient-flow specs.

``MEMORY_CELLS`` names the four layers ``bench memory`` compares (:func:`make_memory_layer`);
:class:`CellSpec` describes any one-layer cell with its options for ``diagnose gradients``;
:func:`scale_recurrent_init` redraws W_hh to a chosen spectral radius for both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from rnnkit.layers import GRU, LSTM, RNN, RecurrentLayer

#: the cells ``bench memory`` compares, as layer constructors with their options
MEMORY_CELLS = {
    "rnn": "tanh RNN, default init",
    "irnn": "ReLU RNN, identity init (Le et al. 2015)",
    "lstm": "LSTM, forget bias 1",
    "gru": "GRU",
}


def make_memory_layer(
    cell: str, input_size: int, hidden_size: int, init_scale: float | None = None
) -> RecurrentLayer:
    """A one-layer batch-first rnnkit layer for a ``MEMORY_CELLS`` name.

    ``init_scale`` σ redraws every recurrent weight block W_hh ~ N(0, σ²/H), whose spectral radius
    is ≈ σ (circular law): σ > 1 makes a tanh RNN's gradients explode at the start.
    """
    if cell == "rnn":
        layer = RNN(input_size, hidden_size, batch_first=True)
    elif cell == "irnn":
        layer = RNN(input_size, hidden_size, batch_first=True, nonlinearity="relu", init="identity")
    elif cell == "lstm":
        layer = LSTM(input_size, hidden_size, batch_first=True, forget_bias=1.0)
    elif cell == "gru":
        layer = GRU(input_size, hidden_size, batch_first=True)
    else:
        raise ValueError(f"unknown cell {cell!r}; expected one of {', '.join(MEMORY_CELLS)}")
    if init_scale is not None:
        scale_recurrent_init(layer, init_scale)
    return layer


def scale_recurrent_init(layer: nn.Module, scale: float) -> None:
    """Redraw each H×H block of every ``weight_hh*`` as N(0, scale²/H) (spectral radius ≈ scale)."""
    if scale <= 0:
        raise ValueError(f"init scale must be positive; got {scale}")
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if name.startswith("weight_hh"):
                H = p.shape[1]
                p.normal_(0.0, scale / math.sqrt(H))


@dataclass
class CellSpec:
    """A fresh recurrent layer to diagnose: the cell and its options (see ``rnnkit.cells``)."""

    cell: str = "rnn"  # rnn | lstm | gru
    nonlinearity: str = "tanh"  # rnn only
    init: str = "default"  # rnn only: default | identity
    layer_norm: bool = False
    forget_bias: float = 0.0  # lstm only
    init_scale: float | None = None  # W_hh ~ N(0, scale²/H) when set

    def label(self) -> str:
        """Short name for tables and legends, e.g. ``rnn relu identity`` or ``lstm fb=1``."""
        parts = [self.cell]
        if self.cell == "rnn":
            if self.nonlinearity != "tanh":
                parts.append(self.nonlinearity)
            if self.init != "default":
                parts.append(self.init)
        if self.cell == "lstm" and self.forget_bias:
            parts.append(f"fb={self.forget_bias:g}")
        if self.layer_norm:
            parts.append("ln")
        if self.init_scale is not None:
            parts.append(f"scale={self.init_scale:g}")
        return " ".join(parts)

    def build(self, input_size: int, hidden_size: int) -> RecurrentLayer:
        """The one-layer batch-first rnnkit layer this spec describes."""
        if self.cell not in ("rnn", "lstm", "gru"):
            raise ValueError(f"cell must be rnn, lstm or gru; got {self.cell!r}")
        if self.cell != "rnn" and (self.nonlinearity != "tanh" or self.init != "default"):
            raise ValueError("--nonlinearity and --init apply to --cell rnn only")
        if self.cell != "lstm" and self.forget_bias:
            raise ValueError("--forget-bias applies to --cell lstm only")
        kw = {"batch_first": True, "layer_norm": self.layer_norm}
        if self.cell == "rnn":
            layer = RNN(
                input_size, hidden_size, nonlinearity=self.nonlinearity, init=self.init, **kw
            )
        elif self.cell == "lstm":
            layer = LSTM(input_size, hidden_size, forget_bias=self.forget_bias, **kw)
        else:
            layer = GRU(input_size, hidden_size, **kw)
        if self.init_scale is not None:
            scale_recurrent_init(layer, self.init_scale)
        return layer
