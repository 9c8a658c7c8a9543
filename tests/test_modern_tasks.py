"""The parallel-in-time cells (rnnkit.modern) inside the tasks: ``--cell mingru`` … trains,
resumes, generates and scores through the CLI, and the other tasks build them too."""

from __future__ import annotations

import json

import pytest
import torch

from rnnkit.cli import main
from rnnkit.inference import GenerateRequest, ScoreRequest
from rnnkit.tasks.common.recurrent import LAYERS, recurrent_for
from rnnkit.tasks.language_model import LanguageModelConfig

MODERN = ("mingru", "minlstm", "qrnn", "sru", "mlstm")
TEXT = "the cat sat on the mat. the dog sat on the log.\n" * 40
TINY = "--embed-size 16 --hidden-size 16 --batch-size 4 --bptt 12 --threads 1 --minutes none"


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_every_modern_cell_is_registered():
    assert set(MODERN) <= set(LAYERS)


@pytest.mark.parametrize("cell", MODERN)
def test_train_resume_generate_score(tmp_path, capsys, cell):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    run = tmp_path / "run"
    train = ["-q", "train", "lm", "--data", str(corpus), "--out", str(run), "--cell", cell]
    train += [*TINY.split(), "--num-layers", "2", "--eval-every", "5"]
    assert main([*train, "--max-steps", "10"]) == 0, capsys.readouterr().err
    resume = ["-q", "train", "lm", "--resume", str(run), "--max-steps", "20"]
    assert main(resume) == 0, capsys.readouterr().err
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(r.get("step", 0) for r in records) == 20
    capsys.readouterr()
    assert main(["generate", str(run), "--prompt", "the ", "--length", "30", "--seed", "1",
                 "--json"]) == 0  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert out["tokens"] == 30 and len(out["text"]) == 30

    import rnnkit

    model = rnnkit.load(run)
    again = model.infer(GenerateRequest(prompt="the ", max_tokens=30, seed=1))
    assert again.text == out["text"]  # the CLI is the contract
    scores = model.infer(ScoreRequest(["the cat sat", "sat cat the"])).lines()
    assert all(s["tokens"] == 11 and s["log_prob"] < 0 for s in scores)


@pytest.mark.parametrize("cell", MODERN)
def test_stepping_equals_one_call_over_the_sequence(cell):
    """The LM's carried state (a tuple for mLSTM and QRNN) continues exactly."""
    torch.manual_seed(0)
    cfg = LanguageModelConfig(cell=cell, embed_size=8, hidden_size=8, num_layers=2, dropout=0.0)
    layer = recurrent_for(cfg, 8).double().eval()
    x = torch.randn(3, 10, 8, dtype=torch.float64)
    whole, _ = layer(x)
    first, state = layer(x[:, :4])
    second, _ = layer(x[:, 4:], state)
    torch.testing.assert_close(torch.cat([first, second], 1), whole, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("cell", MODERN)
def test_classifier_and_tagger_build_them(cell):
    from rnnkit.tasks.classifier import ClassifierConfig
    from rnnkit.tasks.tagger import TaggerConfig

    for cfg in (ClassifierConfig(cell=cell, hidden_size=8), TaggerConfig(cell=cell, hidden_size=8)):
        layer = recurrent_for(cfg, 6)
        out, _ = layer(torch.randn(2, 5, 6), lengths=torch.tensor([5, 3]))
        assert out.shape == (2, 5, 16)  # bidirectional by default


@pytest.mark.parametrize("cell", MODERN)
def test_seq2seq_trains_and_its_decoder_steps_match_teacher_forcing(cell):
    """Encoder (2 layers, both ways) and decoder of the cell's family: a few Adam steps lower the
    loss, and decoding step by step with the gold words gives the teacher-forced log-probs."""
    import random

    from rnnkit.tasks.seq2seq import Pair, Seq2Seq, Seq2SeqConfig, Seq2SeqData, collate_pairs

    torch.manual_seed(0)
    digits = list("0123456789")
    cfg = Seq2SeqConfig(cell=cell, embed_size=16, hidden_size=16, num_layers=2, decoder_size=16,
                        attention_size=8, output_size=16, dropout=0.0, label_smoothing=0.0)  # fmt: skip
    model = Seq2Seq(cfg, Seq2SeqData(source_vocab=digits, target_vocab=digits)).double()
    rng = random.Random(0)

    def batch(n):
        pairs = []
        for _ in range(n):
            s = [rng.randrange(10) + 4 for _ in range(rng.randint(2, 5))]
            pairs.append(Pair(s, s[::-1]))
        return collate_pairs(pairs, model.bos, model.eos)

    opt = torch.optim.Adam(model.parameters(), 1e-2)
    fixed = batch(16)
    model.train()
    first = model.forward_batch(fixed).loss.item()
    for _ in range(30):
        loss = model.forward_batch(batch(16)).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert model.forward_batch(fixed).loss.item() < 0.9 * first

    model.eval()
    b = batch(3)
    with torch.no_grad():
        forced = torch.log_softmax(model.forward_batch(b).logits, -1)  # (B, T, V)
        enc = model.encode(b["source"], b["lengths"])
        for t in range(b["target_in"].shape[1]):
            log_probs, enc, weights = model.step(b["target_in"][:, t], enc)
            # step() answers in float32 (the decoding contract); the float64 model agrees
            torch.testing.assert_close(log_probs, forced[:, t].float(), rtol=1e-6, atol=1e-6)
    sources = [[4, 5, 6], [7, 8]]
    greedy = model.decode(sources, 1, max_len=8)
    beam = model.decode(sources, 3, max_len=8)
    for h, s in zip(beam, sources):
        assert len(h.tokens) <= 8 and h.attention.shape == (len(h.tokens), len(s))
    assert all(len(h.tokens) <= 8 for h in greedy)


@pytest.mark.parametrize("cell", MODERN)
def test_forecaster_trains_and_forecasts(tmp_path, cell):
    import numpy as np

    from rnnkit.checkpoint import RunDir
    from rnnkit.tasks import get_task
    from rnnkit.tasks.forecaster import ForecasterConfig, ForecasterData
    from rnnkit.train import TrainConfig, fit

    torch.manual_seed(0)
    series = tmp_path / "s.csv"
    values = np.sin(np.arange(120) / 4.0)
    series.write_text("value\n" + "".join(f"{v}\n" for v in values))
    cfg = ForecasterConfig(cell=cell, hidden_size=8, num_layers=2, horizon=3)
    data = ForecasterData(data=str(series), window=16, burn_in=4)
    tc = TrainConfig(lr=1e-2, batch_size=16, max_steps=6, eval_every=6, progress=False)
    model, training = get_task("forecast").build({"model": cfg, "data": data}, tc, "cpu")
    summary = fit(model, training, tc, RunDir.create(tmp_path / "run"))
    assert np.isfinite(summary["last"]["loss"])
    out = model.forecast(values[:40, None], 3, 0.8, 50, 0)
    assert out["mean"].shape == (3, 1) and np.isfinite(out["mean"]).all()
