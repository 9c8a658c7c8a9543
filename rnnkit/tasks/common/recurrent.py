"""The one recurrent-layer factory every task builds its core with: :func:`build_recurrent`.

A new cell family is registered here once (its layer in ``LAYERS``, its own constructor options in
``CELL_OPTIONS``) and every task can use it.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from rnnkit.layers import GRU, LSTM, RNN

__all__ = ["CELL_OPTIONS", "COMMON_OPTIONS", "LAYERS", "build_recurrent", "make_recurrent"]

#: ``--cell`` name → the batch-first rnnkit layer that runs it.
LAYERS: dict[str, type[nn.Module]] = {"lstm": LSTM, "gru": GRU, "rnn": RNN}
#: Options only one cell family takes; a task's config carries them all, each cell keeps its own.
CELL_OPTIONS: dict[str, tuple[str, ...]] = {
    "lstm": ("peephole", "forget_bias"),
    "gru": ("reset_after",),
    "rnn": ("nonlinearity", "init"),
}
#: Options every layer takes.
COMMON_OPTIONS = ("layer_norm", "dropout_mode", "weight_drop", "zoneout")


def build_recurrent(
    cell: str,
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    bidirectional: bool = False,
    dropout: float = 0.0,
    **cell_options: Any,
) -> nn.Module:
    """A batch-first rnnkit layer of ``cell`` (``"lstm"``, ``"gru"``, ``"rnn"``).

    ``dropout`` between stacked layers applies only when ``num_layers > 1``. ``cell_options``
    may name any option of any cell family: those of other families are dropped (a config holds
    them all), an option no family knows is a ``ValueError``.
    """
    if cell not in LAYERS:
        raise ValueError(f"unknown cell {cell!r}; expected one of {', '.join(sorted(LAYERS))}")
    known = set(COMMON_OPTIONS).union(*CELL_OPTIONS.values())
    unknown = sorted(set(cell_options) - known)
    if unknown:
        raise ValueError(f"unknown recurrent option(s) {', '.join(unknown)}")
    keep = set(COMMON_OPTIONS) | set(CELL_OPTIONS[cell])
    return LAYERS[cell](
        input_size,
        hidden_size,
        num_layers=num_layers,
        batch_first=True,
        bidirectional=bidirectional,
        dropout=dropout if num_layers > 1 else 0.0,
        **{k: v for k, v in cell_options.items() if k in keep},
    )


def make_recurrent(
    cell: str,
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    bidirectional: bool = True,
    dropout: float = 0.0,
    nonlinearity: str = "tanh",
    init: str = "default",
    forget_bias: float = 0.0,
    layer_norm: bool = False,
) -> nn.Module:
    """:func:`build_recurrent` with the classifier's historical positional signature."""
    return build_recurrent(
        cell,
        input_size,
        hidden_size,
        num_layers,
        bidirectional,
        dropout,
        nonlinearity=nonlinearity,
        init=init,
        forget_bias=forget_bias,
        layer_norm=layer_norm,
    )
