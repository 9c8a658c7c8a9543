"""Sequence classification: pooling, masking (padding never changes a prediction), the numeric
(sequential digits) path, word vectors, deterministic batches, overfitting a tiny batch, and the
CLI end to end."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rnnkit.cli import main
from rnnkit.tasks.classifier import (
    TASK,
    AttentionPooling,
    ClassifierConfig,
    ClassifierData,
    pool_sequence,
)
from rnnkit.tasks.common import bucket_batches, collate
from rnnkit.train import TrainConfig

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
POS = ["a great film", "truly great acting", "i loved it", "wonderful and moving", "great fun"]
NEG = ["a dull film", "truly awful acting", "i hated it", "boring and slow", "awful mess ."]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one thread is fastest, and kind to a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def sentiment(tmp_path):
    train = tmp_path / "train.txt"
    train.write_text("".join(f"1 {t}\n" for t in POS) + "".join(f"0 {t}\n" for t in NEG))
    dev = tmp_path / "dev.tsv"
    dev.write_text("text\tlabel\ngreat acting\t1\nawful film\t0\nunseen words here\t1\n")
    return train, dev


def build(train, dev, train_cfg=None, **model_kw):
    data_kw = {k[5:]: model_kw.pop(k) for k in list(model_kw) if k.startswith("data_")}
    configs = {
        "model": ClassifierConfig(
            **{"embed_size": 8, "hidden_size": 8, "dropout": 0.0, **model_kw}
        ),
        "data": ClassifierData(data=str(train), valid=str(dev) if dev else None, **data_kw),
    }
    torch.manual_seed(0)
    return TASK.build(configs, train_cfg or TrainConfig(batch_size=4), torch.device("cpu"))


# ---------------------------------------------------------------------------------------------
# pooling
# ---------------------------------------------------------------------------------------------
def test_pooling_modes_by_hand():
    y = torch.tensor(
        [[[1.0, 10.0], [3.0, 20.0], [5.0, 30.0]], [[2.0, -1.0], [9.0, 9.0], [9.0, 9.0]]]
    )  # second sequence has length 1: its steps 2 and 3 are padding (the 9s)
    lengths = torch.tensor([3, 1])
    assert pool_sequence(y, lengths, "last").tolist() == [[5, 30], [2, -1]]
    # bidirectional: forward half at the last real step, backward half at step 1
    assert pool_sequence(y, lengths, "last", bidirectional=True).tolist() == [[5, 10], [2, -1]]
    assert pool_sequence(y, lengths, "mean").tolist() == [[3, 20], [2, -1]]
    assert pool_sequence(y, lengths, "max").tolist() == [[5, 30], [2, -1]]
    with pytest.raises(ValueError, match="pooling"):
        pool_sequence(y, lengths, "median")


def test_attention_pooling_ignores_padding():
    torch.manual_seed(0)
    att = AttentionPooling(2, 4)
    y = torch.randn(2, 5, 2)
    lengths = torch.tensor([5, 2])
    mask = torch.arange(5) < lengths.unsqueeze(1)
    w = att.weights(y, mask)
    assert torch.allclose(w.sum(1), torch.ones(2))
    assert (w[1, 2:] == 0).all()
    z = pool_sequence(y, lengths, "attention", attention=att)
    alone = pool_sequence(y[1:, :2], lengths[1:], "attention", attention=att)
    assert torch.allclose(z[1:], alone, atol=1e-6)
    # a uniform score gives the mean
    with torch.no_grad():
        att.score.weight.zero_()
    assert torch.allclose(
        pool_sequence(y, lengths, "attention", attention=att)[1], y[1, :2].mean(0)
    )


# ---------------------------------------------------------------------------------------------
# masking: a padded batch's outputs equal each sequence run alone
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kw",
    [
        {"cell": "lstm", "pooling": "last"},
        {"cell": "lstm", "pooling": "max", "char_repr": "cnn"},
        {"cell": "gru", "pooling": "mean", "char_repr": "rnn", "num_layers": 2},
        {"cell": "rnn", "pooling": "attention", "bidirectional": False},
        {"cell": "lstm", "pooling": "last", "layer_norm": True},  # the loop, not the fused kernel
    ],
)
def test_padding_never_changes_a_prediction(sentiment, kw):
    model, training = build(*sentiment, **kw)
    model.eval()
    texts = ["great", "a truly great and moving film", "i hated unseenword"]
    examples = [model.encode(t) for t in texts]
    batch = collate(examples)
    assert batch["inputs"].shape[1] == 6 and (batch["inputs"][0, 1:] == 0).all()
    with torch.no_grad():
        together = model.forward_batch(batch).logits
        for i, ex in enumerate(examples):
            alone = model.forward_batch(collate([ex])).logits
            assert torch.allclose(together[i], alone[0], atol=1e-5), (i, kw)
    probs = model.probabilities(examples)
    assert torch.allclose(probs.sum(1), torch.ones(3))


# ---------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw", [{"pooling": "max"}, {"char_repr": "cnn", "pooling": "attention"}])
def test_overfits_a_tiny_batch(sentiment, kw):
    model, training = build(*sentiment, **kw)
    batch = collate(training.train)
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    model.train()
    for _ in range(60):
        opt.zero_grad()
        loss = model.forward_batch(batch).loss
        loss.backward()
        opt.step()
    assert loss.item() < 0.05
    m = model.evaluate_examples(training.train)
    assert m["accuracy"] == 1.0 and m["macro_f1"] == 1.0


def test_batches_depend_only_on_seed_and_epoch(sentiment):
    _, a = build(*sentiment)
    _, b = build(*sentiment)
    n = a.batches_per_epoch()
    assert n == 3  # 10 examples, batch 4
    for i in reversed(range(n)):  # any access order: a resumed run starts mid-epoch
        assert torch.equal(a.batch(1, i)["inputs"], b.batch(1, i)["inputs"])
    orders = [sorted(k for i in range(n) for k in a._plan_for(e)[i]) for e in (0, 1)]
    assert orders[0] == orders[1] == list(range(10))
    assert a._plan_for(0) != a._plan_for(1)
    rng = np.random.default_rng(0)
    batches = bucket_batches(list(range(1000)), 7, rng, pool=3)
    assert len(batches) == 143 and sorted(sum(batches, [])) == list(range(1000))


def test_labels_vocab_and_holdout(sentiment, tmp_path):
    train, _ = sentiment
    model, training = build(train, None, data_valid_fraction=0.2, data_label_names="0=neg,1=pos")
    assert model.labels == ["0", "1"] and len(training.valid) == 2 and len(training.train) == 8
    assert set(model.predict(["great film"])[0]["probabilities"]) == {"neg", "pos"}
    model2, training2 = build(train, None, data_valid_fraction=0.2)
    assert [e.ids for e in training.valid] == [e.ids for e in training2.valid]  # deterministic
    bad = tmp_path / "bad_dev.txt"
    bad.write_text("1 fine\n2 a label never seen\n")
    with pytest.raises(ValueError, match=r"bad_dev.txt:2: label '2'"):
        build(train, bad)


def test_word_vectors_initialise_embeddings(sentiment, tmp_path):
    vec = tmp_path / "v.txt"
    vec.write_text("great 1 2 3 4 5 6 7 8\nzzz 0 0 0 0 0 0 0 0\n")
    model, _ = build(*sentiment, data_embeddings=str(vec))
    row = model.embedder.embedding.weight[model.vocab.stoi["great"]]
    assert row.tolist() == [1, 2, 3, 4, 5, 6, 7, 8]
    with pytest.raises(ValueError, match="embed-size 8"):
        build(*sentiment, embed_size=4, data_embeddings=str(vec))


def test_char_level_tokens(sentiment):
    model, _ = build(*sentiment, data_level="char")
    assert model.tokenize("ab c") == ["a", "b", " ", "c"]
    assert model.vocab.level == "char"


def test_numeric_rows_as_sequences(tmp_path):
    rng = np.random.default_rng(0)
    rows = rng.integers(0, 17, size=(40, 8))
    labels = (rows[:, :4].sum(1) > rows[:, 4:].sum(1)).astype(int)
    path = tmp_path / "d.csv"
    path.write_text("".join(",".join(map(str, r)) + f",{y}\n" for r, y in zip(rows, labels)))
    kw = {"data_format": "numeric", "data_label_column": "-1", "data_valid_fraction": 0.25}
    model, training = build(path, None, data_step_size=2, pooling="last", **kw)
    assert model.data_config.num_features == 8 and model.data_config.feature_scale == 16
    ex = training.train[0]
    assert ex.features.shape == (4, 2) and ex.length == 4 and ex.features.max() <= 1
    assert len(training.train) == 30 and len(training.valid) == 10
    out = model.predict(["1 2 3 4 5 6 7 8"])[0]
    assert out["label"] in ("0", "1") and out["input"] == "1 2 3 4 5 6 7 8"
    with pytest.raises(ValueError, match="expected 8 numbers"):
        model.predict(["1,2,3"])
    with pytest.raises(ValueError, match="multiple of step_size 3"):
        build(path, None, data_step_size=3, **kw)


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------
def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


TINY = ["--embed-size", 8, "--hidden-size", 8, "--batch-size", 4, "--no-progress", "--threads", 1]


def test_cli_train_classify_evaluate(sentiment, tmp_path, capsys):
    train, dev = sentiment
    run = tmp_path / "run"
    code, _, err = run_cli(
        capsys, "-q", "train", "classify", "--data", train, "--valid", dev, "--out", run,
        "--dry-run", "--char-repr", "cnn", "--pooling", "attention", *TINY,
    )  # fmt: skip
    assert code == 0, err
    saved = json.loads((run / "config.json").read_text())
    assert saved["task"] == "classify" and saved["data"]["labels"] == ["0", "1"]
    code, out, err = run_cli(capsys, "classify", run, "great film", "awful", "--json")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["input"] for r in rows] == ["great film", "awful"]
    assert all(abs(sum(r["probabilities"].values()) - 1) < 1e-5 for r in rows)
    texts = tmp_path / "texts.txt"
    texts.write_text("great film\n\nawful\n")
    code, out, _ = run_cli(capsys, "classify", run, "--file", texts)
    assert code == 0 and len(out.splitlines()) == 2
    png = tmp_path / "confusion.png"
    code, out, err = run_cli(capsys, "evaluate", run, "--data", dev, "--confusion", png, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["examples"] == 3 and 0 <= result["accuracy"] <= 1
    assert png.read_bytes()[:4] == b"\x89PNG"
    code, out, _ = run_cli(capsys, "evaluate", run)  # default: the run's validation file
    assert code == 0 and "accuracy" in out and "macro-F1" in out


def test_ensemble_averages_member_probabilities(sentiment):
    train, dev = sentiment
    a, _ = build(train, dev)
    torch.manual_seed(5)
    b, _ = build(train, dev, embed_size=6, pooling="mean")  # another vocabulary size is fine
    with torch.no_grad():
        for p in b.parameters():
            p.add_(torch.randn_like(p))
    texts = ["great film", "awful acting , truly"]
    pa, pb = (
        torch.tensor([list(r["probabilities"].values()) for r in m.predict(texts)]) for m in (a, b)
    )
    both = torch.tensor([list(r["probabilities"].values()) for r in a.predict(texts, ensemble=[b])])
    torch.testing.assert_close(both, (pa + pb) / 2)
    assert not torch.allclose(pa, pb)
    alone, pair = a.evaluate_file(str(dev)), a.evaluate_file(str(dev), ensemble=[a])
    assert pair["members"] == 2 and pair["accuracy"] == alone["accuracy"]
    assert pair["loss"] == pytest.approx(alone["loss"])
    other, _ = build(train, None, data_label_names="0=neg,1=pos", data_valid_fraction=0.2)
    other.labels = ["neg", "pos"]
    with pytest.raises(ValueError, match="same classes"):
        a.predict(texts, ensemble=[other])


def test_cli_ensemble(sentiment, tmp_path, capsys):
    train, dev = sentiment
    runs = [tmp_path / "r1", tmp_path / "r2"]
    for seed, run in enumerate(runs):
        code, _, err = run_cli(
            capsys, "-q", "train", "classify", "--data", train, "--valid", dev, "--out", run,
            "--max-steps", 3, "--seed", seed, *TINY,
        )  # fmt: skip
        assert code == 0, err
    code, out, err = run_cli(capsys, "evaluate", runs[0], "--ensemble", runs[1], "--json")
    assert code == 0, err
    assert json.loads(out)["members"] == 2
    code, out, err = run_cli(capsys, "classify", runs[0], "good", "--ensemble", runs[1], "--json")
    assert code == 0, err
    both = json.loads(out)["probabilities"]
    singles = [json.loads(run_cli(capsys, "classify", r, "good", "--json")[1]) for r in runs]
    for label, p in both.items():
        assert p == pytest.approx(sum(s["probabilities"][label] for s in singles) / 2)


def test_cli_bad_input_exits_2(sentiment, tmp_path, capsys):
    train, dev = sentiment
    broken = tmp_path / "broken.txt"
    broken.write_text("1 fine\nlonely\n0 bad\n")
    code, _, err = run_cli(
        capsys, "train", "classify", "--data", broken, "--valid", dev, "--dry-run", *TINY
    )
    assert code == 2 and f"{broken}:2:" in err and "Traceback" not in err
    code, _, err = run_cli(
        capsys, "-q", "train", "classify", "--data", broken, "--valid", dev, "--dry-run",
        "--skip-bad-lines", "--out", tmp_path / "r", *TINY,
    )  # fmt: skip
    assert code == 0, err
    code, _, err = run_cli(capsys, "classify", tmp_path / "r")
    assert code == 2 and "TEXT" in err


@pytest.mark.skipif(not (SHARED / "digits").is_dir(), reason="shared data not present")
def test_benchmark_scripts_run_end_to_end(tmp_path):
    """Both quality benchmarks, two steps per run, print their tables."""
    root = Path(__file__).resolve().parents[1]
    for script, only, header in (
        ("classify.py", "digits-lstm", "macro-F1"),
        ("tagging.py", "wnut-crf", "ent. F1"),
    ):
        cmd = [sys.executable, str(root / "benchmarks" / script), "--dry-run", "--only", only]
        done = subprocess.run(
            cmd + ["--out", str(tmp_path / script)], capture_output=True, text=True, cwd=root
        )
        assert done.returncode == 0, done.stderr
        assert header in done.stdout and only in done.stdout.splitlines()[-1]


def test_infer_answers_classify_and_evaluate_requests(sentiment):
    from rnnkit.inference import ClassifyRequest, ClassifyResult, EvaluateRequest

    train, dev = sentiment
    model, _ = build(train, dev)
    request = ClassifyRequest.from_json({"texts": ["great film", "awful acting"]})
    result = model.infer(request)
    assert result.lines() == model.predict(["great film", "awful acting"])
    assert ClassifyResult.from_json(result.to_json()) == result
    metrics = model.infer(EvaluateRequest(data=str(dev))).to_json()
    assert metrics == model.evaluate_file(str(dev))
