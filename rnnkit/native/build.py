"""Building and loading a C++ op library on first use, once per machine: :class:`NativeLibrary`.

The library is compiled with torch's C++ extension builder into its extension cache
(``TORCH_EXTENSIONS_DIR``, by default ``~/.cache/torch_extensions``) under a name that hashes the
sources, the compiler flags, the torch version and the CPU's instruction-set flags: the code is
built with ``-march=native``, so a cache shared between different CPUs never loads a library
built for another one. ``RNNKIT_NATIVE=0`` in the environment turns every library off.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
from collections.abc import Sequence
from pathlib import Path

import torch

__all__ = ["NativeLibrary"]

log = logging.getLogger(__name__)


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


class NativeLibrary:
    """``torch.ops.<namespace>`` built from ``sources`` (``headers`` count for the cache name)
    the first time :meth:`ops` is called; ``None`` where it cannot be had (no compiler, a failed
    build, ``RNNKIT_NATIVE=0``), tried once a process. ``what`` names it in the log lines."""

    def __init__(
        self,
        namespace: str,
        sources: Sequence[Path],
        headers: Sequence[Path] = (),
        cflags: Sequence[str] = (),
        ldflags: Sequence[str] = (),
        what: str = "native kernels",
    ) -> None:
        self.namespace = namespace
        self.sources, self.headers = list(sources), list(headers)
        self.cflags, self.ldflags = list(cflags), list(ldflags)
        self.what = what
        self._ops = None
        self._tried = False

    def build_name(self) -> str:
        digest = hashlib.sha256()
        for path in self.sources + self.headers:
            digest.update(path.read_bytes())
        digest.update(" ".join(self.cflags + self.ldflags).encode())
        digest.update(torch.__version__.encode())
        digest.update(_cpu_flags().encode())
        return f"{self.namespace}_{digest.hexdigest()[:12]}"

    def ops(self):
        """The loaded op namespace, or ``None``."""
        if self._tried:
            return self._ops
        self._tried = True
        if os.environ.get("RNNKIT_NATIVE", "1") == "0":
            return None
        try:
            from torch.utils.cpp_extension import get_default_build_root, load

            name = self.build_name()
            root = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root())
            if not any(root.glob(f"**/{name}/{name}.so")):
                log.warning("rnnkit: building %s (once per machine)", self.what)
            load(
                name=name,
                sources=[str(path) for path in self.sources],
                extra_cflags=self.cflags,
                extra_ldflags=self.ldflags,
                is_python_module=False,
                verbose=False,
            )
            self._ops = getattr(torch.ops, self.namespace)
        except Exception as err:  # no compiler, no headers, build error: callers keep torch loops
            log.info("rnnkit: %s unavailable (%s); using the torch loops", self.what, err)
            self._ops = None
        return self._ops
