"""Export a trained run to ONNX, with a runner that needs neither torch nor rnnkit.

``export_run(run_dir, out_dir)`` (the ``rnnkit export`` verb) writes into ``out_dir``:

* the task's graphs (``*.onnx``, see :mod:`rnnkit.export.graphs`), each checked against the
  PyTorch model on a random padded batch before the export counts as done;
* ``config.json``: format, task, versions, the graph files, the state layout and what the
  runner needs to encode inputs and format results (labels, tags, tokenizer options);
* the vocabularies as rnnkit's vocabulary JSON (``vocab.json``, ``source_vocab.json`` …) and,
  for a CRF tagger, ``crf.json`` (start, transition and end scores; Viterbi runs in the runner);
* ``runner.py``: a copy of :mod:`rnnkit.export.runner`, importing only NumPy, onnxruntime and
  the standard library, with its modules in ``onnx_runner/`` (a copy of
  :mod:`rnnkit.export.onnx_runner` and of the modules of :mod:`rnnkit.portable`), and
  ``inference.py``, a copy of :mod:`rnnkit.inference` (the typed requests and results,
  torch-free) that the runner's ``infer(request)`` answers with.

:func:`export_model` does the same from a model object (what the tests use).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rnnkit.export.graphs import build_graphs, crf_scores, forecaster_state_names
from rnnkit.export.onnx_io import OPSET, check_versions, export_graph
from rnnkit.export.recurrent import ExportError, OnnxStack

__all__ = ["ExportError", "FORMATS", "export_model", "export_run", "is_export_dir", "load_exported"]

log = logging.getLogger(__name__)

FORMATS = ("onnx",)
RUNNER = Path(__file__).with_name("runner.py")
RUNNER_PACKAGE = Path(__file__).with_name("onnx_runner")
PORTABLE = Path(__file__).parent.parent / "portable"
CONTRACT = Path(__file__).parent.parent / "inference.py"


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _copy_runner(out: Path) -> None:
    """Write the torch-free runner into ``out``: ``runner.py``, its package ``onnx_runner/``
    holding the portable modules too (``rnnkit.portable``, minus its ``__init__``), and the
    contract ``inference.py``."""
    shutil.copyfile(RUNNER, out / "runner.py")
    package = out / RUNNER_PACKAGE.name
    shutil.rmtree(package, ignore_errors=True)
    package.mkdir()
    for source in sorted(RUNNER_PACKAGE.glob("*.py")) + sorted(PORTABLE.glob("*.py")):
        if source.parent == PORTABLE and source.name == "__init__.py":
            continue
        shutil.copyfile(source, package / source.name)
    shutil.copyfile(CONTRACT, out / "inference.py")  # the request/result types, torch-free


def _task_config(task: str, model, out: Path) -> dict[str, Any]:
    """What the runner needs beyond the graphs; writes the vocabularies as a side effect."""
    cfg: dict[str, Any] = {}
    vocabs: dict[str, Any] = {}
    if task in ("lm", "music"):
        rnn = model.rnn
        vocabs["vocab"] = model.vocab
        cfg["state"] = ["h", "c"] if rnn.mode == "LSTM" else ["h"]
        cfg["state_shape"] = [rnn.num_layers, rnn.hidden_size]
    elif task in ("classify", "tag"):
        d = model.data_config
        enc = model.encoder
        if enc is not None:
            vocabs["vocab"] = enc.vocab
            if enc.chars is not None:
                vocabs["chars"] = enc.chars
        cfg |= {
            "lowercase": d.lowercase,
            "max_word_len": d.max_word_len,
        }
        if task == "classify":
            cfg |= {
                "labels": list(model.labels),
                "label_names": [model.label_name(x) for x in model.labels],
                "numeric": model.numeric,
                "level": d.level,
                "max_len": d.max_len,
                "num_features": d.num_features,
                "step_size": d.step_size,
                "feature_scale": d.feature_scale,
            }
        else:
            cfg |= {"tags": list(model.tags), "bio": model.bio, "crf": None}
            scores = crf_scores(model)
            if scores is not None:
                _write_json(out / "crf.json", scores)
                cfg["crf"] = "crf.json"
    elif task == "translate":
        vocabs["source"] = model.source_vocab
        vocabs["target"] = model.target_vocab
        cfg["lowercase"] = model.data_config.lowercase
        cfg["state"] = ["h", "c"] if model.is_lstm else ["h"]
        cfg["attention"] = model.attention is not None
    elif task == "forecast":
        c, d = model.config, model.data_config
        rnn = model.rnn
        cfg["state"] = ["h", "c"] if rnn.mode == "LSTM" else ["h"]
        cfg["state_shape"] = [rnn.num_layers, rnn.hidden_size]
        cfg["forecast"] = {
            "input_size": c.input_size,
            "horizon": c.horizon,
            "strategy": c.strategy,
            "head": c.head,
            "levels": list(model.levels),
            "rollout_weight": c.rollout_weight,
            "window_norm": c.window_norm,
            "burn_in": d.burn_in,
            "window": d.window,
            "transform": d.transform,
            "need": max(c.linear_lags - 1, 1 if c.differences else 0),
            "norm_mean": model.norm_mean.tolist(),
            "norm_std": model.norm_std.tolist(),
            "columns": list(model.columns),
            "state_names": forecaster_state_names(model),
        }
    elif task == "caption":
        from rnnkit.image_encoders import ENCODERS

        vocabs["vocab"] = model.vocab
        cfg["state"] = ["h", "c"]
        cfg["image_size"] = ENCODERS[model.config.encoder][0]
        cfg["max_len"] = model.data_config.max_len + 1
    files = {}
    for name, vocab in vocabs.items():
        file = "vocab.json" if name == "vocab" else f"{name}_vocab.json"
        _write_json(out / file, vocab.to_dict())
        files[name] = file
    cfg["vocabularies"] = files
    return cfg


def _check_parity(spec, path: Path) -> float:
    """Run the written graph on its example inputs and compare with PyTorch; the largest
    difference (an :class:`ExportError` past the graph's ``atol``)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    wanted = [i.name for i in sess.get_inputs()]
    got = sess.run(None, {k: v.numpy() for k, v in spec.inputs.items() if k in wanted})
    with torch.no_grad():
        ref = spec.module(*spec.inputs.values())
    ref = ref if isinstance(ref, tuple) else (ref,)
    worst = 0.0
    for a, b in zip(got, ref):
        worst = max(worst, float(np.abs(a - b.numpy()).max()) if a.size else 0.0)
    if not worst <= spec.atol:
        raise ExportError(f"graph {spec.name}: onnxruntime differs from PyTorch by {worst:.3g}")
    return worst


def export_model(
    model, task: str, out_dir: str | os.PathLike, extra: dict | None = None, fused=None
) -> Path:
    """Write ``model`` (a task model of ``task``) as an export folder ``out_dir``; ``fused``
    as :func:`~rnnkit.export.graphs.build_graphs` (None: onnxruntime's fused recurrent operators
    wherever every layer fits them)."""
    versions = check_versions()
    model = model.eval()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    specs = build_graphs(task, model, fused)
    graphs = {}
    for spec in specs:
        path = out / f"{spec.name}.onnx"
        export_graph(
            spec.module,
            tuple(spec.inputs.values()),
            path,
            list(spec.inputs),
            spec.outputs,
            spec.dynamic,
            spec.name,
        )
        _check_parity(spec, path)
        graphs[spec.name] = path.name
    from rnnkit.version import __version__

    config = {
        "format": "rnnkit-onnx",
        "format_version": 1,
        "task": task,
        "rnnkit_version": __version__,
        "opset": OPSET,
        "versions": versions,
        "graphs": graphs,
        **_task_config(task, model, out),
        "fused_operators": any(
            isinstance(m, OnnxStack) for spec in specs for m in spec.module.modules()
        ),
        **(extra or {}),
    }
    _write_json(out / "config.json", config)
    _copy_runner(out)
    log.info("exported %s model to %s (%s)", task, out, ", ".join(graphs.values()))
    return out


def is_export_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder written by :func:`export_run`."""
    from rnnkit.export.runner import is_export_dir as check

    return check(path)


def load_exported(path: str | os.PathLike):
    """An export folder opened with the runner (:class:`rnnkit.export.runner.Exported`): the
    task model's inference methods, on onnxruntime."""
    from rnnkit.export.runner import load

    return load(path)


def export_run(
    run_dir: str | os.PathLike, out_dir: str | os.PathLike, format: str = "onnx", tag="best"
) -> Path:
    """Export the run in ``run_dir`` (its ``tag`` weights) to ``out_dir`` in ``format``."""
    if format not in FORMATS:
        raise ExportError(f"unknown export format {format!r}; known: {', '.join(FORMATS)}")
    from rnnkit.api import load
    from rnnkit.checkpoint import RunDir

    config = RunDir(run_dir).load_config()
    model = load(run_dir, tag=tag)
    return export_model(model, config["task"], out_dir, {"source_run": str(Path(run_dir))})
