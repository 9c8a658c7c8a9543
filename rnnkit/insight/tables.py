"""Text tables of the instruments: gradient norms at a few distances, memory-task success."""

from __future__ import annotations

import math
from collections.abc import Sequence

from rnnkit.insight.gradient_flow import GradientFlow
from rnnkit.insight.memory import MemoryResult, run_label


def gradient_table(flows: Sequence[GradientFlow], distances: Sequence[int] = (1, 10, 50)) -> str:
    """Text table: state-gradient norm at a few distances, the ratio d/1, mean ‖J‖₂, clipping."""
    T = flows[0].length if flows else 0
    ds = [d for d in distances if d < T] + ([T - 1] if T - 1 not in distances and T > 1 else [])
    far = max((d for d in distances if d < T), default=None)
    width = max([len("config")] + [len(g.label) for g in flows])
    head = f"{'config':<{width}}  " + "  ".join(f"{f'd={d}':>9}" for d in ds)
    if far is not None and far != 1:
        head += f"  {f'd{far}/d1':>9}"
    head += f"  {'mean ‖J‖₂':>9}  {'grad norm → clipped':>21}"
    lines = [head]
    for g in flows:
        row = f"{g.label:<{width}}  " + "  ".join(f"{g.grad_state[d]:>9.2e}" for d in ds)
        if far is not None and far != 1:
            row += f"  {g.ratio(far):>9.2e}"
        mean_j = sum(g.jacobian) / max(len(g.jacobian), 1)
        row += f"  {mean_j:>9.3f}  {g.param_grad_norm:>9.3g} → {g.clipped_grad_norm:.3g}"
        lines.append(row)
    return "\n".join(lines)


def memory_table(results: Sequence[MemoryResult], labels: Sequence[str] | None = None) -> str:
    """Success table: rows = configurations, columns = lengths.

    A cell reads ``k/n @ s``: k of n seeds reached success, the median success step s; when none
    did, ``0/n`` and the mean final metric. The last column is the largest T that at least half
    of the seeds solved (— if none).
    """
    if not results:
        return "(no runs)"
    several = len({r.config.clip for r in results}) > 1
    groups: dict[tuple[str, int], list[MemoryResult]] = {}
    for r in results:
        key = (run_label(r.config.cell, r.config.clip, several), r.config.length)
        groups.setdefault(key, []).append(r)
    labels = list(labels) if labels else list(dict.fromkeys(k[0] for k in groups))
    lengths = sorted({k[1] for k in groups})
    width = max(len("config"), *(len(x) for x in labels))
    col = 15
    lines = [
        f"{'config':<{width}}  "
        + "".join(f"{f'T={T}':>{col}}" for T in lengths)
        + f"{'largest T':>{col}}"
    ]
    for label in labels:
        row, best = f"{label:<{width}}  ", None
        for T in lengths:
            runs = groups.get((label, T), [])
            if not runs:
                row += f"{'—':>{col}}"
                continue
            ok = [r for r in runs if r.success]
            if ok:
                s = sorted(r.steps_to_success for r in ok)[len(ok) // 2]
                text = f"{len(ok)}/{len(runs)} @ {s}"
            else:
                finite = [r.metric for r in runs if math.isfinite(r.metric)]
                m = f"{sum(finite) / len(finite):.3g}" if finite else "nan"
                text = f"0/{len(runs)} ({m})"
            if 2 * len(ok) >= len(runs) and ok:
                best = T
            row += f"{text:>{col}}"
        row += f"{(str(best) if best is not None else '—'):>{col}}"
        lines.append(row)
    return "\n".join(lines)
