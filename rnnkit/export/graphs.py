"""The exportable form of each task model: one ``nn.Module`` per ONNX graph.

Each wrapper reads the task model's own submodules (embeddings, heads, attention) and swaps its
recurrent layer for :mod:`rnnkit.export.recurrent`'s exact cell-by-cell form. Padding is handled
with ``lengths`` and masks (never packing), and the recurrent state is an explicit input and
output (``h``, ``c`` in torch's ``(L·D, B, H)`` layout) so a caller can carry it between calls.

=================  =====================================================================
task               graphs (inputs → outputs)
=================  =====================================================================
lm / music         ``lm_step``: ids (B,), h, c → logits (B, V), h_out, c_out;
                   ``lm_sequence``: ids (B, T), lengths (B,), h, c → logits (B, T, V), h_out, c_out
classify           ``classifier``: inputs (B, T) ids or (B, T, F) values, lengths [, chars] → logits (B, K)
tag                ``tagger``: ids (B, T), lengths [, chars] → emissions (B, T, K) (CRF scores
                   written beside it; Viterbi runs in the runner)
translate          ``encoder``: source (B, S), lengths → memory, keys, h, c;
                   ``decoder_step``: tokens (N,), h, c, memory, keys, lengths → log_probs (N, V),
                   h_out, c_out, attention (N, S)
forecast           ``forecaster``: inputs (B, T, C), h, c, stats…, lags → params (B, T, S, C, K),
                   h_out, c_out, stats_out…, lags_out
caption            ``image_encoder``: pixels (N, S, S, 3) uint8 → keys, prepared, h, c;
                   ``caption_step``: tokens (N,), h, c, keys, prepared → log_probs, h_out,
                   c_out, attention (N, 49)
=================  =====================================================================

``c`` is present only for LSTMs. :func:`build_graphs` returns, per graph, the wrapper, example
inputs and the names and dynamic axes the writer needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from rnnkit.export.recurrent import (
    ExportError,
    exportable_cell,
    exportable_layer,
    fused_operators,
    onnx_operator_fits,
)

__all__ = ["GraphSpec", "build_graphs"]

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


def _state_axes(names: list[str]) -> dict[str, dict[int, str]]:
    return {n: {1: "batch"} for n in names}


def _split_state(lstm: bool, h: Tensor, c: Tensor | None) -> tuple[Tensor, Tensor]:
    return h, (c if lstm else h)


# ---------------------------------------------------------------------------------------------
# Language models
# ---------------------------------------------------------------------------------------------
class LMStep(nn.Module):
    """One token per row: logits = W h_t + b after feeding ``ids`` from state ``(h, c)``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.embedding = model.embedding
        self.decoder = model.decoder
        self.stack = exportable_layer(model.rnn, "rnn", script=False)
        self.lstm = model.rnn.mode == "LSTM"

    def forward(self, ids: Tensor, h: Tensor, c: Tensor | None = None):
        h, c = _split_state(self.lstm, h, c)
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
        h, c = _split_state(self.lstm, h, c)
        y, h_n, c_n = self.stack(self.embedding(ids), lengths, h, c)  # (B, T, H)
        logits = self.decoder(y)  # (B, T, V)
        return (logits, h_n, c_n) if self.lstm else (logits, h_n)


def _lm_graphs(model: nn.Module) -> list[GraphSpec]:
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
        {"ids": {0: "batch"}, "logits": {0: "batch"}} | _state_axes(snames + outs),
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
        | _state_axes(snames + outs),
    )
    return [step, seq]


# ---------------------------------------------------------------------------------------------
# Token features shared by the classifier and the tagger
# ---------------------------------------------------------------------------------------------
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


def _classifier_graphs(model: nn.Module) -> list[GraphSpec]:
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


def _tagger_graphs(model: nn.Module) -> list[GraphSpec]:
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


# ---------------------------------------------------------------------------------------------
# Sequence to sequence
# ---------------------------------------------------------------------------------------------
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


def _seq2seq_graphs(model: nn.Module) -> list[GraphSpec]:
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


# ---------------------------------------------------------------------------------------------
# Forecaster
# ---------------------------------------------------------------------------------------------
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


def _forecaster_graphs(model: nn.Module) -> list[GraphSpec]:
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


# ---------------------------------------------------------------------------------------------
# Captioner
# ---------------------------------------------------------------------------------------------
class CaptionImageEncoder(nn.Module):
    """pixels (N, S, S, 3) uint8 → the decoder's start: keys (N, 49, F), the attention's
    prepared keys, h_0 and c_0 (:meth:`Captioner.grid` then :meth:`Captioner.start`). The small
    CNN is part of the graph; the pretrained EfficientNet-Lite0 too when its package is there,
    with the float16 rounding of rnnkit's feature cache."""

    def __init__(self, model: nn.Module):
        super().__init__()
        from rnnkit.image_encoders import IMAGENET_MEAN, IMAGENET_STD

        self.model = model
        self.cnn = model.cnn
        if self.cnn is None:
            try:
                self.extractor = model._pretrained()
            except ImportError as e:
                raise ExportError(f"module 'encoder' (EfficientNet-Lite0): {e}") from None
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, pixels: Tensor):
        x = (pixels.permute(0, 3, 1, 2).float() / 255.0 - self.mean) / self.std  # (N, 3, S, S)
        if self.cnn is not None:
            a = self.cnn(x)
        else:
            a = self.extractor.extract_features(x).half().float()
        a = a.flatten(2).transpose(1, 2)  # (N, 49, D)
        keys, state = self.model.start(a)
        att = self.model.attention
        prepared = att.prepare(keys) if att is not None else keys
        return keys, prepared, state.h, state.c


class _CaptionLSTM(nn.Module):
    """Stands in for the no-attention captioner's LSTM: one step, ``(x (N, 1, E), (h, c))``."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.stack = exportable_layer(layer, "rnn", script=False)

    def forward(self, x: Tensor, state):
        h, c = state
        y, h_n, c_n = self.stack.step(x[:, 0], h, c)
        return y.unsqueeze(1), (h_n, c_n)


class CaptionStep(nn.Module):
    """:meth:`Captioner._step` itself: previous words (N,) and (h, c, keys, prepared) →
    log-probabilities (N, V), the new h and c, and α (N, 49) with attention."""

    def __init__(self, model: nn.Module):
        super().__init__()
        import copy

        self.model = copy.copy(model)
        self.model._modules = dict(model._modules)
        if model.attention is None:
            self.model._modules["rnn"] = _CaptionLSTM(model.rnn)

    def forward(self, tokens, h, c, keys, prepared):
        log_probs, (h, c, _, _), alpha = self.model._step(tokens, (h, c, keys, prepared))
        return (log_probs, h, c) + ((alpha,) if alpha is not None else ())


def _caption_graphs(model: nn.Module) -> list[GraphSpec]:
    from rnnkit.image_encoders import ENCODERS

    size = ENCODERS[model.config.encoder][0]
    enc = CaptionImageEncoder(model).eval()
    pixels = torch.randint(0, 256, (2, size, size, 3), dtype=torch.uint8)
    with torch.no_grad():
        keys, prepared, h, c = enc(pixels)
    names = ["keys", "prepared", "h", "c"]
    encoder = GraphSpec(
        "image_encoder",
        enc,
        {"pixels": pixels},
        names,
        {"pixels": {0: "images"}} | {n: {0: "images"} for n in names},
        # EfficientNet features are rounded to float16 (as rnnkit caches them): a last-bit
        # difference in a float32 conv can move a value by one float16 step (~5e-4 relative)
        atol=1e-4 if model.cnn is not None else 2e-2,
    )
    outs = ["log_probs", "h_out", "c_out"] + (["attention"] if model.attention is not None else [])
    inputs = {"tokens": torch.tensor([2, 2]), "h": h, "c": c, "keys": keys, "prepared": prepared}
    step = GraphSpec(
        "caption_step",
        CaptionStep(model),
        inputs,
        outs,
        {n: {0: "rows"} for n in [*inputs, *outs]},
    )
    return [encoder, step]


# ---------------------------------------------------------------------------------------------
def build_graphs(task: str, model: nn.Module, fused: bool | None = None) -> list[GraphSpec]:
    """The graphs of a ``task`` model (``lm``, ``music``, ``classify``, ``tag``, ``translate``,
    ``forecast``); an :class:`ExportError` naming what cannot be exported.

    Recurrent layers become onnxruntime's fused ``LSTM``/``GRU``/``RNN`` operators when every
    layer of the model is one ONNX defines (``fused=None``), else cell-by-cell ``Loop``s;
    ``fused=False`` forces the loops."""
    builders = {
        "lm": _lm_graphs,
        "music": _lm_graphs,
        "classify": _classifier_graphs,
        "tag": _tagger_graphs,
        "translate": _seq2seq_graphs,
        "forecast": _forecaster_graphs,
        "caption": _caption_graphs,
    }
    if task not in builders:
        raise ExportError(
            f"task {task!r} has no ONNX export yet (exportable: {', '.join(sorted(builders))})"
        )
    if any(p.dtype != torch.float32 for p in model.parameters()):
        raise ExportError("export writes float32 graphs: the model's parameters must be float32")
    from rnnkit.layers import RecurrentLayer

    layers = [m for m in model.modules() if isinstance(m, RecurrentLayer)]
    fused = fused if fused is not None else all(onnx_operator_fits(m) for m in layers)
    with fused_operators(fused):
        return builders[task](model)
