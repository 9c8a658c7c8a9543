"""An exported classifier (graph ``classifier``) and tagger (graph ``tagger``, Viterbi over
the CRF scores in ``crf.json``): a label per text, a tag per token, as ``Classifier.predict`` and
``Tagger.tag`` give them."""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

from .batches import length_sorted, pad
from .folder import ExportFolder
from .sampling import softmax
from .shared import bio_spans

_INVISIBLE = re.compile("[\u200b\u2060\ufeff]")


class LabelMethods(ExportFolder):
    """The inference methods of an exported ``classify`` or ``tag`` model."""

    def _token_rows(self, tokens: list[str]) -> tuple[list[int], np.ndarray | None]:
        c = self.config
        words = [t.lower() for t in tokens] if c["lowercase"] else tokens
        ids = self.vocab.encode(words, "unk")
        if "chars" not in self.vocabs:
            return ids, None
        m = max(1, c["max_word_len"])
        kept = [t if len(t) <= m else t[: m // 2] + t[len(t) - (m - m // 2) :] for t in tokens]
        chars = np.zeros((len(kept), max(1, max(map(len, kept), default=1))), np.int64)
        cv = self.vocabs["chars"]
        for i, w in enumerate(kept):
            chars[i, : len(w)] = [cv.stoi.get(ch, cv.unk_id) for ch in w]
        return ids, chars

    def _token_batch(self, rows: list[tuple[list[int], np.ndarray | None]]):
        ids, lengths = pad([r[0] for r in rows])
        feeds = {"inputs": ids, "lengths": lengths}
        if rows[0][1] is not None:
            C = max(r[1].shape[1] for r in rows)
            buf = np.zeros((len(rows), ids.shape[1], C), np.int64)
            for b, (_, ch) in enumerate(rows):
                buf[b, : ch.shape[0], : ch.shape[1]] = ch
            feeds["chars"] = buf
        return feeds

    def _classify_rows(self, inputs: list) -> list:
        c = self.config
        rows = []
        for i, x in enumerate(inputs):
            if c["numeric"]:
                if isinstance(x, str):
                    x = [float(p) for p in re.split(r"[,\s]+", x.strip()) if p]
                values = np.asarray(x, dtype=np.float32).reshape(-1)
                if values.size != c["num_features"]:
                    raise ValueError(
                        f"input {i + 1}: expected {c['num_features']} numbers, found {values.size}"
                    )
                rows.append(values.reshape(-1, c["step_size"]) / (c["feature_scale"] or 1.0))
                continue
            text = x.lower() if c["lowercase"] else x
            tokens = text.split() if c["level"] == "word" else list(text)
            tokens = tokens[: c["max_len"]] if c["max_len"] else tokens
            if not tokens:
                raise ValueError(f"input {i + 1}: the text has no tokens")
            rows.append(self._token_rows(tokens))
        return rows

    def probabilities(self, inputs: list, batch_size: int = 256) -> np.ndarray:
        """softmax(logits) ``(N, K)`` in the given order."""
        rows = self._classify_rows(inputs)
        numeric = self.config["numeric"]
        lengths = [len(r) if numeric else len(r[0]) for r in rows]
        out = np.zeros((len(rows), len(self.config["labels"])), np.float32)
        for idx in length_sorted(lengths, batch_size):
            if numeric:
                T = max(lengths[i] for i in idx)
                x = np.zeros((len(idx), T, self.config["step_size"]), np.float32)
                for b, i in enumerate(idx):
                    x[b, : lengths[i]] = rows[i]
                feeds = {"inputs": x, "lengths": np.array([lengths[i] for i in idx], np.int64)}
            else:
                feeds = self._token_batch([rows[i] for i in idx])
            out[idx] = softmax(self.run("classifier", feeds)["logits"])
        return out

    def classify(self, inputs: list, ensemble=()) -> list[dict[str, Any]]:
        """Each input's ``label``, its ``probability`` and every class's (``Classifier.predict``)."""
        if ensemble:
            raise ValueError("an exported classifier runs alone: --ensemble needs the runs")
        names = self.config["label_names"]
        probs = self.probabilities(list(inputs))
        results = []
        for x, p in zip(inputs, probs.tolist()):
            k = int(np.argmax(p))
            results.append(
                {
                    "input": x if isinstance(x, str) else list(map(float, x)),
                    "label": names[k],
                    "probability": p[k],
                    "probabilities": dict(zip(names, p)),
                }
            )
        return results

    predict = classify

    def viterbi(self, emissions: np.ndarray, length: int) -> list[int]:
        """Best tag path of one sentence over ``emissions (T, K)`` and the CRF scores."""
        crf = self._crf()
        e = emissions[:length].astype(np.float32)
        delta = crf["start"] + e[0]
        pointers = []
        for t in range(1, length):
            scores = delta[:, None] + crf["transitions"]  # (K_prev, K)
            pointers.append(np.argmax(scores, 0))
            delta = scores.max(0) + e[t]
        tag = int(np.argmax(delta + crf["end"]))
        path = [tag]
        for ptr in reversed(pointers):
            tag = int(ptr[tag])
            path.append(tag)
        return path[::-1]

    def _crf(self) -> dict[str, np.ndarray]:
        if not hasattr(self, "_crf_scores"):
            data = json.loads((self.path / self.config["crf"]).read_text(encoding="utf-8"))
            self._crf_scores = {k: np.asarray(v, np.float32) for k, v in data.items()}
        return self._crf_scores

    @staticmethod
    def format_tagged(result: dict[str, Any]) -> str:
        """``word/TAG word/TAG …``."""
        return " ".join(f"{w}/{t}" for w, t in zip(result["tokens"], result["tags"]))

    def plot_attention(self, result: dict[str, Any], path) -> None:
        raise ValueError("attention pictures need rnnkit (matplotlib): use the run, not the export")

    def tag(self, sentences: list, batch_size: int = 128) -> list[dict[str, Any]]:
        """``tokens``, ``tags`` and (BIO tag sets) ``entities`` of each sentence."""
        tags = self.config["tags"]
        token_lists = [s.split() if isinstance(s, str) else list(s) for s in sentences]
        rows = []
        for i, tokens in enumerate(token_lists):
            if not tokens:
                raise ValueError(f"input {i + 1}: the sentence has no tokens")
            cleaned = [(_INVISIBLE.sub("", t) or t) for t in tokens]
            rows.append(self._token_rows(cleaned))
        paths: list[list[int]] = [[] for _ in rows]
        for idx in length_sorted([len(r[0]) for r in rows], batch_size):
            feeds = self._token_batch([rows[i] for i in idx])
            em = self.run("tagger", feeds)["emissions"]
            for b, i in enumerate(idx):
                n = int(feeds["lengths"][b])
                crf = self.config.get("crf")
                paths[i] = self.viterbi(em[b], n) if crf else em[b, :n].argmax(-1).tolist()
        results = []
        for tokens, path in zip(token_lists, paths):
            names = [tags[k] for k in path]
            r: dict[str, Any] = {"tokens": tokens, "tags": names}
            if self.config["bio"]:
                r["entities"] = [
                    {"type": t, "start": s, "end": e, "text": " ".join(tokens[s:e])}
                    for t, s, e in bio_spans(names)
                ]
            results.append(r)
        return results
