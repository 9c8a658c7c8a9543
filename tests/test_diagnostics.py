"""Gradient-flow diagnostics and memory tasks: generators, Jacobians, the theory's predictions, CLI.

The gradient-ratio thresholds below come from measurements (float64, H = 64, 16 sequences of
T = 60 steps, inputs ~ N(0, 1), seed 0); each test says what was measured.
"""

import math

import pytest
import torch

from rnnkit.cli import main
from rnnkit.cli.diagnose import parse_cell_spec
from rnnkit.insight import (
    ADDING_BASELINE_MSE,
    CellSpec,
    MemoryConfig,
    MemoryResult,
    adding_task,
    bit_task,
    copy_task,
    gradient_flow,
    memory_table,
    step_jacobian_matrices,
    train_memory,
)

DT = torch.float64


@pytest.fixture(autouse=True)
def one_thread():
    # these ops are tiny: a second thread only adds synchronisation (and stalls on a busy machine)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------
# task generators
# ---------------------------------------------------------------------------------------------
def test_bit_task_shapes_and_labels():
    x, y = bit_task(64, 10, torch.Generator().manual_seed(0))
    assert x.shape == (64, 11, 1) and y.shape == (64,)
    assert set(y.tolist()) == {0, 1}
    assert torch.equal(x[:, 0, 0], 2.0 * y - 1.0)  # the first input is the class sign
    assert x[:, 1:].std() == pytest.approx(1.0, rel=0.1)  # then unit-variance noise


def test_adding_task_markers_targets_and_variance_baseline():
    x, y = adding_task(20000, 51, torch.Generator().manual_seed(0))
    assert x.shape == (20000, 51, 2) and y.shape == (20000,)
    values, marks = x[..., 0], x[..., 1]
    assert ((values >= 0) & (values < 1)).all()
    assert torch.equal(marks.sum(1), torch.full((20000,), 2.0))
    half = 26  # ⌈51 / 2⌉: one marker in each half
    assert torch.equal(marks[:, :half].sum(1), torch.ones(20000))
    assert torch.allclose((values * marks).sum(1), y)
    # predicting the mean 1 scores Var(u1 + u2) = 1/6: the baseline a model must beat
    assert y.mean() == pytest.approx(1.0, abs=0.01)
    assert ((y - 1.0) ** 2).mean() == pytest.approx(ADDING_BASELINE_MSE, abs=0.005)
    assert ADDING_BASELINE_MSE == pytest.approx(0.1667, abs=1e-4)


def test_copy_task_layout():
    x, y = copy_task(8, 6, torch.Generator().manual_seed(0), symbols=3, alphabet=4)
    assert x.shape == (8, 3 + 6 + 1 + 3, 6) and y.shape == (8, 3)
    tokens = x.argmax(-1)
    assert torch.equal(x.sum(-1), torch.ones(8, 13))  # one-hot
    assert torch.equal(tokens[:, :3], y + 1)  # the symbols first
    assert (tokens[:, 3:9] == 0).all() and (tokens[:, 10:] == 0).all()  # blanks
    assert (tokens[:, 9] == 5).all()  # the delimiter
    assert y.min() >= 0 and y.max() < 4


def test_generators_are_deterministic():
    for make in (bit_task, adding_task, copy_task):
        a = make(4, 7, torch.Generator().manual_seed(3))
        b = make(4, 7, torch.Generator().manual_seed(3))
        assert all(torch.equal(p, q) for p, q in zip(a, b))


# ---------------------------------------------------------------------------------------------
# step Jacobians
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "spec",
    [
        CellSpec("rnn"),
        CellSpec("rnn", nonlinearity="relu", init="identity"),
        CellSpec("lstm", forget_bias=1.0),
        CellSpec("gru"),
        CellSpec("lstm", layer_norm=True),
    ],
    ids=lambda s: s.label(),
)
def test_step_jacobians_match_autograd(spec):
    torch.manual_seed(0)
    layer = spec.build(2, 3).to(DT)
    x = torch.randn(2, 4, 2, dtype=DT)
    cell, params = layer._cells[0], layer._params(0)
    # the states s_0 … s_T, flattened as (h, c) for the LSTM
    state = cell.init_state(2, dtype=DT)
    flat = [torch.cat(list(state), -1) if cell.is_lstm else state]
    for t in range(4):
        _, state = cell.step(cell.project_input(x[:, t], params), state, params)
        flat.append(torch.cat(list(state), -1) if cell.is_lstm else state)
    states = torch.stack(flat, 1).detach()  # (B, T+1, S)
    ours = step_jacobian_matrices(layer, x, states)  # (B, T, S, S)
    H = 3
    for b in range(2):
        for t in range(4):

            def f(s, b=b, t=t):
                prev = (s[:H].unsqueeze(0), s[H:].unsqueeze(0)) if cell.is_lstm else s[None]
                _, new = cell.step(cell.project_input(x[b : b + 1, t], params), prev, params)
                return torch.cat(list(new), -1)[0] if cell.is_lstm else new[0]

            expected = torch.autograd.functional.jacobian(f, states[b, t])
            torch.testing.assert_close(ours[b, t], expected)


def test_state_gradients_are_the_product_of_step_jacobians():
    # ∂L_T/∂s_t = ∂L_T/∂s_T · J_T ⋯ J_{t+1}: the two halves of the diagnostic agree
    torch.manual_seed(0)
    layer = CellSpec("gru").build(2, 4).to(DT)
    x = torch.randn(1, 5, 2, dtype=DT)
    u = torch.randn(4, dtype=DT)
    flow = gradient_flow(layer, x, lambda h: h @ u, jacobian_batch=0)
    with torch.no_grad():
        y, _ = layer(x)  # a GRU's output is its state: s_1 … s_T
    states = torch.cat([torch.zeros(1, 1, 4, dtype=DT), y], 1)  # s_0 … s_T
    jac = step_jacobian_matrices(layer, x, states)[0]  # (T, S, S)
    g = u.clone()
    for d in range(5):
        assert flow.grad_state[d] == pytest.approx(float(g.norm()), rel=1e-9)
        g = g @ jac[4 - d]


# ---------------------------------------------------------------------------------------------
# what theory says about untrained models (acceptance 1)
# ---------------------------------------------------------------------------------------------
def _ratio_50(spec: CellSpec) -> float:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        layer = spec.build(4, 64).to(DT)
    x = torch.randn(16, 60, 4, dtype=DT, generator=torch.Generator().manual_seed(1))
    return gradient_flow(layer, x, jacobian_batch=0).ratio(50)


def test_tanh_rnn_with_small_weights_vanishes():
    # torch's init U(−1/√H, 1/√H) gives W_hh spectral radius ≈ 1/√3: measured ratio 9.8e-13
    assert _ratio_50(CellSpec("rnn")) < 1e-3


def test_identity_relu_rnn_keeps_the_gradient():
    # J = diag(relu′(z))·I: only units that switch off lose gradient; measured ratio 0.485
    assert _ratio_50(CellSpec("rnn", nonlinearity="relu", init="identity")) > 1e-2


def test_lstm_forget_bias_slows_the_decay():
    # Along the cell path ∂c_t/∂c_{t−1} = f_t with f ≈ σ(b_f). Measured ratios at distance 50:
    # forget bias 0 → 1.3e-10, 1 → 1.6e-4, 3 → 0.77 (GRU, default init: 1.4e-10). σ(1) ≈ 0.73 per
    # step is still a geometric decay, so the "> 1e-2 at distance 50" holds from a
    # bias of about 3 on; with bias 1 the gradient is 10⁶× larger than without, 10⁸× the tanh RNN's.
    plain = _ratio_50(CellSpec("lstm"))
    one = _ratio_50(CellSpec("lstm", forget_bias=1.0))
    three = _ratio_50(CellSpec("lstm", forget_bias=3.0))
    assert plain < 1e-8
    assert one > 1e-5 and one > 1e4 * plain
    assert three > 1e-2


def test_large_recurrent_init_explodes_and_clipping_bounds_it():
    torch.manual_seed(0)
    layer = CellSpec("rnn", init_scale=3.0).build(4, 64).to(DT)
    x = torch.randn(8, 30, 4, dtype=DT)
    flow = gradient_flow(layer, x, clip=1.0, jacobian_batch=2)
    assert flow.ratio(20) > 30  # measured ≈ 1.6e2 (×1.3 per step)
    assert min(flow.jacobian) > 1.0  # every step expands
    assert flow.param_grad_norm > 1e3
    assert flow.clipped_grad_norm == pytest.approx(1.0)


def test_parse_cell_spec():
    spec = parse_cell_spec("rnn --nonlinearity relu --init identity")
    assert spec == CellSpec("rnn", nonlinearity="relu", init="identity")
    assert parse_cell_spec("lstm --forget-bias 1 --layer-norm").label() == "lstm fb=1 ln"
    with pytest.raises(ValueError, match="compare item"):
        parse_cell_spec("lstm --no-such-flag")
    with pytest.raises(ValueError, match="rnn only"):
        parse_cell_spec("gru --init identity").build(1, 2)


# ---------------------------------------------------------------------------------------------
# memory training
# ---------------------------------------------------------------------------------------------
def test_train_memory_is_deterministic_and_records_curves():
    cfg = MemoryConfig(task="adding", cell="lstm", length=8, hidden_size=8, steps=12, eval_every=5)
    a, b = train_memory(cfg), train_memory(cfg)
    assert a.curve == b.curve and a.evals == b.evals
    assert a.steps == 12 and [s for s, _ in a.evals] == [5, 10, 12]
    assert all(math.isfinite(loss) and norm > 0 for _, loss, norm in a.curve)


def test_bit_task_is_learned_at_a_short_length():
    cfg = MemoryConfig(
        task="bit", cell="lstm", length=5, hidden_size=8, steps=300, eval_every=20, test_size=200
    )
    result = train_memory(cfg)
    assert result.success and result.metric >= 0.99 and result.steps < 300  # stopped early


def test_memory_table_reports_fractions_and_largest_length():
    results = []
    for T, ok in ((10, [True, True]), (50, [True, False]), (100, [False, False])):
        for seed, success in enumerate(ok):
            cfg = MemoryConfig(cell="rnn", length=T, seed=seed)
            metric = 0.001 if success else 0.15
            results.append(
                MemoryResult(cfg, success, 100 if success else None, metric, 100, False, 1.0)
            )
    table = memory_table(results)
    row = table.splitlines()[1]
    assert "2/2 @ 100" in row and "1/2 @ 100" in row and "0/2 (0.15)" in row
    assert row.split()[-1] == "50"


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------
def test_cli_diagnose_gradients_compare(tmp_path, capsys):
    code = main(
        [
            "diagnose", "gradients", "--length", "12", "--hidden-size", "8", "--batch-size", "4",
            "--compare", "rnn;rnn --nonlinearity relu --init identity;lstm --forget-bias 1",
            "--out", str(tmp_path), "--no-progress",
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "rnn relu identity" in out and "lstm fb=1" in out
    assert (tmp_path / "gradients.png").stat().st_size > 0
    lines = (tmp_path / "gradients.csv").read_text().splitlines()
    assert lines[0].startswith("config,distance,grad_state")
    assert len(lines) == 1 + 3 * 12


def test_cli_bench_memory_small(tmp_path, capsys):
    code = main(
        [
            "bench", "memory", "--task", "adding", "--cells", "rnn,irnn", "--lengths", "4,6",
            "--seeds", "1", "--steps", "6", "--eval-every", "3", "--hidden-size", "8",
            "--clip", "0,1", "--jobs", "1", "--out", str(tmp_path), "--no-progress",
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "rnn no clip" in out and "irnn clip 1" in out and "T=6" in out
    for name in ("memory-adding.csv", "memory-adding.png", "memory-adding-curves.png"):
        assert (tmp_path / name).stat().st_size > 0
    rows = (tmp_path / "memory-adding.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * 2 * 2  # clips × cells × lengths × 1 seed


def test_cli_bad_input_exits_2(tmp_path, capsys):
    assert main(["bench", "memory", "--cells", "rnn,transformer", "--out", str(tmp_path)]) == 2
    assert "unknown cell" in capsys.readouterr().err
    code = main(["diagnose", "gradients", "--compare", "lstm --bogus", "--out", str(tmp_path)])
    assert code == 2
    assert "compare item" in capsys.readouterr().err


def test_cli_diagnose_a_trained_language_model(tmp_path, capsys):
    corpus = tmp_path / "text.txt"
    corpus.write_text("the cat sat on the mat and the dog sat on the log.\n" * 40)
    run = tmp_path / "run"
    code = main(
        [
            "-q", "train", "lm", "--data", str(corpus), "--out", str(run), "--max-steps", "3",
            "--hidden-size", "12", "--embed-size", "6", "--bptt", "16", "--batch-size", "2",
            "--num-layers", "2", "--no-progress",
        ]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    capsys.readouterr()
    code = main(
        ["diagnose", "gradients", "--run", str(run), "--length", "20", "--json", "--no-progress"]
    )
    out = capsys.readouterr().out
    assert code == 0
    import json

    result = json.loads(out.splitlines()[0])
    assert len(result["grad_state"]) == 20 and result["grad_norm"] > 0
    assert all(v > 0 for v in result["grad_x"])
    assert (run / "gradients.png").exists() and (run / "gradients.csv").exists()
