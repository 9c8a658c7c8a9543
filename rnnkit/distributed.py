"""Multi-process training: the process group from ``torchrun``'s environment, and the few
collective decisions the trainer must take together.

``rnnkit train …`` started by ``torchrun --nproc_per_node N`` (on one or several machines) sets
up a process group (gloo on CPU, NCCL on GPU), wraps the model in ``DistributedDataParallel``
(gradients averaged across ranks), gives each rank its own shard of the data, and lets rank 0
alone write checkpoints and logs. Every rank takes the same control-flow decisions (stop on a
non-finite loss, stop at the time budget) because those decisions are reduced across ranks.

If a rank dies, the others fail at their next collective operation (gloo reports the closed
connection) or, at the latest, after ``RNNKIT_DIST_TIMEOUT`` seconds (default 300), and
``torchrun`` stops the job; ``--resume`` then restarts every rank from the last checkpoint.
"""

from __future__ import annotations

import datetime
import logging
import os
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["Dist", "init_from_env", "DEFAULT_TIMEOUT_S"]

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 300


def init_from_env(device: torch.device) -> tuple[Dist, torch.device]:
    """Join the process group described by torchrun's variables, if any.

    Returns the group handle and the device this rank should use (``cuda:LOCAL_RANK`` on GPU).
    Without ``WORLD_SIZE > 1`` in the environment this is a single process and nothing happens.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or (dist.is_available() and dist.is_initialized()):
        return Dist(), device
    if not dist.is_available():
        raise RuntimeError("this PyTorch build has no torch.distributed support")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    timeout = float(os.environ.get("RNNKIT_DIST_TIMEOUT", DEFAULT_TIMEOUT_S))
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout))
    group = Dist()
    log.info(
        "process group: rank %d of %d (%s, timeout %.0f s)",
        group.rank,
        group.world,
        backend,
        timeout,
    )
    return group, device


class Dist:
    """The current process group, or a stand-in for a single process (every call is trivial)."""

    def __init__(self) -> None:
        self.enabled = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if self.enabled else 0
        self.world = dist.get_world_size() if self.enabled else 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def _reduce(self, value: float, op) -> float:
        if not self.enabled:
            return value
        t = torch.tensor([float(value)], dtype=torch.float64)
        if dist.get_backend() == "nccl":
            t = t.cuda()
        dist.all_reduce(t, op=op)
        return float(t.item())

    def all_true(self, flag: bool) -> bool:
        """True only if ``flag`` holds on every rank."""
        return self._reduce(1.0 if flag else 0.0, dist.ReduceOp.MIN) > 0.5

    def any_true(self, flag: bool) -> bool:
        return self._reduce(1.0 if flag else 0.0, dist.ReduceOp.MAX) > 0.5

    def mean(self, value: float) -> float:
        return self._reduce(value, dist.ReduceOp.SUM) / self.world

    def sum(self, value: float) -> float:
        return self._reduce(value, dist.ReduceOp.SUM)

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order (on every rank)."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """``DistributedDataParallel(model)`` in a process group, the model itself otherwise."""
        if not self.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def close(self) -> None:
        if self.enabled:
            dist.destroy_process_group()
