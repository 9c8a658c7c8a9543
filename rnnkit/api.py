"""Loading trained runs for inference: ``rnnkit.load(run_dir)``."""

from __future__ import annotations

import os

import torch

from rnnkit.checkpoint import RunDir
from rnnkit.data.prepared import load_vocabulary
from rnnkit.errors import CheckpointError
from rnnkit.tasks import get_task

__all__ = ["load"]


def load(run_dir: str | os.PathLike, tag: str = "best", device: str | torch.device = "cpu"):
    """The task model saved in ``run_dir``, in eval mode on ``device``, ready for inference.

    ``tag="best"`` takes the weights with the best validation loss (falling back to the last
    ones when no best was kept); ``tag="last"`` the most recent checkpoint.
    """
    run = RunDir(run_dir)
    run.validate()
    config = run.load_config()
    if "task" not in config:
        raise CheckpointError("config.json has no 'task' entry", path=run.config_path)
    vocab = load_vocabulary(run.vocab_path) if run.vocab_path.exists() else None
    model, _ = get_task(config["task"]).restore(config, vocab, torch.device(device))
    if tag == "best" and not run.model_path("best").exists():
        tag = "last"
    state = run.load_model_state(tag, device=device)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise CheckpointError(
            f"weights do not fit the saved config: {first}", path=run.model_path(tag)
        ) from None
    return model.eval()
