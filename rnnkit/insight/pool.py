"""The process pool of a memory sweep: independent runs trained at once in worker processes.

Workers are spawned (never forked from a process that runs torch threads), each with its own
torch thread count; they report training steps through one shared counter so the parent's
progress bar moves while runs are under way. Results come back in plan order.
"""

from __future__ import annotations

import torch

from rnnkit.insight.memory import MemoryConfig, MemoryResult, train_memory


def run_parallel(plan, jobs, threads, bar, describe) -> list[MemoryResult]:
    """Train every config of ``plan`` in ``jobs`` workers; ``bar`` counts steps, ``describe``
    (config, result) → the text shown after a run ends."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    ctx = multiprocessing.get_context("spawn")  # no fork of a process that runs torch threads
    counter = ctx.Value("q", 0)
    results: list[MemoryResult | None] = [None] * len(plan)
    # longest sequences first, so the last runs to finish are short ones
    order = sorted(range(len(plan)), key=lambda k: -plan[k].length)
    pool = ProcessPoolExecutor(
        jobs, mp_context=ctx, initializer=_worker_init, initargs=(counter, threads)
    )
    try:
        futures = {pool.submit(_worker_run, plan[k]): k for k in order}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            for f in done:
                k = futures[f]
                results[k] = f.result()
                bar.set_postfix_str(describe(plan[k], results[k]), refresh=False)
            bar.update(counter.value - bar.n)
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return results  # type: ignore[return-value]


_STEP_COUNTER = None  # in a worker process: the shared count of steps done


def _worker_init(counter, threads: int) -> None:
    global _STEP_COUNTER
    _STEP_COUNTER = counter
    torch.set_num_threads(threads)


def _worker_run(cfg: MemoryConfig) -> MemoryResult:
    unreported = 0

    def report(n: int) -> None:
        with _STEP_COUNTER.get_lock():
            _STEP_COUNTER.value += n

    def on_step(step, loss, metric):
        nonlocal unreported
        unreported += 1
        if unreported == 20:
            report(unreported)
            unreported = 0

    result = train_memory(cfg, on_step)
    report(unreported + cfg.steps - result.steps)
    return result
