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

from pathlib import Path

from rnnkit.native.build import NativeLibrary

__all__ = ["ops", "available"]


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
_LIBRARY = NativeLibrary(
    "rnnkit_native", SOURCES, HEADERS, CFLAGS, LDFLAGS, "the native RNN kernels (~1 minute)"
)


def ops():
    """``torch.ops.rnnkit_native`` once built and loaded, else ``None`` (tried once a process)."""
    return _LIBRARY.ops()


def available() -> bool:
    return ops() is not None
