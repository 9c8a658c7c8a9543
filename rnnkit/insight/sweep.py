"""Memory-task sweeps: every (clip, cell, length, seed) trained with one progress bar.

:func:`run_memory_benchmark` plans the runs, trains them in this process or in a pool of worker
processes (:mod:`rnnkit.insight.pool`) and returns the results in plan order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict

from rnnkit.insight.layers import MEMORY_CELLS
from rnnkit.insight.memory import MemoryConfig, MemoryResult, run_label, train_memory
from rnnkit.insight.pool import run_parallel

#: defaults of ``bench memory`` per task: lengths and the step budget of every run
TASK_DEFAULTS = {
    "bit": {"lengths": (10, 50, 100, 200), "steps": 1000},
    "adding": {"lengths": (10, 50, 100, 200), "steps": 4000},
    "copy": {"lengths": (10, 20, 50, 100), "steps": 3000},
}


def run_memory_benchmark(
    base: MemoryConfig,
    cells: Sequence[str],
    lengths: Sequence[int],
    seeds: Sequence[int],
    clips: Sequence[float] = (1.0,),
    progress: bool = True,
    jobs: int = 1,
    threads: int = 1,
) -> list[MemoryResult]:
    """Train every (clip, cell, length, seed) with ``base``'s other settings; one progress bar.

    Runs are independent (each seeds its own data and weights), so ``jobs`` > 1 trains that many
    at once in worker processes with ``threads`` torch threads each; the results are the same
    and come back in plan order (clip, cell, length, seed). The bar counts training steps over
    the whole sweep; a run that succeeds early moves it on by the steps it did not need.
    """
    from tqdm.auto import tqdm

    for cell in cells:
        if cell not in MEMORY_CELLS:
            raise ValueError(f"unknown cell {cell!r}; expected some of {', '.join(MEMORY_CELLS)}")
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1; got {jobs}")
    plan = [
        MemoryConfig(**{**asdict(base), "clip": clip, "cell": cell, "length": T, "seed": seed})
        for clip in clips
        for cell in cells
        for T in sorted(lengths)
        for seed in seeds
    ]
    several = len(clips) > 1
    bar = tqdm(
        total=len(plan) * base.steps,
        disable=not progress,
        unit="step",
        dynamic_ncols=True,
        mininterval=0.5,
    )

    def describe(cfg: MemoryConfig, result: MemoryResult) -> str:
        outcome = f"ok@{result.steps_to_success}" if result.success else f"{result.metric:.3g}"
        return f"{run_label(cfg.cell, cfg.clip, several)} T={cfg.length} s{cfg.seed} {outcome}"

    try:
        if jobs == 1:
            results = []
            for cfg in plan:
                label = f"{run_label(cfg.cell, cfg.clip, several)} T={cfg.length} s{cfg.seed}"

                def on_step(step, loss, metric, label=label):
                    bar.update(1)
                    if step % 50 == 0:
                        bar.set_postfix_str(f"{label} loss={loss:.3g}", refresh=False)

                result = train_memory(cfg, on_step)
                bar.update(cfg.steps - result.steps)
                bar.set_postfix_str(describe(cfg, result), refresh=False)
                results.append(result)
            return results
        return run_parallel(plan, jobs, threads, bar, describe)
    finally:
        bar.close()
