"""The classifier's and the tagger's graphs (``classifier``, ``tagger``) over the token
features they share (word embeddings, character features), and the CRF scores the runner's
Viterbi reads."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from rnnkit.export.graphs.spec import NEG, GraphSpec
from rnnkit.export.recurrent import exportable_layer


class CharFeatures(nn.Module):
    """:class:`rnnkit.tasks.classifier.CharEncoder` over every (row, step) of ``chars (B, T, C)``
    at once; padded token positions get zeros (the model scatters into zeros)."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.kind = encoder.kind
        self.embedding = encoder.embedding
        if self.kind == "cnn":
            self.conv = encoder.conv
        else:
            self.stack = exportable_layer(encoder.rnn, "embedder.chars.rnn")
            self.hidden_size = encoder.rnn.hidden_size

    def forward(self, chars: Tensor, token_mask: Tensor) -> Tensor:
        B, T, C = chars.shape
        words = chars.reshape(B * T, C)  # (N, C)
        lengths = (words != 0).sum(1).clamp(min=1)  # (N,)
        e = self.embedding(words) * (words != 0).unsqueeze(2).to(self.embedding.weight.dtype)
        if self.kind == "cnn":
            hcnn = torch.tanh(self.conv(e.transpose(1, 2))).transpose(1, 2)  # (N, C, R)
            valid = torch.arange(C).unsqueeze(0) < lengths.unsqueeze(1)  # (N, C)
            r = hcnn.masked_fill(~valid.unsqueeze(2), NEG).amax(1)  # (N, R)
        else:
            N = words.shape[0]
            h0 = e.new_zeros(2, N, self.hidden_size)
            _, h_n, _ = self.stack(e, lengths, h0, h0)
            r = torch.cat([h_n[0], h_n[1]], -1)  # (N, 2H)
        r = r.reshape(B, T, r.shape[-1])
        return r * token_mask.unsqueeze(2).to(r.dtype)


def _embedder_features(embedder: nn.Module) -> CharFeatures | None:
    return CharFeatures(embedder.chars) if embedder.chars is not None else None


class _Encoded(nn.Module):
    """embedding (+ character vector) → recurrent layer from a zero state, with lengths."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.embedder = model.embedder
        self.chars = _embedder_features(model.embedder) if model.embedder is not None else None
        self.stack = exportable_layer(model.rnn, "rnn")
        rnn = model.rnn
        self.states = rnn.num_layers * (2 if rnn.bidirectional else 1)
        self.hidden_size = rnn.hidden_size

    def encode(self, inputs: Tensor, lengths: Tensor, chars: Tensor | None) -> Tensor:
        T = inputs.shape[1]
        mask = torch.arange(T).unsqueeze(0) < lengths.unsqueeze(1)  # (B, T)
        if self.embedder is None:
            x = inputs  # numeric steps, read as they are
        else:
            x = self.embedder.embedding(inputs)
            if self.chars is not None:
                x = torch.cat([x, self.chars(chars, mask)], -1)
        h0 = x.new_zeros(self.states, x.shape[0], self.hidden_size)
        y, _, _ = self.stack(x, lengths, h0, h0)
        return y


class ClassifierGraph(_Encoded):
    """logits (B, K) = head(pool(rnn(embed(x)))) over each row's real steps."""

    def __init__(self, model: nn.Module):
        super().__init__(model)
        self.pooling = model.config.pooling
        self.bidirectional = model.config.bidirectional
        self.attention = model.attention
        self.head = model.head

    def forward(self, inputs: Tensor, lengths: Tensor, chars: Tensor | None = None) -> Tensor:
        y = self.encode(inputs, lengths, chars)  # (B, T, F)
        B, T, Fdim = y.shape
        mask = torch.arange(T).unsqueeze(0) < lengths.unsqueeze(1)  # (B, T)
        if self.pooling == "last":
            idx = (lengths - 1).view(B, 1, 1).expand(B, 1, Fdim)
            z = y.gather(1, idx).squeeze(1)
            if self.bidirectional:
                H = Fdim // 2
                z = torch.cat([z[:, :H], y[:, 0, H:]], -1)
        elif self.pooling == "mean":
            z = (y * mask.unsqueeze(2).to(y.dtype)).sum(1) / lengths.unsqueeze(1).to(y.dtype)
        elif self.pooling == "max":
            z = y.masked_fill(~mask.unsqueeze(2), NEG).amax(1)
        else:
            a = self.attention.score(torch.tanh(self.attention.proj(y))).squeeze(-1)  # (B, T)
            w = torch.softmax(a.masked_fill(~mask, NEG), dim=1)
            z = (w.unsqueeze(2) * y).sum(1)
        return self.head(z)


class TaggerGraph(_Encoded):
    """emissions (B, T, K) = head(rnn(embed(x))); 0 past each row's end is not guaranteed —
    read them through ``lengths``."""

    def __init__(self, model: nn.Module):
        super().__init__(model)
        self.head = model.head

    def forward(self, ids: Tensor, lengths: Tensor, chars: Tensor | None = None) -> Tensor:
        return self.head(self.encode(ids, lengths, chars))


def _token_inputs(model: nn.Module, numeric: bool = False) -> tuple[dict, dict]:
    if numeric:
        F_ = model.data_config.step_size
        inputs = {"inputs": torch.zeros(2, 3, F_), "lengths": torch.tensor([3, 2])}
    else:
        inputs = {"inputs": torch.ones(2, 3, dtype=torch.long), "lengths": torch.tensor([3, 2])}
    axes = {"inputs": {0: "batch", 1: "time"}, "lengths": {0: "batch"}}
    if model.embedder is not None and model.embedder.chars is not None:
        inputs["chars"] = torch.ones(2, 3, 4, dtype=torch.long)
        axes["chars"] = {0: "batch", 1: "time", 2: "chars"}
    return inputs, axes


def classifier_graphs(model: nn.Module) -> list[GraphSpec]:
    inputs, axes = _token_inputs(model, model.numeric)
    return [
        GraphSpec(
            "classifier",
            ClassifierGraph(model),
            inputs,
            ["logits"],
            axes | {"logits": {0: "batch"}},
        )
    ]


def tagger_graphs(model: nn.Module) -> list[GraphSpec]:
    inputs, axes = _token_inputs(model)
    return [
        GraphSpec(
            "tagger",
            TaggerGraph(model),
            inputs,
            ["emissions"],
            axes | {"emissions": {0: "batch", 1: "time"}},
        )
    ]


def crf_scores(model: nn.Module) -> dict[str, Any] | None:
    """The CRF's start, transition and end scores with the BIO constraints folded in."""
    if model.crf is None:
        return None
    start, trans, end = model.crf._scores()
    return {
        "start": start.detach().double().tolist(),
        "transitions": trans.detach().double().tolist(),
        "end": end.detach().double().tolist(),
    }
