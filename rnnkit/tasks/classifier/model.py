"""The many-to-one :class:`Classifier`: encoder, pooling, head; predict and evaluation."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.data.vocab import Vocab
from rnnkit.errors import DataError
from rnnkit.inference import (
    ClassifyRequest,
    ClassifyResult,
    EvaluateRequest,
)
from rnnkit.metrics import classification_report, plot_confusion_matrix
from rnnkit.tasks.base import Output, TaskModel
from rnnkit.tasks.classifier.config import POOLINGS, ClassifierConfig
from rnnkit.tasks.classifier.data import encode_all, read_examples, read_split
from rnnkit.tasks.classifier.encoders import token_features
from rnnkit.tasks.classifier.pooling import AttentionPooling, pool_sequence
from rnnkit.tasks.common.batching import Example, collate, length_sorted_batches, to_device
from rnnkit.tasks.common.recurrent import recurrent_for
from rnnkit.tasks.common.report import scores_table

if TYPE_CHECKING:
    from rnnkit.tasks.classifier.config import ClassifierData


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------
def _parse_names(spec: str | None) -> dict[str, str]:
    names: dict[str, str] = {}
    for part in (spec or "").split(","):
        if part.strip():
            if "=" not in part:
                raise DataError(f"label_names: expected 'label=name' pairs, got {part.strip()!r}")
            k, v = part.split("=", 1)
            names[k.strip()] = v.strip()
    return names


class Classifier(TaskModel):
    """Embedding (or numeric steps) → recurrent encoder → pooling → linear; ``forward`` returns
    logits ``(B, K)``. Inference: :meth:`predict`; evaluation: :meth:`evaluate_file`."""

    config_class = ClassifierConfig

    def __init__(self, config: ClassifierConfig, data_config: ClassifierData, vocab: Vocab | None):
        super().__init__()
        c, d = config, data_config
        if not d.labels:
            raise ValueError("data_config.labels is empty: build the model through the task")
        if c.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}; got {c.pooling!r}")
        self.config = config
        self.data_config = data_config
        self.labels = list(d.labels)
        self.names = _parse_names(d.label_names)
        self.numeric = d.format == "numeric"
        self.vocab = None if self.numeric else vocab
        self.embedder = None
        if self.numeric:
            input_size = d.step_size
            self.encoder = None
        else:
            if vocab is None:
                raise ValueError("a text classifier needs a vocabulary")
            use_chars = c.char_repr != "none" and d.level == "word"
            self.encoder, self.embedder = token_features(c, d, vocab, use_chars)
            input_size = self.embedder.out_size
        self.rnn = recurrent_for(c, input_size)
        features = c.hidden_size * (2 if c.bidirectional else 1)
        self.attention = (
            AttentionPooling(features, c.attention_size) if c.pooling == "attention" else None
        )
        self.drop = nn.Dropout(c.dropout)
        self.head = nn.Linear(features, len(self.labels))

    def forward(
        self, inputs: Tensor, state=None, targets: Tensor | None = None, *, lengths=None, chars=None
    ) -> Output:
        """``inputs (B, T)`` ids or ``(B, T, F)`` values, ``lengths (B,)`` (default: all T) →
        ``Output(logits (B, K), loss, state)``; the loss is the mean cross-entropy."""
        B, T = inputs.shape[:2]
        if lengths is None:
            lengths = torch.full((B,), T, dtype=torch.int64)
        lengths = lengths.cpu()
        mask = (torch.arange(T).unsqueeze(0) < lengths.unsqueeze(1)).to(inputs.device)
        if self.embedder is None:
            x = inputs  # numbers are read as they are: no dropout on raw pixels
        else:
            x = self.drop(self.embedder(inputs, chars, mask))  # (B, T, E)
        y, state = self.rnn(x, state, lengths=lengths)  # (B, T, D·H)
        z = pool_sequence(
            y, lengths, self.config.pooling, self.config.bidirectional, self.attention
        )
        logits = self.head(self.drop(z))  # (B, K)
        loss = F.cross_entropy(logits, targets) if targets is not None else None
        return Output(logits, loss, state)

    def forward_batch(self, batch: dict[str, Any]) -> Output:
        b = to_device(batch, self.device)
        return self(b["inputs"], targets=b["targets"], lengths=b["lengths"], chars=b["chars"])

    # -- encoding ---------------------------------------------------------------------------
    def tokenize(self, text: str) -> list[str]:
        d = self.data_config
        if d.lowercase:
            text = text.lower()
        tokens = text.split() if d.level == "word" else list(text)
        return tokens[: d.max_len] if d.max_len else tokens

    def encode(self, x: str | Sequence[float], target: int = 0, where: str = "") -> Example:
        """One input (a text, or a row of numbers / a string of them) as an :class:`Example`."""
        if self.numeric:
            return self._encode_numbers(x, target, where)
        if not isinstance(x, str):
            raise DataError(f"{where}expected a text, got {type(x).__name__}")
        tokens = self.tokenize(x)
        if not tokens:
            raise DataError(f"{where}the text has no tokens")
        return Example(len(tokens), target, self.encoder.ids(tokens), self.encoder.char_ids(tokens))

    def _encode_numbers(self, x, target: int, where: str) -> Example:
        d = self.data_config
        if isinstance(x, str):
            parts = [p for p in re.split(r"[,\s]+", x.strip()) if p]
            try:
                x = [float(p) for p in parts]
            except ValueError:
                raise DataError(f"{where}expected numbers separated by commas or spaces") from None
        values = np.asarray(x, dtype=np.float32).reshape(-1)
        if values.size != d.num_features:
            raise DataError(
                f"{where}expected {d.num_features} numbers per example, found {values.size}"
            )
        if not np.isfinite(values).all():
            raise DataError(f"{where}the values must be finite numbers")
        steps = values.reshape(-1, d.step_size) / (d.feature_scale or 1.0)  # (T, F)
        return Example(steps.shape[0], target, features=np.ascontiguousarray(steps))

    def label_name(self, label: str) -> str:
        return self.names.get(label, label)

    # -- inference ----------------------------------------------------------------------------
    @torch.no_grad()
    def probabilities(self, examples: Sequence[Example], batch_size: int = 256) -> Tensor:
        """softmax(logits) for each example, ``(N, K)``, in the given order."""
        self.eval()
        out = torch.empty(len(examples), len(self.labels))
        for idx in length_sorted_batches([e.length for e in examples], batch_size):
            logits = self.forward_batch(collate([examples[i] for i in idx])).logits
            out[idx] = torch.softmax(logits.float(), -1).cpu()
        return out

    def _check_ensemble(self, ensemble: Sequence[Classifier]) -> list[Classifier]:
        members = [self, *ensemble]
        for m in ensemble:
            if not isinstance(m, Classifier) or m.labels != self.labels:
                raise ValueError(
                    "ensemble members must be classify runs with the same classes "
                    f"({', '.join(self.labels)})"
                )
        return members

    def ensemble_probabilities(self, encode, ensemble: Sequence[Classifier] = ()) -> Tensor:
        """p(y | x) averaged over this model and the ``ensemble`` members, (1/M) Σ_m p_m(y | x);
        ``encode(model)`` gives the examples as that model encodes them (its own vocabulary)."""
        members = self._check_ensemble(ensemble)
        return sum(m.probabilities(encode(m)) for m in members) / len(members)

    def predict(
        self, inputs: Sequence[str | Sequence[float]], ensemble: Sequence[Classifier] = ()
    ) -> list[dict[str, Any]]:
        """For each input: ``label`` (its display name), ``probability`` and every class's
        ``probabilities`` (averaged over the ``ensemble`` members too, when given)."""

        def encode(model: Classifier) -> list[Example]:
            return [model.encode(x, where=f"input {i + 1}: ") for i, x in enumerate(inputs)]

        probs = self.ensemble_probabilities(encode, ensemble)
        results = []
        for x, p in zip(inputs, probs.tolist()):
            k = int(np.argmax(p))
            results.append(
                {
                    "input": x if isinstance(x, str) else list(map(float, x)),
                    "label": self.label_name(self.labels[k]),
                    "probability": p[k],
                    "probabilities": {self.label_name(lab): q for lab, q in zip(self.labels, p)},
                }
            )
        return results

    #: the requests :meth:`infer` answers
    answers = (ClassifyRequest, EvaluateRequest)

    def answer(self, request: ClassifyRequest) -> ClassifyResult:
        """The class of each input of a :class:`~rnnkit.inference.ClassifyRequest` (with each
        token's saliency when asked, for text classifiers)."""
        predictions = self.predict(request.texts)
        if request.saliency and not self.numeric:
            for p, text in zip(predictions, request.texts):
                p["saliency"] = self.saliency(text, where="input: ")
        return ClassifyResult(predictions)

    @torch.no_grad()
    def saliency(self, text: str, where: str = "") -> list[dict[str, Any]]:
        """Occlusion saliency of each token of ``text`` for the predicted class ŷ:
        w_i = p(ŷ | x) − p(ŷ | x without token i). Positive weights pushed the text towards ŷ,
        negative ones away from it. A one-token text is compared with the uniform 1/K."""
        whole = self.encode(text, where=where)
        tokens = self.tokenize(text)
        dropped = []
        for i in range(whole.length if whole.length > 1 else 0):
            chars = None if whole.chars is None else np.delete(whole.chars, i, axis=0)
            ids = whole.ids[:i] + whole.ids[i + 1 :]
            dropped.append(Example(whole.length - 1, 0, ids, chars))
        probs = self.probabilities([whole, *dropped])
        k = int(probs[0].argmax())
        base = float(probs[0, k])
        if not dropped:
            return [{"token": tokens[0], "weight": base - 1.0 / len(self.labels)}]
        return [{"token": tok, "weight": base - float(p[k])} for tok, p in zip(tokens, probs[1:])]

    @torch.no_grad()
    def evaluate_examples(self, examples: Sequence[Example], batch_size: int = 256) -> dict:
        """Mean cross-entropy ``loss`` and the :func:`~rnnkit.metrics.classification_report`."""
        return self._report(self.probabilities(examples, batch_size), examples)

    def _report(self, probs: Tensor, examples: Sequence[Example]) -> dict:
        gold = torch.tensor([e.target for e in examples])
        loss = float(F.nll_loss(torch.log(probs.clamp_min(1e-12)), gold))
        pred = probs.argmax(1).tolist()
        report = classification_report(gold.tolist(), pred, list(range(len(self.labels))))
        report["labels"] = [self.label_name(x) for x in self.labels]
        report["per_class"] = dict(zip(report["labels"], report["per_class"].values()))
        return {"loss": loss, **report}

    def evaluate_file(
        self,
        path: str | None = None,
        confusion: str | None = None,
        encoding: str | None = None,
        ensemble: Sequence[Classifier] = (),
    ) -> dict[str, Any]:
        """Accuracy, macro-F1, per-class precision/recall and the confusion matrix on a file in
        the run's format (default: the run's validation data); ``confusion`` writes the PNG.
        With ``ensemble`` the class probabilities are averaged over this model and the members."""
        d = self.data_config
        if path is None:
            raw, where = read_split(d, "valid"), f"validation split ({d.valid or d.data})"
        else:
            raw, where = read_examples(d, path, encoding or d.encoding), str(path)
        examples = encode_all(self, raw, where)
        if ensemble:
            probs = self.ensemble_probabilities(
                lambda m: examples if m is self else encode_all(m, raw, where), ensemble
            )
            result = {"data": where, "members": 1 + len(ensemble), **self._report(probs, examples)}
        else:
            result = {"data": where, **self.evaluate_examples(examples)}
        if confusion:
            plot_confusion_matrix(result["confusion"], result["labels"], confusion)
            result["confusion_png"] = str(confusion)
        return result

    @staticmethod
    def format_evaluation(result: dict[str, Any]) -> str:
        lines = [
            f"{result['data']}: {result['examples']:,} examples, accuracy {result['accuracy']:.2%}, "
            f"macro-F1 {result['macro_f1']:.4f}, loss {result['loss']:.4f}",
            *scores_table("class", result["per_class"]),
        ]
        if result.get("confusion_png"):
            lines.append(f"confusion matrix: {result['confusion_png']}")
        return "\n".join(lines)


def format_prediction(result: dict[str, Any]) -> str:
    """``label  probability  input`` on one line."""
    shown = result["input"]
    if not isinstance(shown, str):
        shown = ",".join(f"{v:g}" for v in shown)
    return f"{result['label']:>12}  {result['probability']:.4f}  {shown}"
