"""Character language model: training mechanics and the agreement of generate / score / complete."""

import math

import pytest
import torch

from rnnkit.checkpoint import RunDir
from rnnkit.data.vocab import Vocab
from rnnkit.errors import DataError
from rnnkit.tasks.language_model import (
    LanguageModel,
    LanguageModelConfig,
    LanguageModelTraining,
    sample_next,
)
from rnnkit.train import TrainConfig, fit, seed_everything

VERSE = (
    "the apple and pear salad is sweet.\n"
    "the cat sat on the mat, and the dog sat on the log.\n"
    "a stitch in time saves nine.\n"
)
TEXT = VERSE * 12


def _tiny_model(cell="lstm", hidden=48, **kw) -> LanguageModel:
    vocab = Vocab.build(TEXT)
    cfg = LanguageModelConfig(cell=cell, embed_size=16, hidden_size=hidden, dropout=0.0, **kw)
    return LanguageModel(cfg, vocab)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny LSTM that has memorised TEXT (trained with the real trainer)."""
    seed_everything(0)
    model = _tiny_model()
    ids = torch.tensor(model.vocab.encode(TEXT))
    task = LanguageModelTraining(model, ids, ids, batch_size=4, bptt=32)
    cfg = TrainConfig(
        lr=1e-2,
        max_steps=400,
        eval_every=400,
        log_every=50,
        progress=False,
        schedule="constant",
        clip_norm=1.0,
    )
    run = RunDir.create(tmp_path_factory.mktemp("lm") / "run")
    summary = fit(model, task, cfg, run)
    model.eval()
    return model, summary


def test_tiny_model_overfits_short_text(trained):
    model, summary = trained
    assert summary["last"]["loss"] < 0.1, summary  # nats/char on the memorised text


def test_state_is_carried_across_windows_and_detached():
    seed_everything(1)
    model = _tiny_model().eval()
    ids = torch.tensor(model.vocab.encode(TEXT))
    task = LanguageModelTraining(model, ids, ids, batch_size=2, bptt=8)
    task.start_epoch(0)
    w0, w1 = task.batch(0, 0), task.batch(0, 1)
    assert torch.equal(w0[0][:, 1:], w0[1][:, :-1])  # targets are inputs shifted by one
    assert torch.equal(w1[0][:, 0], w0[1][:, -1])  # window 1 starts where window 0 ended
    loss0, _ = task.training_loss(model, w0)
    state_after_0 = task.state
    assert all(t.grad_fn is None and not t.requires_grad for t in state_after_0)
    loss1, _ = task.training_loss(model, w1)
    # the carried state equals running both windows as one sequence
    both = torch.cat([w0[0], w1[0]], 1)
    targets = torch.cat([w0[1], w1[1]], 1)
    full = model(both, None, targets)
    torch.testing.assert_close(full.logits[:, 8:], model(w1[0], state_after_0).logits)
    torch.testing.assert_close((loss0 + loss1) / 2, full.loss)
    # no graph reaches back into window 0: backward through window 1 leaves no grad behind there
    loss1.backward()
    assert all(t.grad is None for t in state_after_0)


def test_epochs_shift_window_boundaries_but_lose_nothing():
    model = _tiny_model()
    ids = torch.arange(4 * 50) % len(model.vocab)
    task = LanguageModelTraining(model, ids, ids, batch_size=2, bptt=5)
    for epoch in range(3):
        inputs = torch.cat([task.batch(epoch, i)[0] for i in range(task.batches_per_epoch())], 1)
        streams = task._streams_for(epoch).data
        assert torch.equal(inputs, streams[:, : inputs.shape[1]])  # consecutive, nothing repeated
    assert task._offset(0) != task._offset(1)


def test_clipping_bounds_the_applied_gradient(tmp_path):
    seed_everything(2)
    model = _tiny_model(hidden=16)
    ids = torch.tensor(model.vocab.encode(TEXT))
    task = LanguageModelTraining(model, ids, ids, batch_size=2, bptt=8)
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    cfg = TrainConfig(
        optimizer="sgd",
        lr=1.0,
        clip_norm=0.05,
        max_steps=1,
        eval_every=1,
        progress=False,
        schedule="constant",
    )
    run = RunDir.create(tmp_path / "run")
    fit(model, task, cfg, run)
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    logged = [r for r in run.read_metrics() if r["kind"] == "train"][0]["grad_norm"]
    assert logged > 0.05  # the raw norm is logged, and it was above the threshold
    assert (after - before).norm() <= 0.05 * (1 + 1e-5)  # SGD step = lr × clipped gradient


def test_score_is_sum_of_log_probs_and_ranks(trained):
    model, _ = trained
    a = model.score("the apple and pear salad")
    b = model.score("the apple and pair salad")
    assert a["log_prob"] > b["log_prob"]
    lp = model.log_probs("the cat")
    assert a["tokens"] == len("the apple and pear salad")
    assert math.isclose(model.score("the cat")["log_prob"], float(lp.sum()), rel_tol=1e-6)
    assert math.isclose(a["bits_per_token"], a["nats_per_token"] / math.log(2))
    assert math.isclose(a["perplexity"], math.exp(a["nats_per_token"]))


def test_complete_probability_equals_score_difference(trained):
    model, _ = trained
    text = "the cat sat on the m"
    completions = model.complete(text, k=3)
    assert completions[0]["word"] == "mat"
    assert len({c["word"] for c in completions}) == len(completions)
    base = model.score(text)["log_prob"]
    for c in completions:  # p(word) = Σ over boundary characters b of p(continuation + b | text)
        total = sum(
            math.exp(model.score(text + c["continuation"] + b)["log_prob"] - base)
            for b in model.vocab.itos[len(model.vocab.specials) :]
            if not (b.isalnum() or b in "'-_")
        )
        assert math.isclose(c["probability"], total, rel_tol=1e-4)
    assert sum(c["probability"] for c in completions) <= 1 + 1e-6


def test_generation_is_reproducible_and_greedy_at_zero_temperature(trained):
    model, _ = trained
    a = model.generate("the ", 40, temperature=1.0, seed=7)
    b = model.generate("the ", 40, temperature=1.0, seed=7)
    assert a == b and len(a) == 40
    greedy = model.generate("the ", 40, temperature=0)
    # greedy by hand: argmax at every step, state carried
    ids = model.vocab.encode("the ")
    logits, state = model.advance(ids)
    out = []
    for _ in range(40):
        logits[: len(model.vocab.specials)] = -math.inf
        nxt = int(torch.argmax(logits))
        out.append(model.vocab.itos[nxt])
        logits, state = model.advance([nxt], state)
    assert greedy == "".join(out)
    assert model.generate("the ", 40, temperature=1e-4, seed=3) == greedy
    streamed = []
    model.generate("the ", 10, temperature=0, on_text=streamed.append)
    assert "".join(streamed) == greedy[:10]


def test_sampling_filters():
    logits = torch.tensor([0.0, 1.0, 2.0, 3.0])
    g = torch.Generator().manual_seed(0)
    assert {sample_next(logits, 1.0, top_k=1, generator=g) for _ in range(20)} == {3}
    draws = {sample_next(logits, 1.0, top_k=2, generator=g) for _ in range(200)}
    assert draws == {2, 3}
    # p(3) = 0.64, p(2) = 0.24: a nucleus of 0.7 holds exactly those two
    draws = {sample_next(logits, 1.0, top_p=0.7, generator=g) for _ in range(200)}
    assert draws == {2, 3}
    assert sample_next(logits, 0.0) == 3
    with pytest.raises(ValueError):
        sample_next(logits, -1.0)


def test_unknown_prompt_characters(trained):
    model, _ = trained
    with pytest.raises(DataError, match=r"'Z', 'é'.*--drop-unknown"):
        model.generate("Zé the", 5)
    assert len(model.generate("Zé the", 5, unknown="drop", seed=1)) == 5


def test_weight_tying_shares_one_tensor():
    vocab = Vocab.build(TEXT)
    model = LanguageModel(
        LanguageModelConfig(embed_size=16, hidden_size=16, tie_weights=True), vocab
    )
    assert model.decoder.weight is model.embedding.weight
    with pytest.raises(ValueError, match="embed_size .16. must equal hidden_size .32."):
        LanguageModel(LanguageModelConfig(embed_size=16, hidden_size=32, tie_weights=True), vocab)


@pytest.mark.parametrize(
    "cell,kw",
    [
        ("gru", {}),
        ("rnn", {"nonlinearity": "relu", "init": "identity"}),
        (
            "lstm",
            {"layer_norm": True, "num_layers": 2, "dropout": 0.1, "dropout_mode": "variational"},
        ),
    ],
)
def test_other_cells_train_and_evaluate(cell, kw):
    seed_everything(3)
    vocab = Vocab.build(TEXT)
    model = LanguageModel(LanguageModelConfig(cell=cell, embed_size=8, hidden_size=16, **kw), vocab)
    ids = torch.tensor(vocab.encode(TEXT))
    out = model(ids[:40].view(2, 20), None, ids[1:41].view(2, 20))
    out.loss.backward()
    assert out.logits.shape == (2, 20, len(vocab))
    m = model.evaluate_ids(ids[:100])
    assert m["tokens"] == 99 and math.isclose(m["perplexity"], math.exp(m["loss"]))


@pytest.mark.parametrize(
    "kw",
    [
        {"num_layers": 2, "dropout": 0.2, "dropout_mode": "variational", "weight_drop": 0.2},
        {"cell": "gru"},
        {"layer_norm": True},
    ],
    ids=["fused-lstm", "fast-gru", "fast-layer-norm"],
)
def test_bf16_mixed_precision_trains_and_keeps_fp32_weights(tmp_path, kw):
    """precision=bf16 runs the training forward under autocast: the carried state may come back
    in bf16 and is accepted on the next window, weights and optimiser stay fp32, and the loss
    falls as it does in fp32."""
    seed_everything(4)
    vocab = Vocab.build(TEXT)
    model = LanguageModel(LanguageModelConfig(embed_size=16, hidden_size=32, **kw), vocab)
    ids = torch.tensor(model.vocab.encode(TEXT))
    task = LanguageModelTraining(model, ids, ids, batch_size=4, bptt=16)
    cfg = TrainConfig(
        lr=1e-2, max_steps=60, eval_every=60, progress=False, precision="bf16", schedule="constant"
    )
    first = model.evaluate_ids(ids)["loss"]
    summary = fit(model, task, cfg, RunDir.create(tmp_path / "run"))
    assert summary["last"]["loss"] < 0.75 * first
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert task.state is not None  # carried between windows under autocast


def test_fused_lstm_runs_in_fp32_under_bf16_autocast_without_native_bf16(monkeypatch):
    """oneDNN has no bf16 LSTM primitive on a CPU without native bf16 (it raises "could not
    create a primitive descriptor"): there the fused kernel runs in fp32 and equals the fp32
    forward exactly, on any machine (the CPU check is replaced)."""
    import rnnkit.layers
    from rnnkit.layers import LSTM

    monkeypatch.setattr(rnnkit.layers, "cpu_has_native_bf16", lambda: False)
    torch.manual_seed(0)
    layer = LSTM(6, 8, num_layers=2, batch_first=True)
    assert layer._fusable
    x = torch.randn(3, 5, 6)
    expected, (h0, c0) = layer(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, (h, c) = layer(x)
    assert got.dtype == torch.float32 and torch.equal(got, expected)
    assert torch.equal(h, h0) and torch.equal(c, c0)


def test_custom_cells_compute_in_fp32_under_autocast():
    """The hand-written BPTT has one dtype: under autocast it runs in the weights' precision, so
    its outputs equal the fp32 forward exactly."""
    from rnnkit.layers import LSTM

    torch.manual_seed(0)
    layer = LSTM(6, 8, layer_norm=True, batch_first=True)
    x = torch.randn(3, 5, 6)
    expected, _ = layer(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, (h, c) = layer(x)
    assert got.dtype == torch.float32 and torch.equal(got, expected)
