"""Run comparison: scanning run folders into rows, sorting, JSON, and the overlaid loss plot.

The run folders are made here: three written by hand in the trainer's format (config.json
sections, metrics.jsonl records, a safetensors file whose header gives the parameter count)
and one made by a real two-evaluation training run, so the format cannot drift from fit()'s.
"""

import json

import numpy as np
import pytest
import torch

from rnnkit.checkpoint import RunDir, save_tensors
from rnnkit.runs import (
    COLUMNS,
    find_runs,
    format_table,
    plot_runs,
    runs_to_json,
    scan_runs,
    sort_runs,
    summarize_run,
)


def _make_run(path, task, model, evals, data=None, train_losses=(3.0, 2.5, 2.0), tensors=None):
    run = RunDir.create(path)
    run.save_config({"task": task, "model": model, "data": data or {}, "train": {"lr": 1e-3}})
    steps = [10 * (i + 1) for i in range(len(train_losses))]
    for i, (step, loss) in enumerate(zip(steps, train_losses)):
        run.log_metrics({"kind": "train", "step": step, "epoch": 0, "loss": loss,
                         "grad_norm": 1.0, "lr": 1e-3, "tokens_per_s": 100.0, "time": 6.0 * (i + 1)})  # fmt: skip
        if i < len(evals):
            run.log_metrics({"kind": "eval", **evals[i], "step": step, "time": 6.0 * (i + 1) + 1})
    save_tensors(run.model_path("last"), tensors or {"w": torch.zeros(3, 4), "b": torch.zeros(5)})
    return run


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    lstm = {"cell": "lstm", "hidden_size": 64, "num_layers": 2, "layer_norm": True}
    _make_run(root / "lm-a", "lm", lstm, [{"val_loss": 2.1}, {"val_loss": 1.9}, {"val_loss": 2.0}])
    _make_run(
        root / "group" / "clf",
        "classify",
        {"cell": "gru", "hidden_size": 32, "num_layers": 1},
        [{"val_loss": 0.7, "val_accuracy": 0.81}, {"val_loss": 0.6, "val_accuracy": 0.78}],
    )
    _make_run(
        root / "ptb",
        "lm",
        {"cell": "lstm", "hidden_size": 200, "num_layers": 2},
        [{"val_loss": 5.0, "val_perplexity": 150.0}, {"val_loss": 4.8, "val_perplexity": 121.5}],
        data={"level": "word"},
        tensors={"emb": torch.zeros(10, 4), "tied": torch.zeros(10, 4)},
    )
    # a real run: tiny data, tiny model, two evaluations (through the CLI, as a user makes one)
    from rnnkit.cli import main

    rng = np.random.default_rng(0)
    text = root.parent / "tiny.txt"
    text.write_text("".join(rng.choice(list("abcde \n"), size=3000)))
    argv = ["-q", "train", "lm", "--data", str(text), "--hidden-size", "8", "--embed-size", "4",
            "--batch-size", "4", "--bptt", "8", "--max-steps", "4", "--eval-every", "2",
            "--log-every", "1", "--no-progress", "--threads", "1", "--out", str(root / "real")]  # fmt: skip
    assert main(argv) == 0
    return root


def test_find_runs_walks_folders_and_stops_at_a_run(runs_root):
    found = find_runs([runs_root])
    assert [p.relative_to(runs_root).as_posix() for p in found] == [
        "group/clf",
        "lm-a",
        "ptb",
        "real",
    ]
    assert find_runs([runs_root / "ptb"]) == [runs_root / "ptb"]
    with pytest.raises(FileNotFoundError, match="nope"):
        find_runs([runs_root / "nope"])


def test_rows_hold_task_cell_size_steps_time_best_path(runs_root):
    rows = {r.path: r for r in scan_runs([runs_root])}
    lm = rows[str(runs_root / "lm-a")]
    assert (lm.task, lm.cell, lm.size, lm.steps, lm.time) == ("lm", "lstm+ln", "2×64", 30, 19.0)
    assert (lm.metric, lm.best) == ("val_loss", 1.9)  # the lowest, not the last
    assert lm.params == 3 * 4 + 5
    clf = rows[str(runs_root / "group" / "clf")]
    assert (clf.cell, clf.size, clf.metric, clf.best) == ("gru", "1×32", "val_accuracy", 0.81)
    ptb = rows[str(runs_root / "ptb")]
    assert (ptb.metric, ptb.best) == ("val_perplexity", 121.5)  # word level: perplexity


def test_a_real_run_is_summarised_from_its_files(runs_root):
    row = summarize_run(runs_root / "real")
    run = RunDir(runs_root / "real")
    evals = [r for r in run.read_metrics() if r["kind"] == "eval"]
    assert len(evals) == 2
    assert (row.task, row.cell, row.size, row.steps) == ("lm", "lstm", "1×8", 4)
    assert row.metric == "val_loss" and row.best == min(r["val_loss"] for r in evals)
    weights = run.load_model_state()
    assert row.params == sum(t.numel() for t in weights.values())
    assert 0 < row.time < 60


def test_sort_by_any_column_missing_values_last(runs_root):
    rows = scan_runs([runs_root])
    for column in COLUMNS:
        ordered = sort_runs(rows, column)
        values = [getattr(r, column) for r in ordered if getattr(r, column) is not None]
        assert values == sorted(values)
    by_best = sort_runs(rows, "best", reverse=True)
    assert by_best[0].metric == "val_perplexity"
    with pytest.raises(ValueError, match="cannot sort by 'colour'; expected one of task"):
        sort_runs(rows, "colour")


def test_json_and_table(runs_root):
    rows = sort_runs(scan_runs([runs_root]), "path")
    data = json.loads(runs_to_json(rows))
    assert [set(d) for d in data] == [set(COLUMNS)] * 4
    assert data[1]["best"] == 1.9 and data[1]["time"] == 19.0
    table = format_table(rows).splitlines()
    assert table[0].split() == ["task", "cell", "size", "params", "steps", "time", "best",
                                "metric", "path"]  # fmt: skip
    assert len(table) == 5
    assert "lstm+ln" in table[2] and "19s" in table[2] and "1.9" in table[2]


def test_a_malformed_run_is_skipped_with_a_warning(tmp_path, caplog):
    _make_run(tmp_path / "good", "lm", {"cell": "rnn", "hidden_size": 4}, [{"val_loss": 1.0}])
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("{not json")
    rows = scan_runs([tmp_path])
    assert [r.path for r in rows] == [str(tmp_path / "good")]
    assert rows[0].size == "4"  # no num_layers recorded: the width alone
    assert "config.json" in caplog.text and "not valid JSON" in caplog.text


def test_plot_overlays_runs_in_one_png(runs_root, tmp_path):
    import matplotlib.image

    out = plot_runs([runs_root / "lm-a", runs_root / "real"], tmp_path / "curves.png")
    image = matplotlib.image.imread(out)
    assert image.shape[0] > 200 and image.shape[1] > 300
    # one colour per run: matplotlib's first two cycle colours (C0 blue, C1 orange) both drawn
    pixels = image.reshape(-1, image.shape[-1])[:, :3]
    for rgb in ((0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E)):
        near = np.abs(pixels - np.array(rgb) / 255).max(axis=1) < 0.05
        assert near.sum() > 50, rgb
    timed = plot_runs([runs_root / "ptb"], tmp_path / "t.png", x="time", labels=["PTB"])
    assert timed.stat().st_size > 1000
    with pytest.raises(ValueError, match="x must be"):
        plot_runs([runs_root / "ptb"], tmp_path / "x.png", x="epoch")


def test_plot_refuses_a_run_without_losses(tmp_path):
    run = RunDir.create(tmp_path / "empty")
    run.save_config({"task": "lm"})
    with pytest.raises(ValueError, match="metrics.jsonl: no training or validation loss"):
        plot_runs([run.path], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_cli_runs_table_sorted_and_json(runs_root, capsys):
    from rnnkit.cli import main

    assert main(["runs", str(runs_root), "--sort", "best", "--reverse"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["task", "cell", "size"] and len(out) == 5
    assert out[1].rstrip().endswith("ptb")  # the largest figure first: perplexity 121.5
    assert main(["runs", str(runs_root / "lm-a"), str(runs_root / "ptb"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["path"] for r in rows] == [str(runs_root / "lm-a"), str(runs_root / "ptb")]
    assert rows[0]["size"] == "2×64" and rows[1]["metric"] == "val_perplexity"


def test_cli_runs_bad_input_exits_2(runs_root, tmp_path, capsys):
    from rnnkit.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["runs", str(runs_root), "--sort", "colour"])
    assert exc.value.code == 2
    assert main(["runs", str(tmp_path / "missing")]) == 2
    assert "missing: no such file or directory" in capsys.readouterr().err
    assert main(["runs", str(tmp_path)]) == 0  # an empty folder: no rows, a note on stderr
    assert "no run folders" in capsys.readouterr().err


def test_cli_plot_writes_one_png(runs_root, tmp_path, capsys):
    from rnnkit.cli import main

    out = tmp_path / "compare.png"
    argv = ["plot", str(runs_root / "lm-a"), str(runs_root / "real"), "--out", str(out)]
    assert main([*argv, "--labels", "hand,real"]) == 0
    assert out.stat().st_size > 1000 and "wrote" in capsys.readouterr().err
    assert main(["plot", str(tmp_path), "--out", str(tmp_path / "x.png")]) == 2
    assert "no metrics.jsonl" in capsys.readouterr().err
    assert main([*argv, "--labels", "one"]) == 2  # two runs, one label
