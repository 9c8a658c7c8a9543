"""Optional native CPU kernels, compiled on first use with torch's C++ extension builder.

:func:`ops` returns ``torch.ops.rnnkit_native`` (the GRU, LSTM and Elman RNN sequences of
``gru_fused.cpp``, ``gru_steps.cpp``, ``lstm_steps.cpp`` and ``rnn_fused.cpp``, and the weight
gradients of ``weight_grad.cpp``; CPU tensors only) or ``None`` where they cannot be had: no C++
compiler, a failed build, or ``RNNKIT_NATIVE=0`` in the environment. Callers (``rnnkit.fast``)
check the device and dtype and keep their TorchScript loops and torch.mm for everything else.

The build takes about a minute once per machine and torch version; the library lands in torch's
extension cache (``TORCH_EXTENSIONS_DIR``, by default ``~/.cache/torch_extensions``) under a name
that hashes the source, the torch version and the CPU's instruction-set flags (the code is
compiled with ``-march=native``, so a cache shared between different CPUs never loads a library
built for another one).
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
from pathlib import Path

import torch

__all__ = ["ops", "available"]

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
SOURCES = [
    HERE / f
    for f in (
        "gru_steps.cpp",
        "gru_fused.cpp",
        "lstm_steps.cpp",
        "rnn_fused.cpp",
        "weight_grad.cpp",
    )
]
HEADERS = [HERE / "common.h", HERE / "gru_rows.h", HERE / "tile_gemm.h"]
# -fno-trapping-math lets GCC vectorise the gate loops (floor / float→int in the exp); NaN and
# infinity keep their IEEE meaning (no -ffast-math); OpenMP: the fused sequences' thread team (the
# same libgomp torch runs on) and the SIMD reductions of the layer-norm sums
CFLAGS = ["-O3", "-march=native", "-fno-trapping-math", "-fopenmp"]
LDFLAGS = ["-fopenmp"]
_OPS = None
_TRIED = False


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _build_name() -> str:
    digest = hashlib.sha256()
    for path in SOURCES + HEADERS:
        digest.update(path.read_bytes())
    digest.update(" ".join(CFLAGS + LDFLAGS).encode())
    digest.update(torch.__version__.encode())
    digest.update(_cpu_flags().encode())
    return f"rnnkit_native_{digest.hexdigest()[:12]}"


def ops():
    """``torch.ops.rnnkit_native`` once built and loaded, else ``None`` (tried once a process)."""
    global _OPS, _TRIED
    if _TRIED:
        return _OPS
    _TRIED = True
    if os.environ.get("RNNKIT_NATIVE", "1") == "0":
        return None
    try:
        from torch.utils.cpp_extension import get_default_build_root, load

        name = _build_name()
        root = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root())
        if not any(root.glob(f"**/{name}/{name}.so")):
            log.warning("rnnkit: building the native RNN kernels (once per machine, ~1 minute)")
        load(
            name=name,
            sources=[str(path) for path in SOURCES],
            extra_cflags=CFLAGS,
            extra_ldflags=LDFLAGS,
            is_python_module=False,
            verbose=False,
        )
        _OPS = torch.ops.rnnkit_native
    except Exception as err:  # no compiler, no headers, build error: keep the torch path
        log.info("rnnkit: native kernels unavailable (%s); using the torch-op loops", err)
        _OPS = None
    return _OPS


def available() -> bool:
    return ops() is not None
