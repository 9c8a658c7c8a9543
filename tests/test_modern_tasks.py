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
