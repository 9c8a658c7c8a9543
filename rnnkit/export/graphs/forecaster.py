"""The forecaster's graph ``forecaster``: the scaling statistics and lags are state beside
``h`` and ``c``."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rnnkit.export.graphs.spec import GraphSpec
from rnnkit.export.recurrent import ExportError, exportable_layer


class _LayerAdapter(nn.Module):
    """Stands in for a forecaster's rnnkit layer: ``(x, (h, c) | h) → (y, state)``."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.stack = exportable_layer(layer, "rnn")
        self.lstm = layer.mode == "LSTM"

    def forward(self, x: Tensor, state):
        h, c = state if self.lstm else (state, state)
        lengths = x.new_ones(x.shape[0], dtype=torch.long) * x.shape[1]
        y, h_n, c_n = self.stack(x, lengths, h, c)
        return y, ((h_n, c_n) if self.lstm else h_n)


class ForecasterGraph(nn.Module):
    """:meth:`Forecaster.forward` itself, with its recurrent layer swapped for the exportable one
    and its :class:`ForecastState` flattened into named inputs and outputs."""

    def __init__(self, model: nn.Module):
        super().__init__()
        import copy

        self.model = copy.copy(model)  # a shallow copy: the same weights, our own ``rnn``
        self.model._modules = dict(model._modules)
        self.model._modules["rnn"] = _LayerAdapter(model.rnn)
        self.lstm = model.rnn.mode == "LSTM"
        self.n_stats = {"none": 0, "prefix": 2, "running": 3}[model.config.window_norm]

    def forward(self, inputs: Tensor, *flat: Tensor):
        from rnnkit.tasks.forecaster import ForecastState

        k = 2 if self.lstm else 1
        rnn = (flat[0], flat[1]) if self.lstm else flat[0]
        stats = tuple(flat[k : k + self.n_stats])
        lags = flat[k + self.n_stats]
        out = self.model(inputs, ForecastState(rnn, stats, lags))
        st = out.state
        rnn_out = list(st.rnn) if self.lstm else [st.rnn]
        return (out.logits, *rnn_out, *st.stats, st.lags)


def forecaster_state_names(model: nn.Module) -> list[str]:
    lstm = model.rnn.mode == "LSTM"
    names = ["h", "c"] if lstm else ["h"]
    names += {"none": [], "prefix": ["mean", "scale"], "running": ["n", "sum", "sum_sq"]}[
        model.config.window_norm
    ]
    return names + ["lags"]


def forecaster_graphs(model: nn.Module) -> list[GraphSpec]:
    c = model.config
    C, H, L = c.input_size, c.hidden_size, c.num_layers
    need = max(c.linear_lags - 1, 1 if c.differences else 0)
    if need == 0:
        raise ExportError(
            "forecaster with differences=False and linear_lags <= 1 keeps no past inputs; "
            "its empty lag state is not exportable yet"
        )
    B = 2
    state: dict[str, Tensor] = {"h": torch.zeros(L, B, H)}
    if model.rnn.mode == "LSTM":
        state["c"] = torch.zeros(L, B, H)
    stat = torch.zeros(B, 1, C)
    if c.window_norm == "prefix":
        state |= {"mean": stat, "scale": stat + 1}
    elif c.window_norm == "running":
        state |= {"n": stat, "sum": stat, "sum_sq": stat}
    state["lags"] = torch.zeros(B, need, C)
    names = list(state)
    outs = ["params"] + [n + "_out" for n in names]
    axes = {"inputs": {0: "batch", 1: "time"}, "params": {0: "batch", 1: "time"}}
    for n in names:
        axis = 1 if n in ("h", "c") else 0
        axes[n] = {axis: "batch"}
        axes[n + "_out"] = {axis: "batch"}
    return [
        GraphSpec(
            "forecaster",
            ForecasterGraph(model),
            {"inputs": torch.zeros(B, 4, C)} | state,
            outs,
            axes,
        )
    ]
