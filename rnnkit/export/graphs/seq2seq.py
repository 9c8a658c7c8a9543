"""The translator's graphs: ``encoder`` (source → memory, attention keys, decoder state) and
``decoder_step`` (one target token per row → log-probabilities, state, attention)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rnnkit.export.graphs.spec import GraphSpec
from rnnkit.export.recurrent import exportable_cell, exportable_layer


class Seq2SeqEncoder(nn.Module):
    """source → memory (B, S, M), attention keys (B, S, ·) (W_k k or the memory itself; the
    fixed context (B, M) without attention) and the decoder's initial state."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.embedding = model.source_embedding
        self.stack = exportable_layer(model.encoder, "encoder")
        enc = model.encoder
        self.states = enc.num_layers * (2 if enc.bidirectional else 1)
        self.directions = 2 if enc.bidirectional else 1
        self.hidden_size = enc.hidden_size
        self.init_h = model.init_h
        self.init_c = model.init_c
        self.attention = model.attention
        self.lstm = model.is_lstm

    def forward(self, source: Tensor, lengths: Tensor):
        x = self.embedding(source)  # (B, S, E)
        h0 = x.new_zeros(self.states, x.shape[0], self.hidden_size)
        memory, h_n, c_n = self.stack(x, lengths, h0, h0)
        d = self.directions
        summary = torch.cat([h_n[self.states - d + k] for k in range(d)], -1)  # (B, M)
        h = torch.tanh(self.init_h(summary))
        keys = summary if self.attention is None else self.attention.prepare(memory)
        if self.lstm:
            c = self.init_c(torch.cat([c_n[self.states - d + k] for k in range(d)], -1))
            return memory, keys, h, c
        return memory, keys, h


class Seq2SeqDecoderStep(nn.Module):
    """One decoder step (the :mod:`rnnkit.decoding` contract): previous ``tokens (N,)`` →
    log-probabilities (N, V), the new state and the attention weights (N, S)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.embedding = model.target_embedding
        self.cell = exportable_cell(model.decoder, "decoder")
        self.attention = model.attention
        self.pre_output = model.pre_output
        self.out = model.out
        self.lstm = model.is_lstm

    def forward(self, tokens, h, c, memory, keys, lengths):
        e = self.embedding(tokens)  # (N, E)
        if self.attention is None:
            context = keys  # the fixed summary
            weights = None
        else:
            S = memory.shape[1]
            mask = torch.arange(S).unsqueeze(0) < lengths.unsqueeze(1)  # (N, S)
            scores = self.attention.score(h, memory, keys).masked_fill(
                ~mask, torch.finfo(memory.dtype).min
            )
            weights = torch.softmax(scores, -1)
            context = torch.bmm(weights.unsqueeze(1), memory).squeeze(1)  # (N, M)
        xp = self.cell.project(torch.cat([e, context], -1))
        h_new, c_new = self.cell.step(xp, h, c if self.lstm else h)
        o = torch.tanh(self.pre_output(torch.cat([h_new, context, e], -1)))
        log_probs = torch.log_softmax(self.out(o), -1)
        out = [log_probs, h_new] + ([c_new] if self.lstm else [])
        return tuple(out + ([weights] if weights is not None else []))


class _DecoderNoC(nn.Module):
    """GRU decoders have no ``c``: the graph's signature drops it."""

    def __init__(self, inner: Seq2SeqDecoderStep):
        super().__init__()
        self.inner = inner

    def forward(self, tokens, h, memory, keys, lengths):
        return self.inner(tokens, h, None, memory, keys, lengths)


def seq2seq_graphs(model: nn.Module) -> list[GraphSpec]:
    lstm = model.is_lstm
    enc = Seq2SeqEncoder(model)
    states = ["h", "c"] if lstm else ["h"]
    encoder = GraphSpec(
        "encoder",
        enc,
        {"source": torch.ones(2, 3, dtype=torch.long), "lengths": torch.tensor([3, 2])},
        ["memory", "keys", *states],
        {
            "source": {0: "batch", 1: "source"},
            "lengths": {0: "batch"},
            "memory": {0: "batch", 1: "source"},
            "keys": {0: "batch", 1: "source"} if model.attention is not None else {0: "batch"},
        }
        | {n: {0: "batch"} for n in states},
    )
    with torch.no_grad():
        memory, keys, *st = enc(encoder.inputs["source"], encoder.inputs["lengths"])
    step = Seq2SeqDecoderStep(model)
    inputs = {"tokens": torch.tensor([2, 2])} | dict(zip(states, st))
    inputs |= {"memory": memory, "keys": keys, "lengths": torch.tensor([3, 2])}
    outs = ["log_probs"] + [n + "_out" for n in states]
    if model.attention is not None:
        outs.append("attention")
    axes = {n: {0: "rows"} for n in ["tokens", "lengths", "log_probs", *states]}
    axes |= {n + "_out": {0: "rows"} for n in states}
    axes |= {"memory": {0: "rows", 1: "source"}, "attention": {0: "rows", 1: "source"}}
    axes["keys"] = {0: "rows", 1: "source"} if model.attention is not None else {0: "rows"}
    return [
        encoder,
        GraphSpec("decoder_step", step if lstm else _DecoderNoC(step), inputs, outs, axes),
    ]
