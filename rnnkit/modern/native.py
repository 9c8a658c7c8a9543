"""The loader of this package's C++ loop (``elementwise.cpp``), built on first use.

:func:`ops` returns ``torch.ops.rnnkit_modern`` (``scan_forward`` / ``scan_backward``: the fused
elementwise recurrences of minGRU, minLSTM, QRNN and SRU; CPU, float32 and float64) or ``None``
where it cannot be had: no C++ compiler, a failed build, or ``RNNKIT_NATIVE=0`` in the
environment. Callers then run the cells' torch step loops. The library is built once per machine
(tens of seconds) into torch's extension cache under a name hashing the source, the flags, the
torch version and the CPU's instruction-set flags (it is compiled with ``-march=native``).

:class:`ElementwiseScan` is the autograd function over the two ops.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from rnnkit.native.build import NativeLibrary

__all__ = ["ops", "available", "elementwise_scan", "CELL_IDS"]


SOURCE = Path(__file__).with_name("elementwise.cpp")
# -fno-trapping-math lets GCC if-convert and vectorise the unit loops; -fopenmp-simd honours
# their `omp simd` without an OpenMP runtime (threads come from at::parallel_for)
CFLAGS = ["-O3", "-march=native", "-fno-trapping-math", "-fopenmp-simd"]
# cell ids of elementwise.cpp: number of pre-activation chunks G and per-unit vectors V
CELL_IDS = {"mingru": (0, 2, 0), "minlstm": (1, 3, 0), "qrnn": (2, 3, 0), "sru": (3, 4, 2)}
_LIBRARY = NativeLibrary("rnnkit_modern", [SOURCE], (), CFLAGS, (), "the loops of rnnkit.modern")


def ops():
    """``torch.ops.rnnkit_modern`` once built and loaded, else ``None`` (tried once a process)."""
    return _LIBRARY.ops()


def available() -> bool:
    return ops() is not None


def usable(u: Tensor) -> bool:
    """True when the native loop can run on ``u``: built, CPU, float32 or float64."""
    return u.device.type == "cpu" and u.dtype in (torch.float32, torch.float64) and available()


class ElementwiseScan(torch.autograd.Function):
    """Autograd over ``scan_forward`` / ``scan_backward`` (equations in ``elementwise.cpp``).

    ``forward(cell, u (B, T, G·H), s0 (B, H), v (V·H,) or None, lengths (B,) int64 or None)``
    returns ``(y (B, T, H), s_last (B, H))``; the backward gives ∂L/∂u, ∂L/∂s0 and ∂L/∂v.
    """

    @staticmethod
    def forward(ctx, cell: str, u: Tensor, s0: Tensor, v: Tensor | None, lengths: Tensor | None):
        cell_id, G, V = CELL_IDS[cell]
        op = ops()
        B, T = u.shape[:2]
        H = u.shape[2] // G
        u = u.contiguous()
        s0 = s0.contiguous()
        y = torch.empty(B, T, H, dtype=u.dtype)
        y_is_state = cell in ("mingru", "minlstm")
        states = None if y_is_state else torch.empty_like(y)
        s_last = torch.empty(B, H, dtype=u.dtype)
        op.scan_forward(cell_id, u, s0, v, lengths, y, states, s_last)
        ctx.cell = cell
        ctx.save_for_backward(u, s0, v, lengths, y if y_is_state else states)
        return y, s_last

    @staticmethod
    def backward(ctx, gy: Tensor | None, gs_last: Tensor | None):
        u, s0, v, lengths, states = ctx.saved_tensors
        cell_id, G, V = CELL_IDS[ctx.cell]
        gy = torch.zeros_like(states) if gy is None else gy.contiguous()
        du = torch.empty_like(u)
        dv_rows = torch.zeros(u.shape[0], V * states.shape[2], dtype=u.dtype) if V else None
        ds0 = ops().scan_backward(cell_id, u, s0, v, lengths, states, gy, gs_last, du, dv_rows)
        dv = dv_rows.sum(0) if V else None
        return None, du, ds0, dv, None


def elementwise_scan(
    cell: str, u: Tensor, s0: Tensor, v: Tensor | None = None, lengths: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Run one cell's recurrence over ``u`` natively; ``(y (B, T, H), final state (B, H))``."""
    if lengths is not None:
        lengths = lengths.to("cpu", torch.int64).contiguous()
    if u.dtype != s0.dtype:  # e.g. a bfloat16 projection under autocast: recur in s0's precision
        u = u.to(s0.dtype)
    return ElementwiseScan.apply(cell, u, s0, v, lengths)
