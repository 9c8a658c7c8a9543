"""Tests for rnnkit.checkpoint: atomic writes, safetensors, safe trainer state, run directories."""

import json
import os
import pickle
import random
import re

import numpy as np
import pytest
import torch
from torch import nn

from rnnkit.checkpoint import (
    RunDir,
    append_jsonl,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    capture_rng_state,
    default_run_dir,
    load_tensor_metadata,
    load_tensors,
    load_trainer_state,
    restore_rng_state,
    save_tensors,
    save_trainer_state,
)
from rnnkit.errors import CheckpointError


def _leftovers(directory):
    return [p.name for p in directory.iterdir() if p.name.endswith(".tmp")]


# ------------------------------------------------------------------------------- atomic writes


def test_atomic_writes(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "héllo\n")
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "héllo\n"
    atomic_write_json(tmp_path / "a.json", {"b": 1, "a": [1, 2]})
    text = (tmp_path / "a.json").read_text()
    assert json.loads(text) == {"b": 1, "a": [1, 2]}
    assert text.index('"b"') < text.index('"a"')  # insertion order kept
    atomic_write_bytes(tmp_path / "a.txt", b"new")
    assert (tmp_path / "a.txt").read_bytes() == b"new"
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("where", ["replace", "fsync"])
@pytest.mark.parametrize("error", [OSError, KeyboardInterrupt])
def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch, where, error):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"old contents")

    def boom(*args, **kwargs):
        raise error("simulated crash")

    monkeypatch.setattr(os, where, boom)
    with pytest.raises(error):
        atomic_write_bytes(path, b"new contents that never land")
    monkeypatch.undo()
    assert path.read_bytes() == b"old contents"
    assert _leftovers(tmp_path) == []


def test_append_jsonl_and_torn_last_line(tmp_path):
    run = RunDir.create(tmp_path / "run")
    assert run.read_metrics() == []
    run.log_metrics({"step": 1, "loss": 2.5})
    run.log_metrics({"step": 2, "loss": 2.0})
    with open(run.metrics_path, "a") as f:
        f.write('{"step": 3, "lo')  # the process died mid-append
    assert [r["step"] for r in run.read_metrics()] == [1, 2]
    append_jsonl(run.metrics_path, {"step": 4})  # starts on a fresh line
    with pytest.raises(CheckpointError) as info:
        run.read_metrics()  # the torn record is now in the middle: an error naming the line
    assert str(info.value).startswith(f"{run.metrics_path}:3:")


# ------------------------------------------------------------------------------- safetensors


class TiedLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(11, 4)
        self.rnn = nn.GRU(4, 4, batch_first=True)
        self.head = nn.Linear(4, 11)
        self.head.weight = self.embedding.weight  # weight tying


def test_safetensors_round_trip_with_tied_weights(tmp_path):
    torch.manual_seed(0)
    model = TiedLM()
    state = model.state_dict()
    assert state["head.weight"].data_ptr() == state["embedding.weight"].data_ptr()
    path = tmp_path / "model.safetensors"
    save_tensors(path, state, metadata={"task": "lm"})
    loaded = load_tensors(path)
    assert set(loaded) == set(state)
    for name in state:
        assert torch.equal(loaded[name], state[name]), name
    assert loaded["head.weight"] is loaded["embedding.weight"]
    assert load_tensor_metadata(path) == {"task": "lm"}
    fresh = TiedLM()
    fresh.load_state_dict(loaded)
    assert fresh.head.weight is fresh.embedding.weight
    assert torch.equal(fresh.head.weight, model.head.weight)


def test_safetensors_views_and_shared_storage(tmp_path):
    base = torch.arange(12.0).view(3, 4)
    tensors = {"t": base.t(), "row0": base[0], "row1": base[1], "empty": torch.empty(0)}
    path = tmp_path / "views.safetensors"
    save_tensors(path, tensors)
    loaded = load_tensors(path)
    for name, t in tensors.items():
        assert torch.equal(loaded[name], t)
    assert loaded["row0"] is not loaded["row1"]


@pytest.mark.parametrize("cut", [1, 7, 20, -1])
def test_truncated_safetensors_is_a_checkpoint_error(tmp_path, cut):
    path = tmp_path / "model.safetensors"
    save_tensors(path, {"w": torch.randn(10, 10)})
    data = path.read_bytes()
    path.write_bytes(data[:cut])
    with pytest.raises(CheckpointError) as info:
        load_tensors(path)
    assert str(path) in str(info.value)


def test_garbage_and_missing_safetensors(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_tensors(path)
    with pytest.raises(CheckpointError, match="no such file"):
        load_tensors(tmp_path / "missing.safetensors")


# ------------------------------------------------------------------------------- trainer state


def _draw():
    return (
        [random.random() for _ in range(3)] + [random.gauss(0, 1)],
        np.random.rand(3).tolist() + [np.random.randn()],
        torch.rand(3).tolist() + torch.randn(1).tolist(),
    )


def test_trainer_state_round_trip_restores_rng_and_optimizer(tmp_path):
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(4, 3)).pow(2).sum().backward()
        opt.step()
    random.gauss(0, 1)  # leave a cached gaussian in both generators
    np.random.randn()
    path = tmp_path / "trainer.pt"
    state = {
        "optimizer": opt.state_dict(),
        "rng": capture_rng_state(),
        "step": 3,
        "epoch": 0,
        "best_loss": np.float64(1.5),  # NumPy scalars are converted, not refused
    }
    save_trainer_state(path, state)
    expected = _draw()
    _draw()  # move every generator on

    loaded = torch.load(path, weights_only=True)  # the contract: plain weights_only loading
    assert loaded["step"] == 3 and loaded["best_loss"] == 1.5
    loaded = load_trainer_state(path)
    restore_rng_state(loaded["rng"])
    assert _draw() == expected

    fresh = torch.optim.AdamW(nn.Linear(3, 2).parameters(), lr=1e-2)
    fresh.load_state_dict(loaded["optimizer"])
    for a, b in zip(fresh.state.values(), opt.state.values(), strict=True):
        assert torch.equal(a["exp_avg"], b["exp_avg"])
        assert torch.equal(a["exp_avg_sq"], b["exp_avg_sq"])


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"echo pwned > {self.marker}",))


@pytest.mark.parametrize("writer", ["pickle", "pickle-protocol-2", "torch.save"])
def test_malicious_pickle_is_refused_and_not_executed(tmp_path, writer):
    marker = tmp_path / "pwned"
    path = tmp_path / "trainer.pt"
    payload = {"step": 1, "optimizer": _Evil(marker)}
    if writer.startswith("pickle"):
        path.write_bytes(pickle.dumps(payload, protocol=2 if "2" in writer else None))
    else:
        torch.save(payload, path)
    with pytest.raises(CheckpointError) as info:
        load_trainer_state(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert "disallowed (non-tensor) objects" in message and "will not be loaded" in message
    assert not marker.exists()


def test_save_trainer_state_refuses_unloadable_objects(tmp_path):
    path = tmp_path / "trainer.pt"
    with pytest.raises(TypeError, match="weights_only"):
        save_trainer_state(path, {"thing": _Evil(tmp_path / "x")})
    assert not path.exists() and _leftovers(tmp_path) == []


def test_corrupt_trainer_state(tmp_path):
    path = tmp_path / "trainer.pt"
    save_trainer_state(path, {"step": 1, "w": torch.ones(1000)})
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_trainer_state(path)
    with pytest.raises(CheckpointError, match="no such file"):
        load_trainer_state(tmp_path / "missing.pt")


# ------------------------------------------------------------------------------- run directory


def test_run_dir_round_trip(tmp_path):
    run = RunDir.create(tmp_path / "runs" / "lm")
    with pytest.raises(CheckpointError, match="already exists"):
        RunDir.create(run.path)
    RunDir.create(run.path, exist_ok=True)
    run.save_config({"task": "lm", "model": {"hidden_size": 8}})
    config = run.load_config()
    assert config["task"] == "lm" and config["rnnkit_version"]
    model = TiedLM()
    run.save_checkpoint(model.state_dict(), {"step": 5, "rng": capture_rng_state()})
    run.save_checkpoint(model.state_dict(), tag="best")
    assert run.model_path("last").name == "model.safetensors"
    assert run.model_path("best").name == "best.safetensors"
    assert run.trainer_path.name == "trainer.pt"
    for tag in ("last", "best"):
        loaded = run.load_model_state(tag)
        assert torch.equal(loaded["rnn.weight_hh_l0"], model.rnn.weight_hh_l0)
    assert run.load_trainer_state()["step"] == 5
    run.validate()
    with pytest.raises(ValueError):
        run.model_path("final")


def test_non_finite_weights_refused_and_old_checkpoint_kept(tmp_path):
    run = RunDir.create(tmp_path / "run")
    good = {"w": torch.ones(3), "steps": torch.tensor([1])}
    run.save_checkpoint(good)
    before = run.model_path().read_bytes()
    for bad_value in (float("nan"), float("inf")):
        bad = {"w": torch.tensor([1.0, bad_value, 2.0]), "steps": torch.tensor([2])}
        with pytest.raises(CheckpointError, match=r"non-finite.*'w' \(1 of 3\)"):
            run.save_checkpoint(bad, {"step": 2})
    assert run.model_path().read_bytes() == before
    assert not run.trainer_path.exists()


def test_validate_names_the_problem(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        RunDir(tmp_path / "nope").validate()
    run = RunDir.create(tmp_path / "run")
    with pytest.raises(CheckpointError) as info:
        run.validate()
    assert str(info.value).startswith(str(run.config_path)) and "missing" in str(info.value)
    run.config_path.write_text('{\n  "task": "lm",\n  oops\n}')
    with pytest.raises(CheckpointError) as info:
        run.validate()
    assert str(info.value).startswith(f"{run.config_path}:3: not valid JSON")
    run.save_config({"task": "lm"})
    with pytest.raises(CheckpointError) as info:
        run.validate()
    assert str(run.model_path()) in str(info.value) and "missing" in str(info.value)
    run.save_checkpoint({"w": torch.randn(50)})
    run.validate()
    data = run.model_path().read_bytes()
    run.model_path().write_bytes(data[:-8])
    with pytest.raises(CheckpointError, match="truncated"):
        run.validate()
    run.model_path().write_bytes(data)
    run.vocab_path.write_text("{not json")
    with pytest.raises(CheckpointError, match="vocab.json:1: not valid JSON"):
        run.validate()


def test_default_run_dir():
    path = default_run_dir("lm")
    assert path.parent.name == "runs"
    assert re.fullmatch(r"lm-\d{8}-\d{6}", path.name)
