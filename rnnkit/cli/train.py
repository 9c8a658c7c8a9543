"""``rnnkit train <task>``: build (or resume) a run, train it, print the outcome.

Settings resolve as the task's defaults → ``--config FILE`` (TOML) → flags; the resolved config
is printed and saved in the run. ``--resume RUN`` continues a run from its last checkpoint
(only ``--train.*`` flags may change).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from rnnkit.cli.common import UsageError

log = logging.getLogger("rnnkit")


def _train_sections(task) -> dict[str, type]:
    from rnnkit.train import TrainConfig

    return {**task.sections, "train": TrainConfig}


def _changed_settings(args: argparse.Namespace, saved: dict) -> list[str]:
    """The model/data flags given with ``--resume`` whose values differ from the run's saved
    ones, each as ``section.name (saved X, given Y)``: re-running the same command with
    ``--resume`` added repeats them unchanged, which is no change."""
    import json

    def plain(value):  # tuples and lists, ints and floats compare as JSON does
        return json.loads(json.dumps(value))

    changed = []
    for key, value in sorted(vars(args).items()):
        if "." not in key or key.startswith("train."):
            continue
        section, name = key.split(".", 1)
        if name in saved.get(section, {}) and plain(saved[section][name]) == plain(value):
            continue
        was = saved.get(section, {}).get(name, "unset")
        changed.append(f"{key} (saved {was!r}, given {value!r})")
    return changed


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from rnnkit.checkpoint import RunDir, default_run_dir
    from rnnkit.config import from_dict, resolve, to_dict
    from rnnkit.data.prepared import load_vocabulary
    from rnnkit.distributed import init_from_env
    from rnnkit.tasks import get_task
    from rnnkit.train import TrainConfig, fit, seed_everything, select_device

    task = get_task(args.task)
    sections = _train_sections(task)
    if args.resume:
        run = RunDir(args.resume)
        run.validate()
        if not run.trainer_path.exists():
            raise UsageError(f"{run.trainer_path}: no trainer state to resume from")
        saved = run.load_config()
        if saved.get("task") != task.name:
            raise UsageError(f"{run.path} is a {saved.get('task')!r} run, not {task.name!r}")
        overrides = {k.split(".", 1)[1]: v for k, v in vars(args).items() if k.startswith("train.")}
        train_cfg = from_dict(TrainConfig, {**saved["train"], **overrides})
        changed = _changed_settings(args, saved)
        if changed:
            raise UsageError(
                f"--resume keeps the run's model and data; cannot change {'; '.join(changed)}"
            )
        group, device = init_from_env(select_device(train_cfg.device))
        vocab = load_vocabulary(run.vocab_path) if run.vocab_path.exists() else None
        model, training = task.restore(saved, vocab, device, train_cfg, with_data=True)
        saved["train"] = to_dict(train_cfg)
        if group.is_main:
            run.save_config(saved)
        log.info("resuming %s", run.path)
        resume = True
    else:
        configs = resolve(args, sections, args.config, getattr(task, "defaults", None))
        train_cfg = configs["train"]
        if train_cfg.threads:
            torch.set_num_threads(train_cfg.threads)
        group, device = init_from_env(select_device(train_cfg.device))
        seed_everything(train_cfg.seed)  # the initial weights depend on the seed too
        model, training = task.build(configs, train_cfg, device)
        out = group.broadcast(str(args.out or default_run_dir(task.name)))  # one name for all
        saved = {"task": task.name, **{name: to_dict(cfg) for name, cfg in configs.items()}}
        if group.is_main:
            run = RunDir.create(out, exist_ok=False)
            vocab = getattr(model, "vocab", None)
            if vocab is not None:
                vocab.save(run.vocab_path)
            run.save_config(saved)
        group.barrier()
        run = RunDir(out)
        resume = False
    n_params = sum(p.numel() for p in model.parameters())
    if group.is_main:
        shown = {k: _elide_lists(v) for k, v in saved.items() if k != "rnnkit_version"}
        log.info(json.dumps(shown, indent=2, ensure_ascii=False))
    log.info("run directory: %s | %s parameters | device %s", run.path, f"{n_params:,}", device)
    if group.enabled and group.is_main:
        log.info(
            "global batch %d = %d processes × %d sequences",
            train_cfg.batch_size,
            group.world,
            train_cfg.batch_size // group.world,
        )
    try:
        summary = fit(model, training, train_cfg, run, resume=resume)
    finally:
        group.close()
    if not group.is_main:
        return 0
    last = summary["last"]
    line = (
        f"done: {summary['steps']} steps in {summary['seconds']:.0f} s ({summary['stop_reason']}); "
        f"validation loss {last['loss']:.4f}"
    )
    if "bits" in last:
        line += f" nats/{training.tokens_name} = {last['bits']:.4f} bits"
    print(line + f"; best {summary['best_val_loss']:.4f}; saved in {run.path}", file=sys.stderr)
    return 0


def _elide_lists(value, keep: int = 8):
    """The config as printed: long lists (e.g. vocabularies saved in config.json) shortened."""
    if isinstance(value, dict):
        return {k: _elide_lists(v, keep) for k, v in value.items()}
    if isinstance(value, list) and len(value) > keep:
        return [*value[:keep], f"... {len(value) - keep} more"]
    return value


def register(verbs) -> None:
    """Add ``train TASK`` (one sub-parser per task, its config sections as flags) to ``verbs``."""
    from rnnkit.config import add_dataclass_flags
    from rnnkit.tasks import TASK_MODULES, get_task

    train = verbs.add_parser(
        "train",
        help="train a model for a task",
        description="Train a model; defaults ← --config FILE ← flags.",
    )
    tasks = train.add_subparsers(dest="task", metavar="TASK")
    tasks.required = True
    for name in TASK_MODULES:
        task = get_task(name)
        tp = tasks.add_parser(
            name, help=(task.__doc__ or "").strip().splitlines()[0] if task.__doc__ else None
        )
        tp.add_argument(
            "--config", metavar="FILE", help="TOML file with [model]/[data]/[train] settings"
        )
        tp.add_argument("--out", metavar="DIR", help="run directory (default: runs/<task>-<time>)")
        tp.add_argument(
            "--resume", metavar="RUN", help="continue the run in RUN from its last checkpoint"
        )
        for section, cls in _train_sections(task).items():
            add_dataclass_flags(tp, cls, section)
        tp.set_defaults(func=cmd_train)
