"""Writing one ONNX graph: version checks, the exporter call, and a load-back check.

Which exporter path: torch 2.13 still ships the TorchScript-based exporter
(``torch.onnx.export(..., dynamo=False)``). It turns a scripted time loop (see
:mod:`rnnkit.export.recurrent`) into an ONNX ``Loop`` whose trip count is the input's length, so
one graph serves every sequence length; the dynamo exporter traces Python loops at one fixed
length (a graph per T) and cannot see through rnnkit's custom autograd functions. The dynamo path
is therefore not used.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from rnnkit.export.recurrent import ExportError

__all__ = ["OPSET", "MIN_ONNXRUNTIME", "check_versions", "export_graph"]

log = logging.getLogger(__name__)

#: the opset every graph is written with (LayerNormalization needs ≥ 17)
OPSET = 17
#: the oldest onnxruntime the graphs were checked against (opset 17 needs ≥ 1.14)
MIN_ONNXRUNTIME = (1, 14)


def _version_tuple(text: str) -> tuple[int, ...]:
    out = []
    for part in text.split(".")[:3]:
        digits = "".join(ch for ch in part if ch.isdigit())
        out.append(int(digits or 0))
    return tuple(out)


def check_versions() -> dict[str, str]:
    """The versions of onnx, onnxruntime and torch, after checking they can write and run
    opset-:data:`OPSET` graphs; an :class:`ExportError` saying what to install otherwise."""
    try:
        import onnx
    except ImportError:
        raise ExportError("export needs the onnx package: pip install 'rnnkit[onnx]'") from None
    try:
        import onnxruntime
    except ImportError:
        raise ExportError(
            "export needs onnxruntime (to check the graphs): pip install 'rnnkit[onnx]'"
        ) from None
    onnx_opset = onnx.defs.onnx_opset_version()
    if onnx_opset < OPSET:
        raise ExportError(
            f"onnx {onnx.__version__} writes opsets up to {onnx_opset}; export needs opset "
            f"{OPSET}: upgrade onnx"
        )
    if _version_tuple(onnxruntime.__version__) < MIN_ONNXRUNTIME:
        need = ".".join(map(str, MIN_ONNXRUNTIME))
        raise ExportError(
            f"onnxruntime {onnxruntime.__version__} is too old for opset {OPSET}; need >= {need}"
        )
    if not hasattr(torch.onnx, "export"):
        raise ExportError(f"torch {torch.__version__} has no torch.onnx.export")
    return {
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "torch": torch.__version__,
    }


def _unfold_symbolic(g, input, dimension, size, step):
    """``x.unfold(dim, size, 1)`` with a dynamic length along ``dim``: the ``size`` shifted slices
    x[j : j + n] (n = len − size + 1) stacked on a new last axis (the forecaster's lag windows;
    torch's own symbolic needs a static length)."""
    from torch.onnx import symbolic_helper as sh

    dim, size, step = (
        sh._get_const(v, "i", n) for v, n in ((dimension, "dim"), (size, "size"), (step, "step"))
    )
    if step != 1:
        return sh._unimplemented("unfold", "step other than 1")

    def const(values):
        return g.op("Constant", value_t=torch.tensor(values, dtype=torch.int64))

    length = g.op("Gather", g.op("Shape", input), const([dim]))  # (1,)
    n = g.op("Sub", length, const([size - 1]))
    parts = []
    for j in range(size):
        piece = g.op("Slice", input, const([j]), g.op("Add", n, const([j])), const([dim]))
        parts.append(g.op("Unsqueeze", piece, const([-1])))
    return g.op("Concat", *parts, axis_i=-1)


def sequences_to_scan_outputs(model) -> int:
    """Rewrite each time loop's list of step outputs as a ``Loop`` scan output; returns how many.

    The TorchScript exporter turns ``outputs.append(h); torch.stack(outputs, 1)`` into
    ``SequenceEmpty`` → a loop-carried sequence with one ``SequenceInsert`` per step →
    ``ConcatFromSequence``. onnxruntime copies the whole sequence on every insert, so a loop of T
    steps costs O(T²). A scan output (the body's value, stacked by the loop along a new axis 0)
    is the same tensor at O(T): the pattern is replaced by the scan output and a ``Transpose``
    that moves the time axis where ``torch.stack`` put it. Anything else is left alone.
    """
    import onnx
    from onnx import helper

    g = model.graph
    inferred = onnx.shape_inference.infer_shapes(model)
    ranks: dict[str, int] = {}

    def collect(graph):
        for vi in list(graph.value_info) + list(graph.output) + list(graph.input):
            if vi.type.tensor_type.HasField("shape"):
                ranks[vi.name] = len(vi.type.tensor_type.shape.dim)
        for node in graph.node:
            for a in node.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    collect(a.g)

    collect(inferred.graph)
    producers = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    rewritten = 0
    for loop in [n for n in g.node if n.op_type == "Loop"]:
        body = next(a.g for a in loop.attribute if a.name == "body")
        n_carried = len(loop.input) - 2
        for j in reversed(range(n_carried)):
            empty = producers.get(loop.input[j + 2])
            seq_in, seq_out = body.input[j + 2].name, body.output[j + 1].name
            inserts = [b for b in body.node if seq_in in b.input]
            outer_users = consumers.get(loop.output[j], [])
            if (
                empty is None
                or empty.op_type != "SequenceEmpty"
                or len(consumers.get(empty.output[0], [])) != 1
                or len(inserts) != 1
                or inserts[0].op_type != "SequenceInsert"
                or len(inserts[0].input) != 2
                or inserts[0].input[0] != seq_in
                or inserts[0].output[0] != seq_out
                or any(seq_out in b.input for b in body.node)
                or len(outer_users) != 1
                or outer_users[0].op_type != "ConcatFromSequence"
            ):
                continue
            concat = outer_users[0]
            attrs = {a.name: helper.get_attribute_value(a) for a in concat.attribute}
            value = inserts[0].input[1]
            rank = ranks.get(value)
            if attrs.get("new_axis", 0) != 1 or rank is None:
                continue
            axis = attrs["axis"] % (rank + 1)
            # the body emits `value` as a scan output (after the carried outputs)
            body.node.remove(inserts[0])
            del body.input[j + 2]
            del body.output[j + 1]
            elem = onnx.TensorProto.FLOAT
            body.output.append(helper.make_tensor_value_info(value, elem, None))
            scan = loop.output[j] + "_scan"
            del loop.input[j + 2]
            del loop.output[j]
            loop.output.append(scan)
            g.node.remove(empty)
            perm = list(range(1, axis + 1)) + [0] + list(range(axis + 1, rank + 1))
            index = list(g.node).index(concat)
            g.node.remove(concat)
            g.node.insert(
                index, helper.make_node("Transpose", [scan], list(concat.output), perm=perm)
            )
            rewritten += 1
    return rewritten


def export_graph(
    module: nn.Module,
    args: tuple,
    path: str | os.PathLike,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: dict[str, dict[int, str]],
    what: str,
) -> Path:
    """Export ``module(*args)`` to ``path`` with the TorchScript-based exporter, then load it
    back with ``onnx.checker``. ``what`` names the graph in errors."""
    import onnx

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # the tracer warns about every shape read and about the loop; the parity tests are
            # what proves the graph right
            warnings.simplefilter("ignore")
            # with scripted time loops inside, trace first: the traced module keeps them as
            # calls, which the exporter turns into Loop nodes (handed the module itself it
            # refuses them); without, export the module itself, so the fused operators'
            # autograd functions keep their ONNX symbolic (a pre-traced graph loses it)
            module = module.eval()
            scripted = any(isinstance(m, torch.jit.ScriptModule) for m in module.modules())
            traced = torch.jit.trace(module, args, check_trace=False) if scripted else module
            torch.onnx.register_custom_op_symbolic("aten::unfold", _unfold_symbolic, OPSET)
            torch.onnx.export(
                traced,
                args,
                str(tmp),
                dynamo=False,
                opset_version=OPSET,
                input_names=list(input_names),
                output_names=list(output_names),
                dynamic_axes=dynamic_axes,
                do_constant_folding=True,
            )
        model = onnx.load(str(tmp))
        if sequences_to_scan_outputs(model):
            onnx.save(model, str(tmp))
        onnx.checker.check_model(str(tmp))
    except ExportError:
        raise
    except Exception as e:  # the exporter's errors are long; the first line says what failed
        tmp.unlink(missing_ok=True)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ExportError(
            f"could not export the {what} graph ({type(module).__name__}): {first}"
        ) from None
    finally:
        torch.onnx.unregister_custom_op_symbolic("aten::unfold", OPSET)
    os.replace(tmp, path)
    log.info("wrote %s", path)
    return path
