"""The captioner's graphs: ``image_encoder`` (uint8 pixels → attention keys and the first
state) and ``caption_step`` (one word per row → log-probabilities, state, attention)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rnnkit.export.graphs.spec import GraphSpec
from rnnkit.export.recurrent import ExportError, exportable_layer


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


def caption_graphs(model: nn.Module) -> list[GraphSpec]:
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
