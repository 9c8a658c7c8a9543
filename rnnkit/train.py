"""The trainer every task shares: ``fit(model, task, config, run)``.

A task supplies batches and a loss (:class:`TrainingTask`); the trainer owns everything else:
the optimiser and learning-rate schedule, gradient-norm clipping (the norm before clipping is
logged every step), non-finite guards, periodic evaluation, best/last checkpoints, early stopping,
time and step budgets, a progress bar, ``metrics.jsonl`` and a loss-curve PNG. With
``log="tensorboard"`` the same records (and a text sample per evaluation, for models that can
``generate``) also go to a TensorBoard event file in ``RUN/tensorboard/``; ``metrics.jsonl``
stays the source of truth (see :mod:`rnnkit.tensorboard_logger`).

Resuming is exact on CPU: a checkpoint holds the weights, optimiser, schedule position, every RNG
and the task's carried state (e.g. an LSTM's state between truncated-BPTT windows), all in
``trainer.pt`` written atomically, so a run killed at any moment continues from its last
checkpoint as if it had never stopped.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from rnnkit.checkpoint import RunDir, capture_rng_state, restore_rng_state
from rnnkit.config import option
from rnnkit.fileio import atomic_write_text
from rnnkit.runtime import cpu_has_native_bf16

__all__ = [
    "TrainConfig",
    "TrainingTask",
    "TrainingError",
    "IndependentBatches",
    "fit",
    "select_device",
    "seed_everything",
]

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Optimisation settings shared by every task."""

    optimizer: str = option("adam", "adam, adamw or sgd", ("adam", "adamw", "sgd"))
    lr: float = option(2e-3, "peak learning rate")
    weight_decay: float = option(0.0, "L2 penalty (decoupled for adamw)")
    momentum: float = option(0.0, "SGD momentum")
    schedule: str = option(
        "cosine",
        "constant | cosine (after warmup) | step (×lr_decay per epoch after "
        "decay_start) | plateau (×lr_decay when validation stalls)",
        ("constant", "cosine", "step", "plateau"),
    )
    warmup_steps: int = option(0, "linear warmup steps")
    min_lr_ratio: float = option(0.05, "cosine floor as a fraction of lr")
    lr_decay: float = option(0.5, "factor for step/plateau schedules")
    decay_start: int = option(1, "step schedule: first epoch (1-based) after which lr decays")
    clip_norm: float = option(1.0, "clip the global gradient norm to this (0 = off)")
    batch_size: int = option(32, "sequences per batch")
    max_steps: int | None = option(None, "stop after this many steps")
    epochs: float | None = option(None, "stop after this many passes over the data")
    minutes: float | None = option(None, "stop after this much wall-clock time (none = no limit)")
    eval_every: int = option(500, "evaluate and checkpoint every N steps (0 = once per epoch)")
    log_every: int = option(10, "write training metrics every N steps")
    patience: int = option(0, "early stop after N evaluations without improvement (0 = off)")
    seed: int = option(1234, "random seed")
    device: str = option("auto", "auto, cpu, cuda, cuda:1, mps ...")
    on_nan: str = option(
        "stop", "non-finite loss or gradient: stop or skip the step", ("stop", "skip")
    )
    threads: int | None = option(None, "CPU threads for torch (default: torch's choice)")
    precision: str = option(
        "fp32",
        "training arithmetic: fp32, or bf16 mixed precision (autocast: bf16 matmuls and fused "
        "RNN kernels; fp32 weights, optimiser, loss and evaluation)",
        ("fp32", "bf16"),
    )
    log: str = option(
        "none",
        "also log to TensorBoard (RUN/tensorboard/: loss, bits, lr, gradient norm, tokens/s, "
        "validation metrics, a text sample per evaluation); metrics.jsonl stays the record",
        ("none", "tensorboard"),
    )
    progress: bool = option(True, "show a progress bar")
    dry_run: bool = option(False, "two steps and one evaluation, for smoke tests")


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. a non-finite loss); the last checkpoint is intact."""


class TrainingTask(Protocol):
    """What :func:`fit` needs from a task. Batches are addressed by (epoch, index) so a resumed
    run fetches exactly the batch the interrupted one would have."""

    tokens_name: str  # what one unit of loss is averaged over: "char", "token", "sequence"

    def batches_per_epoch(self) -> int: ...

    def start_epoch(self, epoch: int) -> None: ...

    def batch(self, epoch: int, index: int) -> Any: ...

    def training_loss(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, int]:
        """(loss to minimise, number of tokens it covers)."""

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Validation metrics; must contain ``loss`` (lower is better)."""

    def carried_state(self) -> dict[str, torch.Tensor]: ...

    def load_carried_state(self, state: dict[str, torch.Tensor]) -> None: ...


class IndependentBatches:
    """Mixin for training tasks whose batches share no recurrent state (classification, tagging,
    translation, captioning, windowed forecasting): nothing to carry across steps or checkpoints."""

    def carried_state(self) -> dict[str, torch.Tensor]:
        return {}

    def load_carried_state(self, state: dict[str, torch.Tensor]) -> None:
        pass


def select_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, then Apple's MPS, then the CPU."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (NumPy's with ``seed mod 2³²``)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_factor(cfg: TrainConfig, step: int, epoch: int, progress: float, plateau: float) -> float:
    """Multiplier of ``cfg.lr`` at a step. ``progress`` ∈ [0, 1] is the share of the budget used.

    cosine: f = r + (1 − r)·(1 + cos(π·p))/2 after a linear warmup, r = ``min_lr_ratio``;
    step: f = lr_decay^max(0, epoch + 1 − decay_start) (Zaremba et al.'s PTB schedule);
    plateau: the product of decays applied so far.
    """
    warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
    if cfg.schedule == "cosine":
        p = min(1.0, max(0.0, progress))
        return warm * (
            cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * p))
        )
    if cfg.schedule == "step":
        return warm * cfg.lr_decay ** max(0, epoch + 1 - cfg.decay_start)
    if cfg.schedule == "plateau":
        return warm * plateau
    return warm


def _finite(t: torch.Tensor) -> bool:
    return bool(torch.isfinite(t).all())


def _plot_curves(run: RunDir) -> None:
    """loss.png: training loss (smoothed) and validation loss against steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = run.read_metrics()
    train = [(r["step"], r["loss"]) for r in rows if r.get("kind") == "train"]
    valid = [(r["step"], r["val_loss"]) for r in rows if r.get("kind") == "eval"]
    if not train and not valid:
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        steps, losses = zip(*train)
        k = max(1, len(losses) // 50)
        smooth = np.convolve(losses, np.ones(k) / k, mode="valid")
        ax.plot(steps[k - 1 :], smooth, label="train (smoothed)", lw=1)
    if valid:
        ax.plot(*zip(*valid), "o-", label="validation", lw=1.5)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats per token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = run.path / ".loss.png.tmp"
    fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    tmp.replace(run.path / "loss.png")


def mixed_precision(precision: str, device: torch.device) -> torch.autocast:
    """The autocast context for the training forward pass (disabled for fp32).

    bf16 needs no loss scaling (it has fp32's exponent range); the weights, their gradients and
    the optimiser stay fp32. Without native bf16 arithmetic (AVX-512 BF16 / AMX on CPUs) it is
    emulated and slower than fp32, which is logged.
    """
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be fp32 or bf16; got {precision!r}")
    enabled = precision == "bf16"
    if enabled and device.type == "cpu" and not torch.backends.mkldnn.is_available():
        log.warning("bf16 on this CPU has no oneDNN support: expect it to be slower than fp32")
    elif enabled and device.type == "cpu" and not cpu_has_native_bf16():
        log.warning("this CPU lacks native bf16 arithmetic: bf16 is emulated and slower than fp32")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def fit(
    model: nn.Module,
    task: TrainingTask,
    cfg: TrainConfig,
    run: RunDir,
    resume: bool = False,
) -> dict[str, Any]:
    """Train ``model`` on ``task`` into run directory ``run``; returns a summary dict.

    With ``resume`` the weights, optimiser, schedule, RNGs and carried state come from
    ``run``'s last checkpoint and training continues at the next step.
    """
    from tqdm.auto import tqdm

    from rnnkit.distributed import Dist
    from rnnkit.runtime import retain_freed_memory

    group = Dist()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    retain_freed_memory()  # reuse the step's freed activations (see rnnkit.runtime)
    device = next(model.parameters()).device
    optimizer = make_optimizer(model, cfg)
    autocast = mixed_precision(cfg.precision, device)
    trained = group.wrap(model, device)  # DistributedDataParallel under torchrun
    per_epoch = task.batches_per_epoch()
    budgets = [cfg.max_steps] if cfg.max_steps else []
    if cfg.epochs:
        budgets.append(max(1, int(round(cfg.epochs * per_epoch))))
    if cfg.dry_run:
        budgets = [2]
    total_steps = min(budgets) if budgets else None
    if total_steps is None and not cfg.minutes:
        total_steps = per_epoch  # no budget given: one epoch
    time_budget = cfg.minutes * 60 if cfg.minutes and not cfg.dry_run else None

    step, best, stale, plateau, elapsed_before = 0, math.inf, 0, 1.0, 0.0
    last_eval: dict[str, float] = {}
    if resume:
        saved = run.load_trainer_state()
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        step, best, stale = int(saved["step"]), float(saved["best"]), int(saved["stale"])
        plateau, elapsed_before = float(saved["plateau"]), float(saved["elapsed"])
        if len(saved["rng"]) != group.world:
            raise TrainingError(
                f"{run.trainer_path} was written by {len(saved['rng'])} process(es); resume it "
                f"with the same number (this job has {group.world})"
            )
        carried = saved["carried"][group.rank]
        task.load_carried_state({k: v.to(device) for k, v in carried.items()})
        restore_rng_state(saved["rng"][group.rank])
        kept = [r for r in run.read_metrics() if r.get("step", 0) <= step]
        if group.is_main:  # drop what the interrupted run logged after its last checkpoint
            atomic_write_text(run.metrics_path, "".join(json.dumps(r) + "\n" for r in kept))
        # the saved step was evaluated already (a finished run resumed): no second evaluation
        done = [r for r in kept if r.get("kind") == "eval" and r.get("step") == step]
        if done:
            last_eval = {
                k.removeprefix("val_"): v for k, v in done[-1].items() if k not in ("kind", "time")
            }
        log.info("resumed %s at step %d", run.path, step)
    else:
        seed_everything(cfg.seed)
    board = _open_board(cfg, task, run, step if resume else None) if group.is_main else None

    def checkpoint(tag_best: bool) -> None:
        # every rank's RNG and carried state, so each rank resumes exactly where it was
        rngs = group.gather(capture_rng_state())
        carried = group.gather({k: v.detach().cpu() for k, v in task.carried_state().items()})
        if not group.is_main:
            return
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        trainer_state = {
            "model": state,
            "optimizer": optimizer.state_dict(),
            "step": step,
            "best": best,
            "stale": stale,
            "plateau": plateau,
            "elapsed": elapsed_before + (time.monotonic() - start),
            "carried": carried,
            "rng": rngs,
            "world_size": group.world,
        }
        if tag_best:
            run.save_checkpoint(state, None, tag="best")
        run.save_checkpoint(state, trainer_state, tag="last")

    def progress_fraction() -> float:
        parts = []
        if total_steps:
            parts.append(step / total_steps)
        if time_budget:
            parts.append((elapsed_before + time.monotonic() - start) / time_budget)
        return max(parts) if parts else 0.0

    start = time.monotonic()
    bar = tqdm(
        total=total_steps,
        initial=step,
        disable=not (cfg.progress and group.is_main),
        unit="step",
        dynamic_ncols=True,
        mininterval=0.5 if cfg.progress else 1e9,
    )
    window_tokens, window_start, window_loss, window_steps = 0, time.monotonic(), 0.0, 0
    stop_reason = "budget"
    skipped = 0
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        while True:
            if total_steps is not None and step >= total_steps:
                break
            if time_budget and group.any_true(
                elapsed_before + time.monotonic() - start >= time_budget
            ):
                stop_reason = "time"
                break
            epoch, index = divmod(step, per_epoch)
            if index == 0:
                task.start_epoch(epoch)
            for g in optimizer.param_groups:
                g["lr"] = cfg.lr * lr_factor(cfg, step, epoch, progress_fraction(), plateau)
            model.train()
            with autocast:
                loss, n_tokens = task.training_loss(trained, task.batch(epoch, index))
            if not group.all_true(_finite(loss.detach())):
                if cfg.on_nan == "stop":
                    raise TrainingError(
                        f"non-finite loss ({loss.item()}) at step {step + 1}; stopped. The last "
                        f"checkpoint in {run.path} is intact (use --on-nan skip to skip such steps, "
                        "or lower --lr / --clip-norm)"
                    )
                skipped += 1
                optimizer.zero_grad(set_to_none=True)
                step += 1
                bar.update(1)
                continue
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            max_norm = cfg.clip_norm if cfg.clip_norm > 0 else math.inf
            norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
            if not _finite(norm):
                if cfg.on_nan == "stop":
                    raise TrainingError(
                        f"non-finite gradient norm at step {step + 1}; stopped. The last "
                        f"checkpoint in {run.path} is intact (use --on-nan skip to skip such steps)"
                    )
                skipped += 1
                optimizer.zero_grad(set_to_none=True)
                step += 1
                bar.update(1)
                continue
            optimizer.step()
            step += 1
            loss_value = loss.item()
            window_tokens += n_tokens
            window_loss += loss_value
            window_steps += 1
            bar.update(1)

            finished = (total_steps is not None and step >= total_steps) or (
                time_budget is not None
                and group.any_true(elapsed_before + time.monotonic() - start >= time_budget)
            )
            if step % cfg.log_every == 0 or step == 1 or finished:
                now = time.monotonic()
                rate = group.sum(window_tokens / max(now - window_start, 1e-9))
                mean_loss = group.mean(window_loss / window_steps)
                if group.is_main:
                    record = {
                        "kind": "train",
                        "step": step,
                        "epoch": epoch,
                        "loss": mean_loss,
                        "grad_norm": float(norm),
                        "lr": optimizer.param_groups[0]["lr"],
                        "tokens_per_s": rate,
                        "time": elapsed_before + now - start,
                    }
                    run.log_metrics(record)
                    if board is not None:
                        board.log_train(record)
                postfix = {
                    "loss": f"{mean_loss:.3f}",
                    "bits": f"{mean_loss / math.log(2):.3f}",
                    f"{task.tokens_name}/s": f"{rate:,.0f}",
                }
                if last_eval:
                    postfix["val"] = f"{last_eval['loss']:.3f}"
                bar.set_postfix(postfix, refresh=False)
                window_tokens, window_start, window_loss, window_steps = 0, now, 0.0, 0

            # eval_every <= 0 means once per epoch
            if step % (cfg.eval_every if cfg.eval_every > 0 else per_epoch) == 0 or finished:
                last_eval = _evaluate(task, model, run, step, start, elapsed_before, group, board)
                improved = last_eval["loss"] < best
                if improved:
                    best, stale = last_eval["loss"], 0
                else:
                    stale += 1
                    if cfg.schedule == "plateau":
                        plateau *= cfg.lr_decay
                checkpoint(tag_best=improved)
                # restart the logging window so a resumed run logs the very same averages
                window_tokens, window_start, window_loss, window_steps = 0, time.monotonic(), 0.0, 0
                if cfg.patience and stale >= cfg.patience:
                    stop_reason = "early_stop"
                    break
    except BaseException:
        if board is not None:
            board.close()
        raise
    finally:
        bar.close()
    if not last_eval or last_eval.get("step") != step:  # a time budget ended between evaluations
        last_eval = _evaluate(task, model, run, step, start, elapsed_before, group, board)
        improved = last_eval["loss"] < best
        best = min(best, last_eval["loss"])
        checkpoint(tag_best=improved)
    if board is not None:
        board.close()
    try:
        if group.is_main:
            _plot_curves(run)
    except Exception as e:  # a plot must never lose a finished run
        log.warning("could not draw loss.png: %s", e)
    return {
        "steps": step,
        "best_val_loss": best,
        "last": last_eval,
        "stop_reason": stop_reason,
        "skipped_steps": skipped,
        "seconds": elapsed_before + time.monotonic() - start,
    }


def _evaluate(task, model, run, step, start, elapsed_before, group, board=None) -> dict[str, float]:
    """Validation metrics (every rank computes the same numbers; rank 0 logs them)."""
    model.eval()
    with torch.no_grad():
        metrics = task.evaluate(model)
    metrics = {**metrics, "step": step}
    if group.is_main:
        record = {
            "kind": "eval",
            **{("val_" + k if k != "step" else k): v for k, v in metrics.items()},
            "time": elapsed_before + time.monotonic() - start,
        }
        run.log_metrics(record)
        if board is not None:
            board.log_eval(record)
            text = _sample_text(model, step)
            if text is not None:
                run.log_metrics({"kind": "sample", "step": step, "text": text})
                board.log_sample(text, step)
            board.flush()
    return metrics


SAMPLE_LENGTH = 200  # tokens of the text sample logged at each evaluation (--log tensorboard)


def _open_board(cfg: TrainConfig, task: TrainingTask, run: RunDir, resumed_at: int | None):
    """The TensorBoard logger of ``cfg.log``, or None. On resume, events the interrupted run
    wrote after its checkpoint are purged, as its metrics.jsonl records were."""
    if cfg.log != "tensorboard":
        return None
    from rnnkit.tensorboard_logger import TENSORBOARD_DIR, TensorBoardLogger

    board = TensorBoardLogger(
        run.path / TENSORBOARD_DIR,
        bits=getattr(task, "tokens_name", "") != "window",  # a forecaster's loss is an MSE
        purge_step=None if resumed_at is None else resumed_at + 1,
    )
    if resumed_at is None and run.config_path.exists():
        board.log_config(run.load_config())
    return board


def _sample_text(model: nn.Module, step: int) -> str | None:
    """What a text model writes from its default context (seeded by the step, on its own
    generator, so training's random streams are untouched); None for other models."""
    generate = getattr(model, "generate", None)
    if not callable(generate) or not hasattr(model, "vocab"):
        return None
    try:
        return generate(length=SAMPLE_LENGTH, temperature=0.8, seed=step)
    except Exception as e:  # a sample is a view: it must never stop training
        log.warning("no text sample at step %d: %s", step, e)
        return None
