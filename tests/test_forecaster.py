"""Tests for the forecasting task: no peeking at the future, rollouts, losses, baselines, the
ball simulator's physics, and the CLI end to end (train --dry-run, then forecast)."""

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from rnnkit.api import load
from rnnkit.cli import main
from rnnkit.datasets import ball
from rnnkit.errors import DataError
from rnnkit.tasks import get_task
from rnnkit.tasks.forecaster import (
    ARModel,
    Forecaster,
    ForecasterConfig,
    ForecasterData,
    ForecastTraining,
    Segment,
    autoregressive_rollout,
    forecast_report,
    gaussian_nll,
    make_windows,
    persistence,
    prepare_data,
    quantile_loss,
    seasonal_naive,
    select_ar_order,
)
from rnnkit.train import TrainConfig, fit


@pytest.fixture(autouse=True)
def one_thread():
    """Small models run fastest on one thread, and a busy machine makes more a lot slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_series(path, values, start=2000):
    path.write_text(
        "year,value\n" + "".join(f"{start + i},{float(v)!r}\n" for i, v in enumerate(values))
    )
    return path


def sine(n=120, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return 10 + 5 * np.sin(2 * np.pi * t / 12) + rng.normal(0, 0.2, n)


def small_model(data_cfg, **kw):
    cfg = ForecasterConfig(hidden_size=8, input_size=1, **kw)
    return Forecaster(cfg, data_cfg)


# ---------------------------------------------------------------------------------------------
# no future value leaks
# ---------------------------------------------------------------------------------------------
def test_no_future_value_reaches_a_window_or_the_normaliser(tmp_path):
    calm = sine(200)
    wild = calm.copy()
    wild[150:] = 1e6 * np.cos(np.arange(50))  # validation and test differ wildly
    cfg = ForecasterData(data="", window=12, valid_fraction=0.15, test_fraction=0.2)
    a = prepare_data(replace(cfg, data=str(write_series(tmp_path / "a.csv", calm))), 12)
    b = prepare_data(replace(cfg, data=str(write_series(tmp_path / "b.csv", wild))), 12)
    # the normaliser is fitted on rows [0, 130) only
    np.testing.assert_array_equal(a.normalizer.mean, b.normalizer.mean)
    np.testing.assert_array_equal(a.normalizer.std, b.normalizer.std)
    np.testing.assert_allclose(a.normalizer.mean, [calm[:130].mean()])
    for part in ("train", "valid", "test"):
        wa, wb = a.windows(part, 12, 3), b.windows(part, 12, 3)
        assert len(wa) and len(wa) == len(wb)
        before = torch.from_numpy(wa.origin < 150)
        # a window's history depends only on rows up to its origin
        torch.testing.assert_close(wa.history[before], wb.history[before])
        for m, t0 in enumerate(wa.origin):  # and it holds exactly rows t0 − 11 … t0
            rows = np.arange(t0 - 11, t0 + 1)
            np.testing.assert_allclose(
                wa.history[m, :, 0].numpy(), a.normalizer(calm[rows, None])[:, 0], rtol=1e-5
            )
            fut = np.arange(t0 + 1, t0 + 4)
            np.testing.assert_allclose(
                wa.future[m, :, 0].numpy(), a.normalizer(calm[fut, None])[:, 0], rtol=1e-5
            )
    # targets never come from an earlier part: first validation target is row 130, test's 160
    assert a.windows("valid", 12, 3).origin.min() == 129
    assert a.windows("test", 12, 3).origin.min() == 159


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"window_norm": "running", "differences": True},
        {"window_norm": "prefix", "linear_lags": 4},
        {"strategy": "direct", "head": "quantile"},
    ],
)
def test_a_scored_position_never_sees_its_future(kw):
    """Output at position t ≥ burn_in − 1 is unchanged when every input after t changes."""
    torch.manual_seed(0)
    model = small_model(ForecasterData(window=16, burn_in=4), horizon=3, **kw).eval()
    x = torch.randn(2, 16, 1)
    t = 7
    y = x.clone()
    y[:, t + 1 :] = 1e3 * torch.randn(2, 16 - t - 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits[:, 3 : t + 1], model(y).logits[:, 3 : t + 1])


def test_forecast_from_an_origin_ignores_what_follows(tmp_path):
    torch.manual_seed(0)
    values = sine(60)
    dc = ForecasterData(
        data=str(write_series(tmp_path / "s.csv", values)), window=12, columns="value"
    )
    model = small_model(dc, horizon=4)
    changed = values.copy()
    changed[31:] = -1e5
    dc2 = str(write_series(tmp_path / "t.csv", changed))
    r1 = forecast_report(model, origin="30", level=None)
    r2 = forecast_report(model, data=dc2, origin="2030", level=None)  # by date label
    assert r1["origin"]["row"] == r2["origin"]["row"] == 30
    assert [r["mean"] for r in r1["forecast"]] == [r["mean"] for r in r2["forecast"]]
    assert r1["forecast"][0]["truth"] == [pytest.approx(values[31])]


# ---------------------------------------------------------------------------------------------
# rollout, heads and losses
# ---------------------------------------------------------------------------------------------
def test_rollout_of_a_model_that_outputs_its_input_is_persistence():
    history = torch.randn(3, 10, 2)
    out = autoregressive_rollout(lambda x, state: (x[:, -1], state), history, horizon=7)
    torch.testing.assert_close(out, persistence(history, 7))
    assert torch.equal(out, history[:, -1:].expand(-1, 7, -1))


@pytest.mark.parametrize("strategy", ["recursive", "direct"])
@pytest.mark.parametrize("head", ["point", "gaussian", "quantile"])
def test_zero_head_residual_model_forecasts_persistence(strategy, head):
    dc = ForecasterData(window=8, burn_in=2)
    model = small_model(dc, horizon=5, strategy=strategy, head=head)
    torch.nn.init.zeros_(model.head.weight)
    torch.nn.init.zeros_(model.head.bias)
    from rnnkit.data.series import Normalizer

    model.set_normalizer(Normalizer(np.array([3.0]), np.array([2.0])))
    history = np.array([[1.0], [4.0], [2.0], [7.5]])
    fc = model.forecast(history, horizon=5, level=0.8, samples=20)
    np.testing.assert_allclose(fc["mean"], np.full((5, 1), 7.5), rtol=1e-6)
    if head == "point":
        assert fc["lower"] is None
    else:
        assert (fc["lower"] <= fc["mean"] + 1e-6).all() and (fc["mean"] <= fc["upper"] + 1e-6).all()


def test_quantile_loss_by_hand():
    pred = torch.tensor([[0.0, 1.0, 3.0]])
    # u = y − q̂ = (1, 0, −2): 0.1·1, 0, (0.9 − 1)·(−2) → mean (0.1 + 0 + 0.2) / 3
    loss = quantile_loss(pred, torch.tensor([1.0]), [0.1, 0.5, 0.9])
    assert loss.item() == pytest.approx(0.1)
    # under-prediction costs τ per unit, over-prediction 1 − τ
    assert quantile_loss(
        torch.tensor([[1.0]]), torch.tensor([3.0]), [0.25]
    ).item() == pytest.approx(0.5)
    assert quantile_loss(
        torch.tensor([[3.0]]), torch.tensor([1.0]), [0.25]
    ).item() == pytest.approx(1.5)
    # the 0.5-quantile loss is half the absolute error
    assert quantile_loss(
        torch.tensor([[2.0]]), torch.tensor([-1.0]), [0.5]
    ).item() == pytest.approx(1.5)


def test_quantile_loss_minimiser_is_the_quantile():
    y = torch.arange(1.0, 11.0)  # 1 … 10
    grid = torch.linspace(0, 11, 1101)
    losses = torch.stack([quantile_loss(g.expand(10, 1), y, [0.3]).mean() for g in grid])
    best = grid[losses.argmin()].item()
    assert 3.0 <= best <= 4.0  # any point between the 3rd and 4th order statistic


def test_gaussian_nll_by_hand():
    value = gaussian_nll(torch.tensor(0.0), torch.tensor(2.0), torch.tensor(1.0)).item()
    assert value == pytest.approx(0.5 * math.log(2 * math.pi) + math.log(2.0) + 1 / 8)


def test_losses_skip_unobserved_targets():
    model = small_model(ForecasterData(window=6, burn_in=1), horizon=2, head="quantile")
    params = torch.zeros(4, 1, 3)
    targets = torch.tensor([[1.0], [float("nan")], [1.0], [float("nan")]])
    loss = model.loss(params, targets)
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(
        quantile_loss(params[:1, 0], targets[0], [0.1, 0.5, 0.9]).item()
    )


# ---------------------------------------------------------------------------------------------
# baselines
# ---------------------------------------------------------------------------------------------
def test_seasonal_naive_by_hand():
    history = torch.arange(10.0).view(1, 10, 1)  # 0 … 9, season 4: last season is 6, 7, 8, 9
    out = seasonal_naive(history, 6, 4)[0, :, 0].tolist()
    assert out == [6, 7, 8, 9, 6, 7]


def test_ar_recovers_its_coefficients_and_order():
    rng = np.random.default_rng(1)
    n = 3000
    z = np.zeros(n)
    for t in range(2, n):
        z[t] = 0.2 + 0.6 * z[t - 1] - 0.3 * z[t - 2] + rng.normal(0, 0.1)
    seg = Segment(z[:, None], z[:, None], 0)
    ar = ARModel.fit([seg], 2)
    np.testing.assert_allclose(ar.coef[:, 0], [0.2, 0.6, -0.3], atol=0.03)
    valid = make_windows([Segment(z[-400:, None], z[-400:, None], 0)], 12, 3, 1, 1)
    chosen, scores = select_ar_order([seg], valid, 3, 6)
    assert chosen.order in (2, 3) and set(scores) == set(range(1, 7))
    # a one-step forecast is the fitted linear map of the lags, most recent first
    h = torch.tensor([[[1.0], [2.0], [4.0]]])
    expected = ar.coef[0, 0] + ar.coef[1, 0] * 4.0 + ar.coef[2, 0] * 2.0
    assert ar.forecast(h, 1).item() == pytest.approx(expected, rel=1e-5)


# ---------------------------------------------------------------------------------------------
# the ball
# ---------------------------------------------------------------------------------------------
def test_ball_never_gains_energy_and_loses_some_at_bounces():
    b = ball(n=40, steps=120, seed=3)
    energy = b.energy()  # ½|v|² + g·y
    step = np.diff(energy, axis=1)
    assert step.max() <= 1e-9  # flight conserves it, drag and bounces remove some
    bounce = b.bounced[:, 1:]
    assert bounce.sum() > 40
    assert (step[bounce] < -1e-6).all()  # strictly lost at every bounce
    assert (b.position[..., 1] >= 0).all()  # never below the floor


def test_ball_without_losses_conserves_energy_and_horizontal_speed():
    b = ball(n=20, steps=200, drag=0.0, restitution=1.0, friction=0.0, rest_speed=0.0, seed=5)
    energy = b.energy()
    assert b.bounced.sum() > 20
    np.testing.assert_allclose(energy, energy[:, :1].repeat(200, 1), rtol=0, atol=1e-9)
    np.testing.assert_allclose(b.velocity[..., 0], b.velocity[:, :1, 0].repeat(200, 1), atol=1e-12)


def test_ball_is_seeded_and_noisy_as_asked():
    a, b, c = ball(n=8, steps=30, seed=7), ball(n=8, steps=30, seed=7), ball(n=8, steps=30, seed=8)
    assert np.array_equal(a.observed, b.observed)
    assert not np.array_equal(a.observed, c.observed)
    noise = ball(n=200, steps=50, noise=0.05, seed=1)
    assert np.std(noise.observed - noise.position) == pytest.approx(0.05, rel=0.05)
    with pytest.raises(ValueError, match="restitution"):
        ball(restitution=1.2)


# ---------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------
def test_overfits_a_small_series_and_beats_persistence(tmp_path):
    from rnnkit.checkpoint import RunDir

    torch.manual_seed(0)
    dc = ForecasterData(data=str(write_series(tmp_path / "s.csv", sine(150))), window=16, burn_in=4)
    task = get_task("forecast")
    cfg = ForecasterConfig(hidden_size=16, horizon=4, differences=True)
    tc = TrainConfig(lr=1e-2, batch_size=32, max_steps=60, eval_every=60, progress=False)
    model, training = task.build({"model": cfg, "data": dc}, tc, torch.device("cpu"))
    assert isinstance(training, ForecastTraining)
    assert cfg.input_size == 1 and dc.columns == "value"  # resolved into the saved config
    summary = fit(model, training, tc, RunDir.create(tmp_path / "run"))
    assert summary["last"]["skill"] < 0.3  # validation MAE under 30 % of persistence's


# ---------------------------------------------------------------------------------------------
# CLI end to end
# ---------------------------------------------------------------------------------------------
def test_cli_train_dry_run_then_forecast(tmp_path, capsys):
    rng = np.random.default_rng(0)
    values = sine(90)
    values[[5, 40]] = np.nan  # two gaps, masked
    csv = tmp_path / "series.csv"
    csv.write_text(
        "date,value,other\n"
        + "".join(
            f"2001-{1 + i // 28:02d}-{1 + i % 28:02d},{'' if np.isnan(v) else v},{rng.normal()}\n"
            for i, v in enumerate(values)
        )
    )
    run = tmp_path / "run"
    code = main(
        ["-q", "train", "forecast", "--data", str(csv), "--columns", "value", "--horizon", "3",
         "--window", "12", "--head", "quantile", "--hidden-size", "8", "--dry-run",
         "--no-progress", "--out", str(run)]
    )  # fmt: skip
    assert code == 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["data"]["columns"] == "value" and saved["model"]["input_size"] == 1
    capsys.readouterr()

    plot = tmp_path / "forecast.png"
    code = main(
        ["forecast", str(run), "--data", str(csv), "--horizon", "3", "--plot", str(plot),
         "--json", "--samples", "20", "--evaluate"]
    )  # fmt: skip
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["columns"] == ["value"] and report["horizon"] == 3
    assert [r["step"] for r in report["forecast"]] == [1, 2, 3]
    assert report["forecast"][0]["date"] == "2001-04-07"  # continues the weekly-ish spacing
    assert all(r["lower"][0] <= r["upper"][0] for r in report["forecast"])
    assert plot.exists() and plot.stat().st_size > 1000
    methods = report["evaluation"]["methods"]
    assert {"LSTM", "persistence"} <= set(methods) and "coverage" in methods["LSTM"]

    code = main(["forecast", str(run), "--data", str(csv), "--origin", "2001-02-01"])
    assert code == 0
    text = capsys.readouterr().out
    assert "from row 28 (2001-02-01)" in text and "truth" in text

    model = load(run)  # rnnkit.load gives the model, normaliser included
    assert isinstance(model, Forecaster)
    observed = values[:58][np.isfinite(values[:58])]  # training rows (65 % of 90)
    assert model.norm_mean.item() == pytest.approx(observed.mean())

    wrong = tmp_path / "wrong.csv"
    wrong.write_text("date,x\n1,2\n")
    assert main(["forecast", str(run), "--data", str(wrong)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{wrong}:1: no column 'value'" in err


def test_train_forecast_on_the_ball_dry_run(tmp_path, capsys):
    run = tmp_path / "ball"
    code = main(
        ["-q", "train", "forecast", "--data", "ball", "--ball-trajectories", "20", "--ball-steps",
         "40", "--window", "10", "--horizon", "5", "--hidden-size", "8", "--dry-run",
         "--no-progress", "--out", str(run)]
    )  # fmt: skip
    assert code == 0
    capsys.readouterr()
    assert main(["forecast", str(run), "--json", "--plot", str(tmp_path / "b.png")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["columns"] == ["x", "y"] and report["origin"]["row"] == 9
    with pytest.raises(DataError):
        forecast_report(load(run), horizon=0)


def test_infer_answers_forecast_requests():
    from rnnkit.inference import ForecastRequest, ForecastResult

    torch.manual_seed(0)
    model = small_model(ForecasterData(window=16, burn_in=4), horizon=3, head="gaussian").eval()
    history = sine(40)[:, None]
    request = ForecastRequest.from_json({"history": history.tolist(), "horizon": 3, "level": 0.8})
    result = model.infer(request)
    expected = model.forecast(history, 3, 0.8, 200, 0)
    assert np.allclose(result.mean, expected["mean"]) and np.allclose(
        result.upper, expected["upper"]
    )
    assert ForecastResult.from_json(result.to_json()) == result
