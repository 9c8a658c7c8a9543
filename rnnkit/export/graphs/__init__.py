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

import torch
from torch import nn

from rnnkit.export.graphs.captioner import caption_graphs
from rnnkit.export.graphs.forecaster import forecaster_graphs, forecaster_state_names
from rnnkit.export.graphs.labelling import classifier_graphs, crf_scores, tagger_graphs
from rnnkit.export.graphs.language import lm_graphs
from rnnkit.export.graphs.seq2seq import seq2seq_graphs
from rnnkit.export.graphs.spec import GraphSpec
from rnnkit.export.recurrent import ExportError, fused_operators, onnx_operator_fits

__all__ = ["GraphSpec", "build_graphs", "crf_scores", "forecaster_state_names"]


def build_graphs(task: str, model: nn.Module, fused: bool | None = None) -> list[GraphSpec]:
    """The graphs of a ``task`` model (``lm``, ``music``, ``classify``, ``tag``, ``translate``,
    ``forecast``); an :class:`ExportError` naming what cannot be exported.

    Recurrent layers become onnxruntime's fused ``LSTM``/``GRU``/``RNN`` operators when every
    layer of the model is one ONNX defines (``fused=None``), else cell-by-cell ``Loop``s;
    ``fused=False`` forces the loops."""
    builders = {
        "lm": lm_graphs,
        "music": lm_graphs,
        "classify": classifier_graphs,
        "tag": tagger_graphs,
        "translate": seq2seq_graphs,
        "forecast": forecaster_graphs,
        "caption": caption_graphs,
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
