"""The one recurrent-layer factory every task builds its core with: :func:`build_recurrent`.

A new cell family is registered here once (its layer in ``LAYERS``, its own constructor options in
``CELL_OPTIONS``) and every task can use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from rnnkit.config import option
from rnnkit.layers import GRU, LSTM, RNN
from rnnkit.modern import MLSTM, QRNN, SRU, MinGRU, MinLSTM

__all__ = [
    "CELL_OPTIONS",
    "COMMON_OPTIONS",
    "LAYERS",
    "CellOptions",
    "RecurrentOptions",
    "build_recurrent",
    "recurrent_for",
]

#: ``--cell`` name → the batch-first rnnkit layer that runs it.
LAYERS: dict[str, type[nn.Module]] = {
    "lstm": LSTM,
    "gru": GRU,
    "rnn": RNN,
    # trained in parallel over time (rnnkit.modern); their own options keep their defaults
    "mingru": MinGRU,
    "minlstm": MinLSTM,
    "qrnn": QRNN,
    "sru": SRU,
    "mlstm": MLSTM,
}
#: Options only one cell family takes; a task's config carries them all, each cell keeps its own.
CELL_OPTIONS: dict[str, tuple[str, ...]] = {
    "lstm": ("peephole", "forget_bias"),
    "gru": ("reset_after",),
    "rnn": ("nonlinearity", "init"),
    **{name: () for name in ("mingru", "minlstm", "qrnn", "sru", "mlstm")},
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


@dataclass
class CellOptions:
    """The cell options a task's model config offers (its ``--layer-norm``, ``--forget-bias``,
    ``--nonlinearity`` and ``--init`` flags): model configs inherit them, and
    :func:`recurrent_for` hands each cell the ones it takes."""

    layer_norm: bool = option(False, "layer-normalised cells")
    forget_bias: float = option(0.0, "initial forget-gate bias (LSTM)")
    nonlinearity: str = option("tanh", "RNN nonlinearity", ("tanh", "relu"))
    init: str = option("default", "RNN init: default or identity (IRNN)", ("default", "identity"))


@dataclass
class RecurrentOptions(CellOptions):
    """:class:`CellOptions` and the two fields of the recurrent core that the classifier, the
    tagger and the language model declare alike: ``--cell`` (any layer of ``LAYERS``) and
    ``--num-layers``."""

    cell: str = option("lstm", "recurrent cell", tuple(LAYERS))
    num_layers: int = option(1, "stacked recurrent layers")


def recurrent_for(config: Any, input_size: int) -> nn.Module:
    """:func:`build_recurrent` from a model config: its ``cell``, ``hidden_size``,
    ``num_layers``, ``bidirectional`` (default False), ``dropout`` and every recurrent option it
    has (those of :class:`CellOptions` and any other that ``COMMON_OPTIONS``/``CELL_OPTIONS``
    name)."""
    names = set(COMMON_OPTIONS).union(*CELL_OPTIONS.values())
    return build_recurrent(
        config.cell,
        input_size,
        config.hidden_size,
        config.num_layers,
        getattr(config, "bidirectional", False),
        config.dropout,
        **{n: getattr(config, n) for n in sorted(names) if hasattr(config, n)},
    )
