"""The forecasting training task for :func:`rnnkit.train.fit` and the ``TASK`` registry entry."""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from rnnkit.errors import DataError
from rnnkit.tasks.base import saved_configs
from rnnkit.tasks.common.batching import batch_and_seed
from rnnkit.tasks.forecaster.baselines import _errors, persistence, seasonal_naive, select_ar_order
from rnnkit.tasks.forecaster.config import ForecasterConfig, ForecasterData, _parse_quantiles
from rnnkit.tasks.forecaster.model import Forecaster
from rnnkit.tasks.forecaster.windows import prepare_data
from rnnkit.train import IndependentBatches

if TYPE_CHECKING:
    from rnnkit.tasks.forecaster.windows import PreparedData

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Training task
# ---------------------------------------------------------------------------------------------
class ForecastTraining(IndependentBatches):
    """Windows of ``L + H`` steps, shuffled per epoch with a seeded generator (so a resumed run
    sees the same batches). The loss is the head's loss at every window position t ≥ ``burn_in``
    (targets z_{t+1..t+S}) plus, for a recursive model with ``rollout_weight`` w > 0,
    w × the loss of the H-step free-running rollout from the end of the history."""

    tokens_name = "window"

    def __init__(self, model: Forecaster, data: PreparedData, batch_size: int, seed: int = 0):
        cfg, dc = model.config, model.data_config
        self.model = model
        self.data = data
        self.batch_size = batch_size
        self.seed = seed
        self.window, self.horizon = dc.window, cfg.horizon
        self.burn_in = min(dc.burn_in, dc.window - 1)
        self.train = data.windows("train", dc.window, cfg.horizon, dc.stride)
        self.valid = data.windows("valid", dc.window, cfg.horizon, 1)
        if len(self.train) == 0:
            raise DataError(
                f"no training window: the training part is shorter than window {dc.window} + "
                f"horizon {cfg.horizon}"
            )
        if len(self.valid) == 0:
            log.warning("no validation window fits; evaluating on the training windows")
            self.valid = self.train
        self._order = torch.arange(len(self.train))
        self._epoch: int | None = None
        self._persistence_mae: float | None = None

    def batches_per_epoch(self) -> int:
        return math.ceil(len(self.train) / self.batch_size)

    def start_epoch(self, epoch: int) -> None:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        self._order = torch.randperm(len(self.train), generator=gen)
        self._epoch = epoch

    def batch(self, epoch: int, index: int):
        if self._epoch != epoch:  # a resumed run starts mid-epoch without start_epoch()
            self.start_epoch(epoch)
        idx = self._order[index * self.batch_size : (index + 1) * self.batch_size]
        return self.train.inputs[idx], self.train.targets[idx]

    def training_loss(self, model: Forecaster, batch) -> tuple[Tensor, int]:
        inputs, targets = (t.to(model.device) for t in batch)
        L, H = self.window, self.horizon
        out = model(inputs[:, :L])
        S = model.steps
        # targets of position t: z_{t+1 .. t+S}  → (B, L, S, C)
        future = targets[:, 1 : L + S].unfold(1, S, 1).permute(0, 1, 3, 2)
        positions = torch.arange(L, device=inputs.device) >= self.burn_in
        loss = model.loss(out.logits, future, positions[None, :, None, None])
        w = model.config.rollout_weight
        if model.config.strategy == "recursive" and w > 0 and H > 1:
            _, params = model.rollout(inputs[:, :L], H)
            loss = loss + w * model.loss(params, targets[:, L : L + H])
        return loss, inputs.shape[0]

    @torch.no_grad()
    def evaluate(self, model: Forecaster) -> dict[str, float]:
        """``loss``: mean squared error of the H-step point forecast on the validation windows
        (normalised units); ``mae``/``rmse`` in original units; ``skill`` = MAE / persistence's."""
        model.eval()
        norm = model.normalizer
        H = self.horizon
        sampled = model.config.strategy == "recursive" and model.config.rollout_weight == 0
        point, lower, upper = model.forecast_normalised(  # no Monte-Carlo paths here
            self.valid.history.to(model.device),
            H,
            None if sampled else 0.8,
        )
        future = self.valid.future.to(point.device)
        err = (point - future)[torch.isfinite(future)]
        truth = norm.inverse(self.valid.future.double().numpy())
        pred = norm.inverse(point.double().cpu().numpy())
        e = _errors(pred, truth)
        if self._persistence_mae is None:
            base = norm.inverse(persistence(self.valid.history, H).double().numpy())
            self._persistence_mae = float(np.mean(_errors(base, truth)["mae"]))
        metrics = {
            "loss": float((err**2).mean()),
            "mae": float(np.mean(e["mae"])),
            "rmse": float(np.sqrt(np.mean(np.square(e["rmse"])))),
            "skill": float(np.mean(e["mae"])) / max(self._persistence_mae, 1e-12),
        }
        if lower is not None:
            ok = torch.isfinite(future)
            inside = (future >= lower) & (future <= upper)
            metrics["coverage"] = float(inside[ok].float().mean())
        return metrics


# ---------------------------------------------------------------------------------------------
# Task registry entry
# ---------------------------------------------------------------------------------------------
class _ForecastTask:
    """Forecast numeric series (CSV/TSV columns or simulated ball trajectories)."""

    name = "forecast"
    sections = {"model": ForecasterConfig, "data": ForecasterData}
    # with the default data (the ball) this is acceptance run 1 of benchmarks/forecast.py
    defaults = {"train": {"max_steps": 1500, "eval_every": 250, "batch_size": 64}}

    def build(self, configs: dict[str, Any], train_cfg, device):
        model_cfg: ForecasterConfig = configs["model"]
        data_cfg: ForecasterData = configs["data"]
        if model_cfg.head == "quantile":
            _parse_quantiles(model_cfg.quantiles)
        prepared = prepare_data(data_cfg, data_cfg.window)
        # resolved values go into config.json so rnnkit.load rebuilds the same model
        data_cfg.columns = ",".join(prepared.columns)
        model_cfg.input_size = len(prepared.columns)
        log.info("data: %s", prepared.description)
        model = Forecaster(model_cfg, data_cfg).to(device)
        model.set_normalizer(prepared.normalizer)
        training = ForecastTraining(model, prepared, train_cfg.batch_size, train_cfg.seed)
        self._log_baselines(model, training, prepared)
        return model, training

    @staticmethod
    def _log_baselines(model: Forecaster, training: ForecastTraining, prepared: PreparedData):
        valid = training.valid
        H = model.config.horizon
        truth = model.normalizer.inverse(valid.future.double().numpy())
        preds = {"persistence": persistence(valid.history, H)}
        season = model.data_config.season
        if season and valid.window >= season:
            preds[f"seasonal naive ({season})"] = seasonal_naive(valid.history, H, season)
        try:
            ar, _ = select_ar_order(
                prepared.parts["train"], valid, H, model.data_config.max_ar_order
            )
            preds[f"AR({ar.order})"] = ar.forecast(valid.history, H)
        except DataError as e:
            log.warning("no AR baseline: %s", e)
        for name, p in preds.items():
            e = _errors(model.normalizer.inverse(p.double().numpy()), truth)
            log.info(
                "baseline %s: validation MAE %.4g (mean over horizons 1..%d)",
                name,
                np.mean(e["mae"]),
                H,
            )

    def restore(self, saved: dict[str, Any], vocab, device, train_cfg=None, with_data=False):
        model_cfg, data_cfg = saved_configs(saved, ForecasterConfig, ForecasterData)
        model = Forecaster(model_cfg, data_cfg).to(device)
        training = None
        if with_data:
            prepared = prepare_data(data_cfg, data_cfg.window)
            model.set_normalizer(prepared.normalizer)
            training = ForecastTraining(model, prepared, *batch_and_seed(train_cfg, 32))
        return model, training


TASK = _ForecastTask()
