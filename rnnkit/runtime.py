"""Process-wide settings for CPU training that rnnkit's trainer and benchmarks apply.

glibc's malloc hands large freed blocks back to the operating system (it trims the top of the heap
once more than ``M_TRIM_THRESHOLD`` bytes are free, and serves blocks above ``M_MMAP_THRESHOLD``
with their own mappings). A training step allocates and frees the same tens of megabytes of
activations every time, so each step then faults its buffers back in page by page and the kernel
zeroes them again: a 2×512 GRU step on 2 threads spent ~18 ms of its ~230 ms in the kernel that
way here (10,000 page faults per step). :func:`retain_freed_memory` raises both thresholds so the
freed memory is reused instead; the cost is that up to ``threshold`` bytes of freed memory stay
with the process. ``rnnkit prepare`` applies it too: each chunk of text it reads becomes
megabytes of code points and ids that are freed a moment later (a 10 MB char prepare ran in
0.13-0.16 s with it, 0.21-0.27 s without). jemalloc or tcmalloc via ``LD_PRELOAD`` do the same job where installed.

Set ``RNNKIT_MALLOC_TUNING=0`` to leave malloc alone.

:func:`cpu_has_native_bf16` says whether oneDNN computes bf16 natively on this CPU (AVX-512 BF16
or AMX). Without it torch emulates bf16 (slowly), and oneDNN cannot build its fused LSTM for
bf16 at all, so rnnkit's layers run that kernel in fp32 under a bf16 autocast there.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import sys

__all__ = ["cpu_has_native_bf16", "retain_freed_memory"]

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1  # <malloc.h>
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_MAX = 32 << 20  # glibc's largest accepted value on 64-bit systems
_APPLIED = False


def retain_freed_memory(threshold: int = 1 << 30) -> bool:
    """Keep up to ``threshold`` bytes of freed memory in the process (glibc only).

    Blocks up to 32 MiB come from the heap instead of their own mappings, and the heap is not
    trimmed until more than ``threshold`` bytes are free. Returns whether the settings were
    applied (False elsewhere than glibc, or with ``RNNKIT_MALLOC_TUNING=0``). Idempotent.
    """
    global _APPLIED
    if _APPLIED:
        return True
    if os.environ.get("RNNKIT_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries: nothing to tune
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX) == 1
    ok = mallopt(_M_TRIM_THRESHOLD, int(min(threshold, 2**31 - 1))) == 1 and ok
    if ok:
        log.debug("rnnkit: malloc keeps up to %d bytes of freed memory", threshold)
    _APPLIED = ok
    return ok


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True where oneDNN runs bf16 arithmetic natively on this CPU (AVX-512 BF16 or AMX)."""
    import torch

    return bool(
        torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    )
