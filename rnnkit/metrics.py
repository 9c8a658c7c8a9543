"""Evaluation metrics for classification and tagging, computed from label sequences.

Classification (labels are any hashable values; the class list fixes the matrix order):

* confusion matrix ``C[i, j]`` = number of examples of gold class i predicted as class j;
* accuracy = Σ_i C[i, i] / Σ C;
* per class k: precision P_k = C[k, k] / Σ_i C[i, k], recall R_k = C[k, k] / Σ_j C[k, j],
  F1_k = 2 P_k R_k / (P_k + R_k); a ratio with a zero denominator counts as 0;
* macro-F1 = (1/K) Σ_k F1_k over the classes that occur in the gold labels or the predictions;
* :func:`plot_confusion_matrix` draws the matrix (row-normalised colours, counts written in).

Named entities (IOB2/BIO tags: ``B-X`` begins an entity of type X, ``I-X`` continues it, ``O`` is
outside): :func:`bio_spans` turns a tag sequence into entity spans the way CoNLL's ``conlleval``
does (an ``I-X`` that does not continue an ``X`` entity starts a new one), and
:func:`entity_scores` gives entity-level micro precision / recall / F1, where an entity counts as
correct only if its type, start and end all match — the WNUT and CoNLL shared-task metric.

Translation: :func:`corpus_bleu` and :func:`bleu_scores` wrap sacrebleu's corpus BLEU (Papineni
et al. 2002) on detokenised text, BLEU = BP · exp(Σ_n (1/N) log p_n) × 100, where p_n are the
clipped n-gram precisions over the whole corpus and BP = min(1, exp(1 − r/c)) the brevity
penalty (c hypothesis length, r the closest reference lengths), both sides tokenised by
sacrebleu's ``13a`` tokenizer (as ``mteval-v13a``). Any number of references per sentence.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rnnkit.portable.bio import bio_spans, is_bio

__all__ = [
    "accuracy",
    "bio_spans",
    "bleu_scores",
    "classification_report",
    "confusion_matrix",
    "corpus_bleu",
    "entity_scores",
    "is_bio",
    "macro_f1",
    "per_class_scores",
    "plot_confusion_matrix",
]


def _ratio(a: float, b: float) -> float:
    return float(a) / float(b) if b else 0.0


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r else 0.0


def accuracy(gold: Sequence[Hashable], pred: Sequence[Hashable]) -> float:
    """Share of positions where ``pred`` equals ``gold`` (0 for empty input)."""
    if len(gold) != len(pred):
        raise ValueError(f"gold has {len(gold)} labels, pred {len(pred)}")
    return _ratio(sum(g == p for g, p in zip(gold, pred)), len(gold))


def confusion_matrix(
    gold: Sequence[Hashable], pred: Sequence[Hashable], labels: Sequence[Hashable]
) -> np.ndarray:
    """``(K, K)`` int64 counts, rows gold, columns predicted, in the order of ``labels``."""
    if len(gold) != len(pred):
        raise ValueError(f"gold has {len(gold)} labels, pred {len(pred)}")
    index = {label: i for i, label in enumerate(labels)}
    unknown = {x for x in (*gold, *pred) if x not in index}
    if unknown:
        raise ValueError(f"labels not in the class list: {sorted(map(str, unknown))[:5]}")
    matrix = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for g, p in zip(gold, pred):
        matrix[index[g], index[p]] += 1
    return matrix


def per_class_scores(matrix: np.ndarray, labels: Sequence[Hashable]) -> dict[Any, dict]:
    """Precision, recall, F1 and support (gold count) of each class of a confusion matrix."""
    out = {}
    for k, label in enumerate(labels):
        tp = matrix[k, k]
        p = _ratio(tp, matrix[:, k].sum())
        r = _ratio(tp, matrix[k, :].sum())
        out[label] = {
            "precision": p,
            "recall": r,
            "f1": _f1(p, r),
            "support": int(matrix[k, :].sum()),
        }
    return out


def macro_f1(matrix: np.ndarray) -> float:
    """Mean F1 over the classes present in the gold labels or the predictions."""
    present = (matrix.sum(0) + matrix.sum(1)) > 0
    if not present.any():
        return 0.0
    scores = per_class_scores(matrix, range(len(matrix)))
    return float(np.mean([scores[k]["f1"] for k in range(len(matrix)) if present[k]]))


def classification_report(
    gold: Sequence[Hashable], pred: Sequence[Hashable], labels: Sequence[Hashable]
) -> dict[str, Any]:
    """``accuracy``, ``macro_f1``, ``per_class`` scores and the ``confusion`` matrix (a list of
    lists, JSON-ready) for gold and predicted labels."""
    matrix = confusion_matrix(gold, pred, labels)
    return {
        "examples": len(gold),
        "accuracy": accuracy(gold, pred),
        "macro_f1": macro_f1(matrix),
        "per_class": {str(k): v for k, v in per_class_scores(matrix, labels).items()},
        "labels": [str(x) for x in labels],
        "confusion": matrix.tolist(),
    }


def plot_confusion_matrix(
    matrix: np.ndarray | Sequence[Sequence[int]],
    labels: Sequence[str],
    path: str | os.PathLike[str],
    title: str | None = None,
) -> Path:
    """Write the confusion matrix as a PNG: colour = share of the gold row, text = count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = np.asarray(matrix, dtype=np.int64)
    rows = m.sum(1, keepdims=True)
    share = np.divide(m, rows, out=np.zeros(m.shape, dtype=float), where=rows > 0)
    k = len(labels)
    size = min(14.0, 2.5 + 0.55 * k)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    im = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(k), [str(x) for x in labels], rotation=45, ha="right")
    ax.set_yticks(range(k), [str(x) for x in labels])
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    if k <= 30:
        for i in range(k):
            for j in range(k):
                ax.text(
                    j,
                    i,
                    str(m[i, j]),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if share[i, j] > 0.5 else "black",
                )
    acc = _ratio(np.trace(m), m.sum())
    ax.set_title(title or f"accuracy {acc:.2%} on {m.sum():,} examples")
    from rnnkit.figures import save_heatmap

    return save_heatmap(fig, im, path, "share of gold row")


# ---------------------------------------------------------------------------------------------
# entities
# ---------------------------------------------------------------------------------------------
def entity_scores(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Entity-level micro precision / recall / F1 over sentences, and the same per type.

    P = correct / predicted entities, R = correct / gold entities, F1 = 2PR / (P + R); an entity
    is correct when type, start and end all match a gold entity of the same sentence.
    """
    if len(gold) != len(pred):
        raise ValueError(f"gold has {len(gold)} sentences, pred {len(pred)}")
    n_gold, n_pred, n_ok = Counter(), Counter(), Counter()
    for s, (g, p) in enumerate(zip(gold, pred)):
        if len(g) != len(p):
            raise ValueError(f"sentence {s}: {len(g)} gold tags but {len(p)} predicted")
        gs, ps = set(bio_spans(g)), set(bio_spans(p))
        n_gold.update(x[0] for x in gs)
        n_pred.update(x[0] for x in ps)
        n_ok.update(x[0] for x in gs & ps)

    def scores(ok: int, npred: int, ngold: int) -> dict[str, float]:
        p, r = _ratio(ok, npred), _ratio(ok, ngold)
        return {"precision": p, "recall": r, "f1": _f1(p, r), "support": ngold, "predicted": npred}

    total = scores(sum(n_ok.values()), sum(n_pred.values()), sum(n_gold.values()))
    types = sorted(set(n_gold) | set(n_pred))
    return {**total, "per_type": {t: scores(n_ok[t], n_pred[t], n_gold[t]) for t in types}}


# ---------------------------------------------------------------------------------------------
# translation
# ---------------------------------------------------------------------------------------------
def _reference_streams(hypotheses: Sequence[str], references: Sequence[Sequence[str]]):
    """sacrebleu's layout: stream j holds the j-th reference of every sentence (None where a
    sentence has fewer references)."""
    if len(hypotheses) != len(references):
        raise ValueError(
            f"{len(hypotheses)} hypotheses but references for {len(references)} sentences"
        )
    for i, refs in enumerate(references):
        if isinstance(refs, str) or not refs:
            raise ValueError(
                f"references[{i}] must be a non-empty list of reference strings; got {refs!r}"
            )
    width = max((len(r) for r in references), default=1)
    return [[r[j] if j < len(r) else None for r in references] for j in range(width)]


def bleu_scores(
    hypotheses: Sequence[str], references: Sequence[Sequence[str]], max_order: int = 4
) -> dict[str, Any]:
    """Corpus BLEU with its parts: ``bleu`` (0–100), ``precisions`` (the n-gram precisions p_n
    in %, n = 1..max_order), ``bp`` (brevity penalty), ``hyp_len`` and ``ref_len``.

    ``references[i]`` lists every reference of ``hypotheses[i]`` (the count may vary)."""
    from sacrebleu.metrics import BLEU

    streams = _reference_streams(hypotheses, references)
    result = BLEU(max_ngram_order=max_order, tokenize="13a").corpus_score(list(hypotheses), streams)
    return {
        "bleu": float(result.score),
        "precisions": [float(p) for p in result.precisions],
        "bp": float(result.bp),
        "hyp_len": int(result.sys_len),
        "ref_len": int(result.ref_len),
    }


def corpus_bleu(
    hypotheses: Sequence[str], references: Sequence[Sequence[str]], max_order: int = 4
) -> float:
    """sacrebleu corpus BLEU (0–100, ``13a`` tokenisation); see :func:`bleu_scores`."""
    return bleu_scores(hypotheses, references, max_order)["bleu"]
