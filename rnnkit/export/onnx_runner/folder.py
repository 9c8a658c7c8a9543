"""An export folder opened for running: its ``config.json``, its vocabularies and one
onnxruntime session per graph (opened on first use)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .vocab import Vocab

#: ``config.json``'s ``format`` in a folder written by ``rnnkit export``
FORMAT = "rnnkit-onnx"


class ExportFolder:
    """``config.json``, the vocabularies and the graphs, run by name; each task's methods
    (:class:`~.model.Exported`) build on it."""

    def __init__(self, path: str | Path, threads: int | None = None):
        import onnxruntime as ort

        self.path = Path(path)
        cfg_path = self.path / "config.json"
        if not cfg_path.exists():
            raise FileNotFoundError(f"{cfg_path}: no config.json (not an rnnkit export folder)")
        self.config = json.loads(cfg_path.read_text(encoding="utf-8"))
        if self.config.get("format") != FORMAT:
            raise ValueError(f"{cfg_path}: not an rnnkit ONNX export (format {FORMAT!r})")
        self.task = self.config["task"]
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self._ort, self._options, self._sessions = ort, options, {}
        self.vocabs = {
            name: Vocab(json.loads((self.path / file).read_text(encoding="utf-8")))
            for name, file in self.config.get("vocabularies", {}).items()
        }

    def session(self, name: str):
        if name not in self._sessions:
            file = self.path / self.config["graphs"][name]
            self._sessions[name] = self._ort.InferenceSession(
                str(file), self._options, providers=["CPUExecutionProvider"]
            )
        return self._sessions[name]

    def run(self, graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        sess = self.session(graph)
        wanted = {i.name for i in sess.get_inputs()}
        outs = sess.run(None, {k: v for k, v in feeds.items() if k in wanted})
        return {o.name: v for o, v in zip(sess.get_outputs(), outs)}

    @property
    def vocab(self) -> Vocab:
        """The vocabulary of a model with one (all but the translator)."""
        return self.vocabs["vocab"]

    def zero_state(self, batch: int) -> dict[str, np.ndarray]:
        layers, hidden = self.config["state_shape"]
        return {n: np.zeros((layers, batch, hidden), np.float32) for n in self.config["state"]}


def is_export_dir(path: str | Path) -> bool:
    """Whether ``path`` is an rnnkit ONNX export folder."""
    cfg = Path(path) / "config.json"
    try:
        return json.loads(cfg.read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False
