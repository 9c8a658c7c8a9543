"""The rnnkit command end to end: dry runs, every inference verb, resume, crash safety, bad input."""

import json
import math
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rnnkit.cli import main
from rnnkit.tasks.language_model import LanguageModelTraining

TEXT = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
    "All:\nSpeak, speak.\n\nFirst Citizen:\nYou are all resolved rather to die than to famish?\n\n"
) * 20
TINY = [
    "--hidden-size",
    "16",
    "--embed-size",
    "8",
    "--bptt",
    "16",
    "--batch-size",
    "2",
    "--no-progress",
    "--dropout",
    "0",
]


@pytest.fixture()
def corpus(tmp_path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture()
def trained_run(tmp_path, corpus, capsys) -> Path:
    out = tmp_path / "run"
    code, _, err = run_cli(
        capsys,
        "-q",
        "train",
        "lm",
        "--data",
        corpus,
        "--out",
        out,
        "--max-steps",
        30,
        "--eval-every",
        15,
        *TINY,
    )
    assert code == 0, err
    return out


def test_help_lists_verbs_and_flags(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for verb in ("train", "generate", "score", "complete", "evaluate"):
        assert verb in out
    with pytest.raises(SystemExit):
        main(["train", "lm", "--help"])
    out = capsys.readouterr().out
    assert "--hidden-size" in out and "--clip-norm" in out and "--layer-norm" in out


def test_dry_run_then_every_inference_verb(tmp_path, corpus, capsys):
    out = tmp_path / "dry"
    code, _, err = run_cli(
        capsys, "train", "lm", "--data", corpus, "--out", out, "--dry-run", *TINY
    )
    assert code == 0, err
    assert '"hidden_size": 16' in err  # the resolved config is printed ...
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["hidden_size"] == 16 and config["task"] == "lm"  # ... and saved
    for name in ("model.safetensors", "trainer.pt", "metrics.jsonl", "vocab.json", "loss.png"):
        assert (out / name).exists(), name
    steps = [
        r["step"]
        for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
        if r["kind"] == "train"
    ]
    assert max(steps) == 2

    code, stdout, _ = run_cli(
        capsys, "generate", out, "--prompt", "All:", "--length", 20, "--seed", 1, "--json"
    )
    assert code == 0
    g = json.loads(stdout)
    assert len(g["text"]) == 20
    code, stdout, _ = run_cli(
        capsys, "generate", out, "--prompt", "All:", "--length", 20, "--seed", 1
    )
    assert stdout == "All:" + g["text"] + "\n"  # streamed text equals the JSON text

    code, stdout, _ = run_cli(capsys, "score", out, "Speak, speak.", "Speak, spaek.", "--json")
    rows = [json.loads(line) for line in stdout.splitlines()]
    assert len(rows) == 2 and {r["rank"] for r in rows} == {1, 2}
    assert all(math.isclose(r["perplexity"], math.exp(r["nats_per_token"])) for r in rows)
    code, stdout, _ = run_cli(capsys, "score", out, "Speak, speak.", "Speak, spaek.")
    assert "rank" in stdout.splitlines()[0]

    code, stdout, _ = run_cli(capsys, "complete", out, "Spe", "--k", 3, "--json")
    c = json.loads(stdout)
    assert code == 0 and len(c["completions"]) <= 3

    code, stdout, _ = run_cli(capsys, "evaluate", out, "--json")
    e = json.loads(stdout)
    assert e["tokens"] == len(TEXT) - int(0.9 * len(TEXT)) - 1
    code, stdout, _ = run_cli(capsys, "evaluate", out, "--data", corpus, "--json")
    assert json.loads(stdout)["tokens"] == len(TEXT) - 1


def test_config_file_then_flags(tmp_path, corpus, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[model]\nhidden_size = 12\ncell = "gru"\n[train]\nlr = 0.01\n')
    out = tmp_path / "r"
    code, _, err = run_cli(
        capsys,
        "train",
        "lm",
        "--config",
        cfg,
        "--data",
        corpus,
        "--out",
        out,
        "--dry-run",
        "--lr",
        "0.02",
        "--no-progress",
        "--bptt",
        "16",
    )
    assert code == 0, err
    saved = json.loads((out / "config.json").read_text())
    assert saved["model"]["hidden_size"] == 12 and saved["model"]["cell"] == "gru"
    assert saved["train"]["lr"] == 0.02  # the flag beats the file

    bad = tmp_path / "bad.toml"
    bad.write_text("[model]\nhiden_size = 12\n")
    code, _, err = run_cli(capsys, "train", "lm", "--config", bad, "--dry-run")
    assert code == 2 and "bad.toml" in err and "hiden_size" in err


def _one_line_error(code, err, *needles):
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_bad_training_input_is_one_line_exit_2(tmp_path, capsys):
    missing = tmp_path / "nope.txt"
    _one_line_error(
        *run_cli(capsys, "-q", "train", "lm", "--data", missing, "--dry-run")[::2], "nope.txt"
    )
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    _one_line_error(
        *run_cli(capsys, "-q", "train", "lm", "--data", empty, "--dry-run")[::2], "empty"
    )
    latin = tmp_path / "latin.txt"
    latin.write_bytes(b"hello\nwhat a caf\xe9\n" * 3)
    code, _, err = run_cli(capsys, "-q", "train", "lm", "--data", latin, "--dry-run")
    _one_line_error(code, err, "latin.txt", "offset 16", "line 2", "--encoding")
    code, _, err = run_cli(
        capsys,
        "-q",
        "train",
        "lm",
        "--data",
        latin,
        "--dry-run",
        "--encoding",
        "latin-1",
        "--out",
        tmp_path / "ok",
        *TINY[:6],
    )
    # it now reads, and is too short for the batch geometry: a clear error, not a crash
    _one_line_error(code, err, "too short", "batch_size")
    with pytest.raises(SystemExit) as e:  # argparse's own usage errors also exit with 2
        main(["-q", "train", "lm", "--hidden-size", "abc"])
    assert e.value.code == 2 and "hidden-size" in capsys.readouterr().err


def test_bad_inference_input_is_one_line_exit_2(tmp_path, trained_run, capsys):
    code, _, err = run_cli(capsys, "generate", trained_run, "--prompt", "Zebra €")
    _one_line_error(code, err, "'Z'", "'€'", "--drop-unknown")
    code, out, _ = run_cli(
        capsys, "generate", trained_run, "--prompt", "Zebra €", "--drop-unknown", "--length", 5
    )
    assert code == 0
    code, _, err = run_cli(capsys, "generate", tmp_path / "no-such-run")
    _one_line_error(code, err, "no-such-run", "does not exist")
    (trained_run / "model.safetensors").write_bytes(b"\x00\x01garbage")
    code, _, err = run_cli(capsys, "generate", trained_run, "--tag", "last")
    _one_line_error(code, err, "model.safetensors")
    (trained_run / "config.json").write_text("{not json")
    code, _, err = run_cli(capsys, "score", trained_run, "hello")
    _one_line_error(code, err, "config.json")


class Boom:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_pickled_code_in_trainer_state_is_refused(trained_run, capsys):
    with open(trained_run / "trainer.pt", "wb") as f:
        pickle.dump({"step": Boom()}, f)
    code, _, err = run_cli(capsys, "-q", "train", "lm", "--resume", trained_run)
    _one_line_error(code, err, "trainer.pt", "will not be loaded")


def _comparable(run: Path) -> list[tuple]:
    keep = ("kind", "step", "loss", "grad_norm", "lr", "val_loss", "val_bits")
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [tuple(r.get(k) for k in keep) for r in rows]


def _train_cmd(corpus, out, *extra):
    # no time budget (--minutes none): a wall-clock schedule could not repeat bit for bit
    flags = "--max-steps 120 --eval-every 10 --log-every 5 --threads 1 --minutes none"
    flags += " --dropout 0.2 --num-layers 2"
    argv = ["train", "lm", "--data", str(corpus), "--out", str(out), *TINY, *flags.split()]
    return [sys.executable, "-m", "rnnkit", "-q", *argv, *extra]


def test_sigkill_after_checkpoint_then_resume_is_bit_for_bit(tmp_path, corpus):
    reference = tmp_path / "reference"
    subprocess.run(_train_cmd(corpus, reference), check=True, capture_output=True, timeout=300)

    crashed = tmp_path / "crashed"
    proc = subprocess.Popen(
        _train_cmd(corpus, crashed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    trainer = crashed / "trainer.pt"
    while not trainer.exists() and time.monotonic() < deadline:  # wait for the first checkpoint
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert trainer.exists()
    saved_step = torch.load(trainer, weights_only=True)["step"]
    assert saved_step < 120  # it really was interrupted
    resume = [sys.executable, "-m", "rnnkit", "-q", "train", "lm", "--resume", str(crashed)]
    subprocess.run(resume, check=True, capture_output=True, timeout=300)
    assert _comparable(crashed) == _comparable(reference)


def test_interrupted_checkpoint_write_leaves_previous_loadable(
    tmp_path, corpus, capsys, monkeypatch
):
    import rnnkit.checkpoint as ckpt

    out = tmp_path / "run"
    writes = {"n": 0}
    real_replace = os.replace

    def dying_replace(src, dst):
        if str(dst).endswith("model.safetensors"):
            writes["n"] += 1
            # the second checkpoint dies half-way: temp file written, no rename
            if writes["n"] == 2:
                raise KeyboardInterrupt
        return real_replace(src, dst)

    monkeypatch.setattr(ckpt.os, "replace", dying_replace)
    argv = ["-q", "train", "lm", "--data", str(corpus), "--out", str(out)]
    code = main([*argv, "--max-steps", "20", "--eval-every", "5", *TINY])
    assert code == 130
    monkeypatch.setattr(ckpt.os, "replace", real_replace)
    assert not list(out.glob("*.tmp*")) and not list(out.glob(".*tmp*"))  # no temp litter
    from rnnkit.api import load

    model = load(out, tag="last")  # the first checkpoint is intact and loadable
    assert model.score("Speak")["tokens"] == 5
    assert torch.load(out / "trainer.pt", weights_only=True)["step"] == 5
    code, _, err = run_cli(capsys, "-q", "train", "lm", "--resume", out)
    assert code == 0, err


def test_non_finite_loss_stops_with_the_step_or_is_skipped(tmp_path, corpus, capsys, monkeypatch):
    real = LanguageModelTraining.training_loss
    calls = {"n": 0}

    def poisoned(self, model, batch):
        loss, n = real(self, model, batch)
        calls["n"] += 1
        return (loss * float("nan") if calls["n"] == 7 else loss), n

    monkeypatch.setattr(LanguageModelTraining, "training_loss", poisoned)
    out = tmp_path / "nan"
    code, _, err = run_cli(
        capsys,
        "-q",
        "train",
        "lm",
        "--data",
        corpus,
        "--out",
        out,
        "--max-steps",
        20,
        "--eval-every",
        5,
        *TINY,
    )
    assert code == 1 and "step 7" in err and "Traceback" not in err
    assert torch.load(out / "trainer.pt", weights_only=True)["step"] == 5
    from safetensors.torch import load_file

    assert all(torch.isfinite(t).all() for t in load_file(out / "model.safetensors").values())

    calls["n"] = 0
    out2 = tmp_path / "skip"
    code, _, err = run_cli(
        capsys,
        "-q",
        "train",
        "lm",
        "--data",
        corpus,
        "--out",
        out2,
        "--max-steps",
        20,
        "--eval-every",
        5,
        "--on-nan",
        "skip",
        *TINY,
    )
    assert code == 0, err
    assert "done: 20 steps" in err


def test_python_dash_m_entry_point():
    r = subprocess.run(
        [sys.executable, "-m", "rnnkit", "--version"], capture_output=True, text=True
    )
    assert r.returncode == 0 and r.stdout.startswith("rnnkit ")


def test_resume_accepts_the_same_flags_and_names_a_real_change(tmp_path, corpus, capsys):
    """Re-running the training command with --resume added repeats its model and data flags:
    equal values are no change; a different one is refused naming the saved and given value."""
    out = tmp_path / "run"
    first = ["-q", "train", "lm", "--data", corpus, "--out", out, *TINY, "--eval-every", 5]
    code, _, err = run_cli(capsys, *first, "--max-steps", 10)
    assert code == 0, err
    again = ["-q", "train", "lm", "--data", corpus, *TINY, "--eval-every", 5, "--resume", out]
    code, _, err = run_cli(capsys, *again, "--max-steps", 20)
    assert code == 0, err
    steps = [json.loads(line).get("step", 0) for line in (out / "metrics.jsonl").open()]
    assert max(steps) == 20
    code, _, err = run_cli(capsys, *again, "--hidden-size", 32, "--max-steps", 30)
    assert code == 2
    assert "model.hidden_size (saved 16, given 32)" in err and len(err.strip().splitlines()) == 1
