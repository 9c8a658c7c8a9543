"""Training from prepared folders end to end: the CLI verbs, equality with the in-memory path,
exact resume after a kill, two torchrun ranks, BPE runs and the adaptive softmax."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rnnkit.cli import main
from rnnkit.data.vocab import Vocab
from rnnkit.tasks.language_model import LanguageModel, LanguageModelConfig, adaptive_cutoffs

TEXT = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
    "All:\nSpeak, speak.\n\nFirst Citizen:\nYou are all resolved rather to die than to famish?\n"
    "Grüße — naïve café 🎉\r\n"
) * 20
TINY = "--hidden-size 16 --embed-size 8 --bptt 16 --batch-size 4 --no-progress --dropout 0".split()


@pytest.fixture()
def corpus(tmp_path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_bytes(TEXT.encode())
    return path


def cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _rows(run: Path):
    keep = ("kind", "step", "loss", "grad_norm", "lr", "val_loss")
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [tuple(json.loads(x).get(k) for k in keep) for x in lines]


def test_prepare_verb_then_training_equals_the_raw_file_path(tmp_path, corpus, capsys):
    folder = tmp_path / "prep"
    code, out, err = cli(
        capsys, "-q", "prepare", "lm", corpus, "--out", folder, "--json", "--no-progress"
    )
    assert code == 0, err
    summary = json.loads(out)
    assert summary["level"] == "char" and summary["dtype"] == "uint16"
    steps = ["--max-steps", "8", "--eval-every", "4", "--threads", "1", "--minutes", "none"]
    for name, data in (("raw", corpus), ("prep", folder)):
        code, _, err = cli(
            capsys,
            "-q",
            "train",
            "lm",
            "--data",
            data,
            "--out",
            tmp_path / f"run-{name}",
            *TINY,
            *steps,
        )
        assert code == 0, err
    assert _rows(tmp_path / "run-raw") == _rows(tmp_path / "run-prep")
    code, out, _ = cli(capsys, "evaluate", tmp_path / "run-prep", "--json")
    assert code == 0 and json.loads(out)["data"].startswith("validation split of")
    code, out, _ = cli(capsys, "prepare", "--verify", folder, "--json")
    assert code == 0 and json.loads(out)["train_tokens"] == summary["train_tokens"]
    data = bytearray((folder / "valid.bin").read_bytes())
    data[0] ^= 1
    (folder / "valid.bin").write_bytes(bytes(data))
    code, _, err = cli(capsys, "prepare", "--verify", folder)
    assert code == 2 and "valid.bin: sha256" in err and len(err.strip().splitlines()) == 1


def _train_cmd(data, out, *extra):
    flags = "--max-steps 60 --eval-every 10 --log-every 5 --threads 1 --minutes none"
    argv = ["train", "lm", "--data", str(data), "--out", str(out), *TINY, *flags.split()]
    return [sys.executable, "-m", "rnnkit", "-q", *argv, *extra]


def _env(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", RNNKIT_CACHE=str(tmp_path / "cache"))
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def test_sigkill_then_resume_on_a_prepared_folder_is_bit_for_bit(tmp_path, corpus, capsys):
    folder = tmp_path / "prep"
    assert (
        cli(
            capsys,
            "-q",
            "prepare",
            "lm",
            corpus,
            "--out",
            folder,
            "--level",
            "word",
            "--no-progress",
        )[0]
        == 0
    )
    extra = ["--batch-size", "2", "--bptt", "4"]
    reference = tmp_path / "reference"
    env = _env(tmp_path)
    subprocess.run(
        _train_cmd(folder, reference, *extra), check=True, capture_output=True, timeout=300, env=env
    )
    crashed = tmp_path / "crashed"
    proc = subprocess.Popen(
        _train_cmd(folder, crashed, *extra),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    trainer = crashed / "trainer.pt"
    deadline = time.monotonic() + 120
    while not trainer.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert torch.load(trainer, weights_only=True)["step"] < 60
    resume = [sys.executable, "-m", "rnnkit", "-q", "train", "lm", "--resume", str(crashed)]
    subprocess.run(resume, check=True, capture_output=True, timeout=300, env=env)
    assert _rows(crashed) == _rows(reference)


@pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")
def test_two_torchrun_ranks_on_a_prepared_folder_equal_one_process(tmp_path, corpus, capsys):
    folder = tmp_path / "prep"
    assert cli(capsys, "-q", "prepare", "lm", corpus, "--out", folder, "--no-progress")[0] == 0
    args = ["--max-steps", "4", "--eval-every", "2", "--threads", "1", *TINY]
    env = _env(tmp_path)
    single, double = tmp_path / "single", tmp_path / "double"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "rnnkit",
            "-q",
            "train",
            "lm",
            "--data",
            str(folder),
            "--out",
            str(single),
            *args,
        ],
        check=True,
        env=env,
        timeout=300,
        capture_output=True,
    )
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "rnnkit",
        "-q",
    ]
    r = subprocess.run(
        [*torchrun, "train", "lm", "--data", str(folder), "--out", str(double), *args],
        env=env,
        timeout=300,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = load_file(single / "model.safetensors"), load_file(double / "model.safetensors")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-5, msg=name)
    carried = torch.load(double / "trainer.pt", weights_only=True)["carried"]
    assert len(carried) == 2 and carried[0]["h"].shape[1] == 2  # two streams per rank


def test_bpe_run_is_cached_and_generate_score_complete_evaluate_decode_exactly(
    tmp_path, corpus, capsys, monkeypatch
):
    monkeypatch.setenv("RNNKIT_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "bpe"
    argv = [
        "-q",
        "train",
        "lm",
        "--data",
        corpus,
        "--level",
        "bpe",
        "--vocab-size",
        "300",
        *TINY,
        "--max-steps",
        "6",
        "--eval-every",
        "3",
        "--softmax",
        "adaptive",
        "--cutoffs",
        "50,150",
    ]
    code, _, err = cli(capsys, *argv, "--out", run)
    assert code == 0, err
    (cached,) = (tmp_path / "cache" / "prepared").iterdir()
    inode = (cached / "train.bin").stat().st_ino
    assert cli(capsys, *argv, "--out", tmp_path / "again")[0] == 0
    assert (cached / "train.bin").stat().st_ino == inode  # the cache was reused, not rewritten
    from rnnkit.api import load

    model = load(run)
    assert model.vocab.level == "bpe" and len(model.vocab) == 300
    text = "Grüße  naïve\r\n\n🎉 café"
    assert model.decode(model.encode(text)) == text
    code, out, _ = cli(capsys, "generate", run, "--length", "30", "--seed", "3", "--json")
    sample = json.loads(out)["text"]
    assert code == 0 and model.decode(model.encode(sample)) == sample
    code, out, _ = cli(capsys, "score", run, "Speak, speak.", "--json")
    scored = json.loads(out)
    lp = model.log_probs("Speak, speak.")
    assert code == 0 and math.isclose(scored["log_prob"], float(lp.sum()), rel_tol=1e-6)
    code, out, _ = cli(capsys, "complete", run, "Spe", "--json")
    assert code == 0 and all(c["word"].startswith("Spe") for c in json.loads(out)["completions"])
    code, out, _ = cli(capsys, "evaluate", run, "--json")
    assert code == 0 and json.loads(out)["tokens"] > 0


def _adaptive(vocab_size=40, **kw):
    vocab = Vocab([f"w{i}" for i in range(vocab_size - 4)], level="word")
    options = dict(embed_size=8, hidden_size=32, dropout=0.0, softmax="adaptive", cutoffs="10,20")
    cfg = LanguageModelConfig(**{**options, **kw})
    torch.manual_seed(0)
    return LanguageModel(cfg, vocab).double()


def test_adaptive_softmax_is_a_distribution_and_its_loss_is_the_target_nll():
    model = _adaptive().eval()
    x = torch.randint(0, 40, (3, 5))
    y = torch.randint(0, 40, (3, 5))
    logp = model(x).logits  # (B, T, V) log-probabilities
    assert logp.shape == (3, 5, 40)
    torch.testing.assert_close(logp.exp().sum(-1), torch.ones(3, 5, dtype=torch.float64))
    want = -logp.gather(2, y.unsqueeze(2)).squeeze(2)
    torch.testing.assert_close(model(x, targets=y).loss, want.mean(), rtol=1e-12, atol=0)
    lp, _ = model.target_log_probs(x, y)
    torch.testing.assert_close(lp, -want, rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        ev = model.evaluate_ids(torch.cat([x[0], y[0]]))
        manual = -model.target_log_probs(
            torch.cat([x[0], y[0]])[None, :-1], torch.cat([x[0], y[0]])[None, 1:]
        )[0].mean()
    assert math.isclose(ev["loss"], float(manual), rel_tol=1e-6)


def test_adaptive_cutoffs_and_tied_weights():
    assert adaptive_cutoffs("2000,10000", 5000) == [2000]
    assert adaptive_cutoffs(" 5, 9", 100) == [5, 9]
    for bad in ("10,5", "a,b", "0"):
        with pytest.raises(ValueError):
            adaptive_cutoffs(bad, 100)
    with pytest.raises(ValueError, match="too small"):
        adaptive_cutoffs("2000", 100)
    with pytest.raises(ValueError, match="tie_weights"):
        _adaptive(tie_weights=True, embed_size=32)


def test_raw_file_over_the_threshold_is_prepared_into_the_cache(
    tmp_path, corpus, capsys, monkeypatch
):
    import rnnkit.tasks.language_model.prepared as plm

    monkeypatch.setenv("RNNKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(plm, "RAW_THRESHOLD_BYTES", 1000)
    code, _, err = cli(
        capsys,
        "-q",
        "train",
        "lm",
        "--data",
        corpus,
        "--out",
        tmp_path / "r",
        *TINY,
        "--max-steps",
        "2",
    )
    assert code == 0, err
    (cached,) = (tmp_path / "cache" / "prepared").iterdir()
    assert (cached / "meta.json").is_file()


def test_word_level_adaptive_run_answers_every_inference_verb(tmp_path, corpus, capsys):
    folder = tmp_path / "words"
    code, _, err = cli(
        capsys, "-q", "prepare", "lm", corpus, "--out", folder, "--level", "word", "--no-progress"
    )
    assert code == 0, err
    run = tmp_path / "run"
    steps = ["--max-steps", "4", "--eval-every", "2", "--threads", "1", "--minutes", "none"]
    code, _, err = cli(
        capsys, "-q", "train", "lm", "--data", folder, "--out", run, *TINY, *steps,
        "--softmax", "adaptive", "--cutoffs", "5,10",
    )  # fmt: skip
    assert code == 0, err
    from rnnkit.api import load
    from rnnkit.inference import EvaluateRequest

    model = load(run)
    assert model.adaptive is not None and model.decoder is None
    code, out, _ = cli(capsys, "complete", run, "Speak,", "--json")
    found = json.loads(out)["completions"]
    assert code == 0 and found and sum(c["probability"] for c in found) <= 1 + 1e-6
    code, out, _ = cli(capsys, "score", run, "Speak, speak.", "--json")
    assert code == 0 and json.loads(out)["log_prob"] < 0
    code, out, _ = cli(capsys, "generate", run, "--length", "5", "--seed", "1", "--json")
    assert code == 0 and json.loads(out)["text"]
    from rnnkit.data.prepared import PreparedCorpus

    evaluated = model.infer(EvaluateRequest()).extra
    direct = model.evaluate_ids(PreparedCorpus(folder).valid)  # the memory map, in chunks
    assert evaluated["data"] == f"validation split of {folder}"
    assert math.isclose(evaluated["loss"], direct["loss"], rel_tol=1e-9)
