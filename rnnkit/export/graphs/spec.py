"""What :func:`~rnnkit.export.graphs.build_graphs` hands the writer per graph, and the pieces
every task's graphs share: the state's dynamic axes, an LSTM-or-not state pair, the mask value."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor, nn

NEG = -1e30  # masked scores: finite, so a fully masked row stays NaN-free


@dataclass
class GraphSpec:
    """One graph to write: the module, example inputs, names and dynamic axes."""

    name: str
    module: nn.Module
    inputs: dict[str, Tensor]
    outputs: list[str]
    dynamic: dict[str, dict[int, str]] = field(default_factory=dict)
    #: how far onnxruntime may differ from PyTorch on the example inputs at export
    atol: float = 1e-4


def state_axes(names: list[str]) -> dict[str, dict[int, str]]:
    """The dynamic axes of state inputs and outputs: ``(L·D, batch, H)``."""
    return {n: {1: "batch"} for n in names}


def split_state(lstm: bool, h: Tensor, c: Tensor | None) -> tuple[Tensor, Tensor]:
    """``(h, c)`` for an LSTM; ``(h, h)`` for a layer without a cell state."""
    return h, (c if lstm else h)
