"""The language model's graphs: ``lm_step`` (one token per row) and ``lm_sequence`` (a padded
batch), the state carried in and out."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rnnkit.export.graphs.spec import GraphSpec, split_state, state_axes
from rnnkit.export.recurrent import ExportError, exportable_layer


class LMStep(nn.Module):
    """One token per row: logits = W h_t + b after feeding ``ids`` from state ``(h, c)``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.embedding = model.embedding
        self.decoder = model.decoder
        self.stack = exportable_layer(model.rnn, "rnn", script=False)
        self.lstm = model.rnn.mode == "LSTM"

    def forward(self, ids: Tensor, h: Tensor, c: Tensor | None = None):
        h, c = split_state(self.lstm, h, c)
        y, h_n, c_n = self.stack.step(self.embedding(ids), h, c)  # (B, H)
        logits = self.decoder(y)  # (B, V)
        return (logits, h_n, c_n) if self.lstm else (logits, h_n)


class LMSequence(nn.Module):
    """A padded batch: logits at every step, final state at each row's last real token."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.embedding = model.embedding
        self.decoder = model.decoder
        self.stack = exportable_layer(model.rnn, "rnn")
        self.lstm = model.rnn.mode == "LSTM"

    def forward(self, ids: Tensor, lengths: Tensor, h: Tensor, c: Tensor | None = None):
        h, c = split_state(self.lstm, h, c)
        y, h_n, c_n = self.stack(self.embedding(ids), lengths, h, c)  # (B, T, H)
        logits = self.decoder(y)  # (B, T, V)
        return (logits, h_n, c_n) if self.lstm else (logits, h_n)


def lm_graphs(model: nn.Module) -> list[GraphSpec]:
    from rnnkit.tasks.language_model import LanguageModel

    if not isinstance(model, LanguageModel):
        raise ExportError(
            f"{type(model).__name__} (the fixed-window baseline) is not exportable: only the "
            "recurrent language model is"
        )
    rnn = model.rnn
    lstm = rnn.mode == "LSTM"
    LD, H = rnn.num_layers, rnn.hidden_size
    state = {"h": torch.zeros(LD, 2, H)} | ({"c": torch.zeros(LD, 2, H)} if lstm else {})
    snames = list(state)
    outs = [n + "_out" for n in snames]
    step = GraphSpec(
        "lm_step",
        LMStep(model),
        {"ids": torch.tensor([1, 2])} | state,
        ["logits", *outs],
        {"ids": {0: "batch"}, "logits": {0: "batch"}} | state_axes(snames + outs),
    )
    seq = GraphSpec(
        "lm_sequence",
        LMSequence(model),
        {"ids": torch.ones(2, 3, dtype=torch.long), "lengths": torch.tensor([3, 2])} | state,
        ["logits", *outs],
        {
            "ids": {0: "batch", 1: "time"},
            "lengths": {0: "batch"},
            "logits": {0: "batch", 1: "time"},
        }
        | state_axes(snames + outs),
    )
    return [step, seq]
