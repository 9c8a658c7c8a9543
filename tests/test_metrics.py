"""Classification and entity metrics against hand-computed examples."""

import numpy as np
import pytest

from rnnkit.metrics import (
    accuracy,
    bio_spans,
    classification_report,
    confusion_matrix,
    entity_scores,
    is_bio,
    macro_f1,
    per_class_scores,
    plot_confusion_matrix,
)


def test_confusion_and_per_class_by_hand():
    gold = ["a", "a", "a", "b", "b", "c"]
    pred = ["a", "b", "a", "b", "c", "c"]
    m = confusion_matrix(gold, pred, ["a", "b", "c"])
    assert m.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert accuracy(gold, pred) == pytest.approx(4 / 6)
    s = per_class_scores(m, ["a", "b", "c"])
    # a: P = 2/2, R = 2/3, F1 = 0.8;  b: P = 1/2, R = 1/2, F1 = 0.5;  c: P = 1/2, R = 1, F1 = 2/3
    assert (s["a"]["precision"], s["a"]["recall"], s["a"]["f1"]) == pytest.approx((1, 2 / 3, 0.8))
    assert (s["b"]["precision"], s["b"]["recall"], s["b"]["f1"]) == pytest.approx((0.5, 0.5, 0.5))
    assert (s["c"]["precision"], s["c"]["recall"], s["c"]["f1"]) == pytest.approx((0.5, 1, 2 / 3))
    assert [s[k]["support"] for k in "abc"] == [3, 2, 1]
    assert macro_f1(m) == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    r = classification_report(gold, pred, ["a", "b", "c"])
    assert r["accuracy"] == pytest.approx(4 / 6) and r["confusion"] == m.tolist()
    assert r["per_class"]["c"]["recall"] == 1.0 and r["examples"] == 6


def test_zero_denominators_and_absent_classes():
    m = confusion_matrix([0, 0], [0, 0], [0, 1, 2])
    s = per_class_scores(m, [0, 1, 2])
    assert s[1] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert macro_f1(m) == 1.0  # classes 1 and 2 never occur: they are not averaged in
    assert accuracy([], []) == 0.0
    with pytest.raises(ValueError, match="not in the class list"):
        confusion_matrix([0], [3], [0, 1])
    with pytest.raises(ValueError):
        accuracy([1, 2], [1])


def test_confusion_png(tmp_path):
    path = plot_confusion_matrix(np.array([[5, 1], [2, 7]]), ["neg", "pos"], tmp_path / "c.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bio_spans_conlleval_rules():
    tags = ["B-PER", "I-PER", "O", "I-LOC", "I-LOC", "B-LOC", "B-LOC", "I-ORG", "O", "B-X"]
    assert bio_spans(tags) == [
        ("PER", 0, 2),
        ("LOC", 3, 5),  # an I- without a B- starts an entity
        ("LOC", 5, 6),
        ("LOC", 6, 7),
        ("ORG", 7, 8),  # an I- of another type starts a new one
        ("X", 9, 10),
    ]
    assert bio_spans(["O", "O"]) == [] and bio_spans([]) == []
    with pytest.raises(ValueError, match="not a BIO tag"):
        bio_spans(["NOUN"])
    assert is_bio(["O", "B-x", "I-x"]) and not is_bio(["NOUN", "VERB"]) and not is_bio(["O"])


def test_entity_scores_by_hand():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "O"], ["B-ORG", "B-LOC"]]
    # gold: PER(0,2) LOC(3,4) | ORG(0,1)   pred: PER(0,2) | ORG(0,1) LOC(1,2)
    s = entity_scores(gold, pred)
    assert s["precision"] == pytest.approx(2 / 3) and s["recall"] == pytest.approx(2 / 3)
    assert s["f1"] == pytest.approx(2 / 3)
    assert s["per_type"]["PER"]["f1"] == 1.0
    assert s["per_type"]["LOC"] == {
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "support": 1,
        "predicted": 1,
    }
    # a boundary error counts as one false positive and one false negative
    s = entity_scores([["B-PER", "I-PER"]], [["B-PER", "O"]])
    assert (s["precision"], s["recall"], s["f1"]) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError):
        entity_scores([["O"]], [["O", "O"]])


def test_matches_seqeval_when_installed():
    seqeval = pytest.importorskip("seqeval.metrics")
    gold = [["B-PER", "I-PER", "O", "I-LOC", "B-ORG"], ["O", "B-X", "I-X", "I-Y"]]
    pred = [["B-PER", "O", "O", "B-LOC", "B-ORG"], ["O", "B-X", "I-X", "B-Y"]]
    s = entity_scores(gold, pred)
    assert s["f1"] == pytest.approx(seqeval.f1_score(gold, pred))
    assert s["precision"] == pytest.approx(seqeval.precision_score(gold, pred))
