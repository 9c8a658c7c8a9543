"""TensorBoard logging: the event file read back with tensorboard's EventAccumulator.

The logger is driven with records in the trainer's metrics.jsonl format, and replayed from a
metrics.jsonl file; the scalar tags, steps, values and the text sample must come back.
"""

import json
import math

import pytest

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from rnnkit.tensorboard_logger import TensorBoardLogger, replay_metrics  # noqa: E402

TRAIN_TAGS = {"train/loss", "train/bits", "train/lr", "train/grad_norm", "train/tokens_per_s"}
VALID_TAGS = {"valid/loss", "valid/bits", "valid/perplexity"}


def _records():
    """Three train records and two evaluations, exactly the keys fit() writes."""
    rows = []
    for step, loss in ((1, 4.2), (10, 3.1), (20, 2.6)):
        rows.append(
            {
                "kind": "train",
                "step": step,
                "epoch": 0,
                "loss": loss,
                "grad_norm": 0.5 + step / 100,
                "lr": 3e-3 * (1 - step / 40),
                "tokens_per_s": 1000.0 + step,
                "time": step / 10,
            }
        )
        if step in (10, 20):
            val = loss + 0.1
            rows.append(
                {
                    "kind": "eval",
                    "val_loss": val,
                    "val_bits": val / math.log(2),
                    "val_perplexity": math.exp(val),
                    "step": step,
                    "time": step / 10 + 0.05,
                }
            )
            rows.append({"kind": "sample", "step": step, "text": f"ROMEO:\nsample at {step}"})
    return rows


def _read(log_dir):
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def _check(acc, bits=True):
    tags = set(acc.Tags()["scalars"])
    expected = TRAIN_TAGS | VALID_TAGS
    if not bits:
        expected = expected - {"train/bits"}
    assert tags == expected
    loss = acc.Scalars("train/loss")
    assert [e.step for e in loss] == [1, 10, 20]
    assert [e.value for e in loss] == pytest.approx([4.2, 3.1, 2.6], rel=1e-6)
    if bits:
        got = [e.value for e in acc.Scalars("train/bits")]
        assert got == pytest.approx([v / math.log(2) for v in (4.2, 3.1, 2.6)], rel=1e-6)
    assert [e.value for e in acc.Scalars("train/tokens_per_s")] == pytest.approx([1001, 1010, 1020])
    assert [e.step for e in acc.Scalars("valid/loss")] == [10, 20]
    assert [e.value for e in acc.Scalars("valid/loss")] == pytest.approx([3.2, 2.7], rel=1e-6)
    # add_text("sample", ...) stores a tensor summary tagged "sample/text_summary"
    samples = acc.Tensors("sample/text_summary")
    assert [e.step for e in samples] == [10, 20]
    text = samples[-1].tensor_proto.string_val[0].decode()
    assert "ROMEO:" in text and "sample at 20" in text


def test_logger_writes_expected_scalar_tags(tmp_path):
    with TensorBoardLogger(tmp_path / "tb") as logger:
        for record in _records():
            if record["kind"] == "train":
                logger.log_train(record)
            elif record["kind"] == "eval":
                logger.log_eval(record)
            else:
                logger.log_sample(record["text"], record["step"])
    _check(_read(tmp_path / "tb"))


def test_replay_rebuilds_the_event_file_from_metrics_jsonl(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"task": "lm"}))
    text = "".join(json.dumps(r) + "\n" for r in _records())
    (run / "metrics.jsonl").write_text(text)
    out = replay_metrics(run)
    assert out == run / "tensorboard"
    replay_metrics(run)  # twice: the folder is replaced, never doubled
    acc = _read(out)
    _check(acc)
    assert len(acc.Scalars("train/loss")) == 3


def test_forecast_runs_get_no_bits(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"task": "forecast"}))
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _records()))
    _check(_read(replay_metrics(run)), bits=False)


def test_purge_step_hides_what_an_interrupted_run_logged_after_its_checkpoint(tmp_path):
    log_dir = tmp_path / "tb"
    with TensorBoardLogger(log_dir) as logger:
        for step in (10, 20, 30):
            logger.log_train({"step": step, "loss": float(step)})
    # resumed from the checkpoint at step 20: step 30 is logged again with a new value
    with TensorBoardLogger(log_dir, purge_step=21) as logger:
        logger.log_train({"step": 30, "loss": 99.0})
    events = _read(log_dir).Scalars("train/loss")
    assert [(e.step, e.value) for e in events] == [(10, 10.0), (20, 20.0), (30, 99.0)]


def _train(tmp_path, *extra):
    """A tiny character LM trained through the CLI with --log tensorboard (2 evaluations)."""
    from rnnkit.cli import main

    text = tmp_path / "tiny.txt"
    if not text.exists():
        text.write_text("the cat sat on the mat.\nthe dog sat on the log.\n" * 40)
    argv = ["-q", "train", "lm", "--data", str(text), "--hidden-size", "8", "--embed-size", "4",
            "--batch-size", "4", "--bptt", "8", "--eval-every", "2", "--log-every", "1",
            "--no-progress", "--threads", "1", "--log", "tensorboard", *extra]  # fmt: skip
    assert main(argv) == 0


def test_training_with_log_tensorboard_writes_the_event_file(tmp_path):
    run = tmp_path / "run"
    _train(tmp_path, "--max-steps", "4", "--out", str(run))
    acc = _read(run / "tensorboard")
    assert set(acc.Tags()["scalars"]) == TRAIN_TAGS | VALID_TAGS
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2, 3, 4]
    assert [e.step for e in acc.Scalars("valid/loss")] == [2, 4]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["kind"] == "eval"]
    assert [e.value for e in acc.Scalars("valid/loss")] == pytest.approx(
        [r["val_loss"] for r in evals], rel=1e-6
    )
    # one text sample per evaluation, recorded in metrics.jsonl (the source of truth) too
    samples = [r for r in records if r["kind"] == "sample"]
    assert [r["step"] for r in samples] == [2, 4]
    assert all(len(r["text"]) > 0 and set(r["text"]) <= set("the catsondglm.\n") for r in samples)
    assert [e.step for e in acc.Tensors("sample/text_summary")] == [2, 4]
    assert "config/text_summary" in acc.Tags()["tensors"]
    # the replayed view has the same scalars
    replayed = _read(replay_metrics(run, tmp_path / "replayed"))
    for tag in TRAIN_TAGS | VALID_TAGS:
        assert [e.value for e in replayed.Scalars(tag)] == [e.value for e in acc.Scalars(tag)]


def test_resumed_run_keeps_one_event_per_step(tmp_path):
    run = tmp_path / "run"
    _train(tmp_path, "--max-steps", "4", "--out", str(run))
    from rnnkit.cli import main

    argv = ["-q", "train", "lm", "--resume", str(run), "--max-steps", "6", "--no-progress"]
    assert main(argv) == 0
    acc = _read(run / "tensorboard")
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2, 3, 4, 5, 6]
    assert [e.step for e in acc.Scalars("valid/loss")] == [2, 4, 6]


def test_without_the_flag_no_event_file_and_no_samples(tmp_path):
    from rnnkit.cli import main

    text = tmp_path / "tiny.txt"
    text.write_text("abc abc abc\n" * 50)
    argv = ["-q", "train", "lm", "--data", str(text), "--hidden-size", "8", "--embed-size", "4",
            "--batch-size", "2", "--bptt", "8", "--max-steps", "2", "--no-progress",
            "--out", str(tmp_path / "run")]  # fmt: skip
    assert main(argv) == 0
    assert not (tmp_path / "run" / "tensorboard").exists()
    assert '"sample"' not in (tmp_path / "run" / "metrics.jsonl").read_text()
