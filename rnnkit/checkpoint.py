"""Run directories and the files in them, written atomically and loaded without pickle.

A run directory is what users pass around::

    runs/lm-20240101-120000/
      config.json         task, model and train config, vocab, rnnkit version
      model.safetensors   weights of the last checkpoint (``best.safetensors`` for the best)
      trainer.pt          optimizer state, RNG states, step counters (``weights_only`` loadable)
      metrics.jsonl       one JSON object per logged step / evaluation
      vocab.json          the vocabulary, when the task has one

Two rules hold for every file this module writes:

* **Atomic** (:mod:`rnnkit.fileio`). Data goes to a temporary file in the same directory, is
  flushed and fsync'ed, then ``os.replace``-d over the target. A crash (or Ctrl-C) mid-write leaves
  the previous file intact and never a half-written one under the real name. ``metrics.jsonl`` is
  the exception: it is appended to line by line, and the reader tolerates a torn last line.
* **No arbitrary pickle.** Weights are safetensors. The trainer state needs ``torch.save`` (the
  optimizer state is nested dicts of tensors), but it is loaded with ``weights_only=True`` and a
  file that carries anything beyond tensors and plain containers is refused, so opening a run
  directory from someone else cannot execute code.
"""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
import random
import re
import struct
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save as _safetensors_save

from rnnkit.errors import CheckpointError
from rnnkit.fileio import (
    PathLike,
    append_jsonl,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
)
from rnnkit.version import __version__

__all__ = [
    "RunDir",
    "append_jsonl",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "capture_rng_state",
    "default_run_dir",
    "load_tensor_metadata",
    "load_tensors",
    "load_trainer_state",
    "restore_rng_state",
    "save_tensors",
    "save_trainer_state",
]

logger = logging.getLogger(__name__)

# safetensors metadata key under which tied-weight aliases are recorded ({alias: stored_name}).
_ALIASES_KEY = "rnnkit.aliases"


# --------------------------------------------------------------------------- safetensors


def _storage_key(t: torch.Tensor) -> tuple | None:
    """Identity of the exact view a tensor is: tied parameters share all of it."""
    if t.numel() == 0:
        return None  # empty tensors may all report data_ptr 0; never treat them as tied
    return (
        t.device,
        t.untyped_storage().data_ptr(),
        t.storage_offset(),
        tuple(t.shape),
        t.stride(),
        t.dtype,
    )


def save_tensors(
    path: PathLike,
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Atomically write ``tensors`` as a safetensors file.

    Tensors are detached, moved to CPU and copied into contiguous memory, so views and slices
    save correctly. Tied weights (several names for the very same tensor view, e.g. an embedding
    shared with the output layer) are stored once; the other names are recorded in the metadata
    and :func:`load_tensors` points them back at the same tensor.

    Args:
        path: destination file, conventionally ``*.safetensors``.
        tensors: name -> tensor, typically ``model.state_dict()``.
        metadata: extra string -> string pairs stored in the header.
    """
    meta: dict[str, str] = {}
    for key, value in (metadata or {}).items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"safetensors metadata must map str to str; got {key!r}: {value!r}")
        if key == _ALIASES_KEY:
            raise ValueError(f"metadata key {_ALIASES_KEY!r} is reserved for tied weights")
        meta[key] = value

    stored: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"tensor {name!r} is a {type(t).__name__}, expected torch.Tensor")
        key = _storage_key(t)
        if key is not None and key in seen:
            aliases[name] = seen[key]
            continue
        if key is not None:
            seen[key] = name
        t = t.detach()
        # .cpu() already copies a device tensor; a CPU tensor is cloned so nothing in the saved
        # dict shares storage (safetensors refuses shared storage).
        t = (
            t.cpu().contiguous()
            if t.device.type != "cpu"
            else t.clone(memory_format=torch.contiguous_format)
        )
        stored[name] = t
    if aliases:
        meta[_ALIASES_KEY] = json.dumps(aliases, sort_keys=True)
    atomic_write_bytes(path, _safetensors_save(stored, metadata=meta or None))


def _check_safetensors_header(path: Path) -> dict[str, Any]:
    """Read and sanity-check a safetensors header without loading the tensors.

    Returns the parsed header. Raises :class:`CheckpointError` for a missing, truncated or
    malformed file.
    """
    if not path.exists():
        raise CheckpointError("no such file", path=path)
    if path.is_dir():
        raise CheckpointError("is a directory, expected a safetensors file", path=path)
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                raise CheckpointError(
                    f"not a safetensors file: {size} bytes, too short for a header", path=path
                )
            (header_len,) = struct.unpack("<Q", prefix)
            if header_len > size - 8:
                raise CheckpointError(
                    f"truncated or not a safetensors file: header claims {header_len} bytes but "
                    f"the file has {size}",
                    path=path,
                )
            header = json.loads(f.read(header_len))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"corrupt safetensors header ({exc})", path=path) from None
    except OSError as exc:
        raise CheckpointError(f"cannot read file ({exc.strerror})", path=path) from None
    if not isinstance(header, dict):
        raise CheckpointError("corrupt safetensors header (not a JSON object)", path=path)
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            end = max(end, int(info["data_offsets"][1]))
        except (TypeError, KeyError, IndexError, ValueError):
            raise CheckpointError(
                f"corrupt safetensors header (bad entry for {name!r})", path=path
            ) from None
    expected = 8 + header_len + end
    if size != expected:
        raise CheckpointError(
            f"truncated or corrupt safetensors file: expected {expected} bytes, found {size}",
            path=path,
        )
    return header


def load_tensor_metadata(path: PathLike) -> dict[str, str]:
    """The user metadata stored by :func:`save_tensors` (internal keys removed)."""
    header = _check_safetensors_header(Path(path))
    meta = dict(header.get("__metadata__") or {})
    meta.pop(_ALIASES_KEY, None)
    return meta


def load_tensors(path: PathLike, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Load a safetensors file written by :func:`save_tensors`, restoring tied weights.

    Raises:
        CheckpointError: the file is missing, truncated or corrupt (the message names it).
    """
    path = Path(path)
    header = _check_safetensors_header(path)
    try:
        with safe_open(os.fspath(path), framework="pt", device=str(device)) as f:
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except Exception as exc:  # safetensors raises its own SafetensorError (an Exception)
        raise CheckpointError(f"corrupt safetensors file ({exc})", path=path) from None
    raw_aliases = (header.get("__metadata__") or {}).get(_ALIASES_KEY)
    if raw_aliases:
        try:
            aliases = json.loads(raw_aliases)
            for alias, target in aliases.items():
                tensors[alias] = tensors[target]  # same object: the tie survives the round trip
        except (json.JSONDecodeError, AttributeError, KeyError) as exc:
            raise CheckpointError(f"corrupt tied-weight metadata ({exc})", path=path) from None
    return tensors


# --------------------------------------------------------------------------- RNG + trainer state


def capture_rng_state() -> dict[str, Any]:
    """Snapshot the Python, NumPy, torch CPU and (if in use) CUDA generators.

    The result holds only ints, floats, strings, lists and tensors, so it survives
    ``torch.load(..., weights_only=True)``.
    """
    version, internal, gauss_next = random.getstate()
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
        "numpy": {
            "bit_generator": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),  # uint32 -> int64
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
    }
    # Only when CUDA has been used: querying it otherwise would create a context for nothing.
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Put the generators back to a :func:`capture_rng_state` snapshot.

    Missing entries are skipped; a CUDA snapshot is ignored (with a warning) when CUDA is not
    available or the device count differs.
    """
    if "python" in state:
        py = state["python"]
        random.setstate(
            (int(py["version"]), tuple(int(v) for v in py["internal"]), py["gauss_next"])
        )
    if "numpy" in state:
        npst = state["numpy"]
        keys = npst["keys"]
        keys = keys.numpy() if isinstance(keys, torch.Tensor) else np.asarray(keys)
        np.random.set_state(
            (
                npst["bit_generator"],
                keys.astype(np.uint32),
                int(npst["pos"]),
                int(npst["has_gauss"]),
                float(npst["cached_gaussian"]),
            )
        )
    if "torch" in state:
        torch.set_rng_state(state["torch"].to("cpu", torch.uint8))
    if "cuda" in state:
        cuda_states = state["cuda"]
        if torch.cuda.is_available() and torch.cuda.device_count() == len(cuda_states):
            torch.cuda.set_rng_state_all([s.to("cpu", torch.uint8) for s in cuda_states])
        else:
            logger.warning(
                "checkpoint has CUDA RNG state for %d device(s) but %d are available; "
                "CUDA random numbers will differ from the original run",
                len(cuda_states),
                torch.cuda.device_count() if torch.cuda.is_available() else 0,
            )


def _to_weights_only(obj: Any) -> Any:
    """Replace NumPy values (which weights_only loading refuses) by Python numbers / tensors."""
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {k: _to_weights_only(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_weights_only(v) for v in obj]
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return tuple(_to_weights_only(v) for v in obj)
    return obj


def save_trainer_state(path: PathLike, state: Mapping[str, Any]) -> None:
    """Atomically save the trainer state (optimizer state_dict, RNG states, counters, ...).

    The state may contain dicts, lists, tuples, str, int, float, bool, None and tensors (NumPy
    values are converted). It is serialised with ``torch.save`` and, before anything touches the
    disk, loaded back with ``weights_only=True``: a state that could not be reloaded safely is a
    ``TypeError`` now rather than an unusable checkpoint later.
    """
    buf = io.BytesIO()
    torch.save(_to_weights_only(dict(state)), buf)
    data = buf.getvalue()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        raise TypeError(
            "trainer state holds objects that weights_only loading refuses (use only dicts, "
            f"lists, tuples, numbers, strings and tensors): {_unsupported_global(exc)}"
        ) from None
    atomic_write_bytes(path, data)


def _unsupported_global(exc: BaseException) -> str:
    """The gist of torch's long weights_only refusal: which global or opcode it tripped on."""
    text = str(exc)
    match = re.search(r"GLOBAL ([\w.]+)", text)
    if match:
        return f"it references {match.group(1)}"
    match = re.search(r"Unsupported operand (\d+)", text)
    if match:
        return f"pickle opcode {match.group(1)} is not allowed"
    return "it holds objects other than tensors and plain containers"


def load_trainer_state(path: PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a trainer state saved by :func:`save_trainer_state`, never executing pickled code.

    Raises:
        CheckpointError: missing or corrupt file, or a file holding anything other than tensors
            and plain containers (for example a pickled class instance or a crafted ``__reduce__``
            payload); such a file is refused, not loaded.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError("no such file", path=path)
    try:
        with warnings.catch_warnings():
            # torch warns about pickle protocols it did not write; the refusal below says more.
            warnings.simplefilter("ignore")
            state = torch.load(path, weights_only=True, map_location=map_location)
    except pickle.UnpicklingError as exc:
        if "weights only load failed" in str(exc).lower():
            raise CheckpointError(
                "contains disallowed (non-tensor) objects and will not be loaded "
                f"({_unsupported_global(exc)}); rnnkit never writes such files",
                path=path,
            ) from None
        raise CheckpointError(f"corrupt trainer state ({exc})", path=path) from None
    except (RuntimeError, EOFError, ValueError, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"corrupt or truncated trainer state ({first})", path=path) from None
    if not isinstance(state, dict):
        raise CheckpointError(
            f"expected a dict of trainer state, found {type(state).__name__}", path=path
        )
    return state


# --------------------------------------------------------------------------- run directory


def default_run_dir(task: str, root: PathLike = "runs") -> Path:
    """``runs/<task>-YYYYmmdd-HHMMSS`` (local time), the default home of a new run."""
    return Path(root) / f"{task}-{time.strftime('%Y%m%d-%H%M%S')}"


def _read_json(path: Path, what: str) -> Any:
    if not path.exists():
        raise CheckpointError(f"missing {what}; is this a run directory?", path=path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise CheckpointError(
            f"not valid UTF-8 (byte offset {exc.start}); expected {what} as JSON", path=path
        ) from None
    except OSError as exc:
        raise CheckpointError(f"cannot read {what} ({exc.strerror})", path=path) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CheckpointError(
            f"not valid JSON: {exc.msg} (column {exc.colno})", path=path, line=exc.lineno
        ) from None


class RunDir:
    """One training run on disk: config, weights, trainer state, metrics, vocabulary.

    ``RunDir(path)`` only names the directory; :meth:`create` makes it. Every write is atomic
    (see the module docstring), so a run directory is always loadable even if training was killed
    while saving.
    """

    CONFIG = "config.json"
    TRAINER = "trainer.pt"
    METRICS = "metrics.jsonl"
    VOCAB = "vocab.json"
    MODEL_FILES = {"last": "model.safetensors", "best": "best.safetensors"}

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)

    @classmethod
    def create(cls, path: PathLike, exist_ok: bool = False) -> RunDir:
        """Make the directory (and parents). An existing one is an error unless ``exist_ok``."""
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise CheckpointError("exists and is not a directory", path=path)
        if path.exists() and not exist_ok:
            raise CheckpointError(
                "run directory already exists; choose another directory or resume it", path=path
            )
        path.mkdir(parents=True, exist_ok=True)
        return cls(path)

    def __repr__(self) -> str:
        return f"RunDir({os.fspath(self.path)!r})"

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    # paths ---------------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / self.CONFIG

    def model_path(self, tag: str = "last") -> Path:
        """``model.safetensors`` for ``tag="last"``, ``best.safetensors`` for ``tag="best"``."""
        try:
            return self.path / self.MODEL_FILES[tag]
        except KeyError:
            raise ValueError(f"checkpoint tag must be 'last' or 'best', got {tag!r}") from None

    @property
    def trainer_path(self) -> Path:
        return self.path / self.TRAINER

    @property
    def metrics_path(self) -> Path:
        return self.path / self.METRICS

    @property
    def vocab_path(self) -> Path:
        return self.path / self.VOCAB

    # config ----------------------------------------------------------------------------------
    def save_config(self, config: Mapping[str, Any]) -> None:
        """Write ``config.json``, stamping ``rnnkit_version`` with the running version."""
        data = dict(config)
        data["rnnkit_version"] = __version__
        atomic_write_json(self.config_path, data)

    def load_config(self) -> dict[str, Any]:
        """Read ``config.json``; :class:`CheckpointError` if missing, not JSON or not an object."""
        config = _read_json(self.config_path, "config.json")
        if not isinstance(config, dict):
            raise CheckpointError(
                f"expected a JSON object, found {type(config).__name__}", path=self.config_path
            )
        return config

    # checkpoints -------------------------------------------------------------------------------
    def save_checkpoint(
        self,
        model_state: Mapping[str, torch.Tensor],
        trainer_state: Mapping[str, Any] | None = None,
        tag: str = "last",
    ) -> None:
        """Save weights (then, if given, the trainer state), each file atomically.

        Weights go first so a crash in between leaves new weights with the previous trainer state
        rather than the reverse. ``trainer.pt`` is a single file that always holds the most recent
        trainer state given; pass ``trainer_state=None`` when saving ``tag="best"``.

        Raises:
            CheckpointError: a floating-point tensor holds NaN or inf (training diverged);
                nothing is written, so the previous good checkpoint survives.
        """
        path = self.model_path(tag)
        bad = []
        for name, t in model_state.items():
            if isinstance(t, torch.Tensor) and (t.is_floating_point() or t.is_complex()):
                n_bad = int((~torch.isfinite(t.detach())).sum())
                if n_bad:
                    bad.append(f"{name!r} ({n_bad} of {t.numel()})")
        if bad:
            shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
            raise CheckpointError(
                f"refusing to save non-finite weights (NaN/inf) in {shown}; training has "
                "diverged: lower the learning rate or clip gradients",
                path=path,
            )
        save_tensors(path, model_state, metadata={"tag": tag})
        if trainer_state is not None:
            save_trainer_state(self.trainer_path, trainer_state)

    def load_model_state(
        self, tag: str = "last", device: str | torch.device = "cpu"
    ) -> dict[str, torch.Tensor]:
        """The weights saved under ``tag`` (tied weights restored as shared tensors)."""
        return load_tensors(self.model_path(tag), device=device)

    def load_trainer_state(self, map_location: str | torch.device = "cpu") -> dict[str, Any]:
        """The trainer state, loaded with ``weights_only=True``."""
        return load_trainer_state(self.trainer_path, map_location=map_location)

    # metrics -------------------------------------------------------------------------------------
    def log_metrics(self, metrics: Mapping[str, Any]) -> None:
        """Append one record to ``metrics.jsonl``."""
        append_jsonl(self.metrics_path, metrics)

    def read_metrics(self) -> list[dict[str, Any]]:
        """All records of ``metrics.jsonl`` ([] if none yet).

        A torn last line (the process died mid-append) is skipped with a warning; a malformed
        line anywhere else is a :class:`CheckpointError` naming the line.
        """
        path = self.metrics_path
        if not path.exists():
            return []
        lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
        while lines and not lines[-1].strip():
            lines.pop()
        records = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                if number == len(lines):
                    logger.warning("%s:%d: skipping torn last record (%s)", path, number, exc.msg)
                    continue
                raise CheckpointError(
                    f"not valid JSON: {exc.msg}", path=path, line=number
                ) from None
            if not isinstance(record, dict):
                raise CheckpointError(
                    f"expected a JSON object, found {type(record).__name__}",
                    path=path,
                    line=number,
                )
            records.append(record)
        return records

    # validation -----------------------------------------------------------------------------------
    def validate(self) -> None:
        """Check that the directory holds a loadable run, without loading the weights.

        Checks ``config.json`` (present, a JSON object), ``model.safetensors`` (present, header
        intact, size consistent), ``best.safetensors`` and ``vocab.json`` when present.

        Raises:
            CheckpointError: naming the first missing or corrupt file.
        """
        if not self.path.is_dir():
            if self.path.exists():
                raise CheckpointError("not a directory, expected a run directory", path=self.path)
            raise CheckpointError("run directory does not exist", path=self.path)
        self.load_config()
        model = self.model_path("last")
        if not model.exists():
            raise CheckpointError(
                "missing model weights; was the run ever checkpointed?", path=model
            )
        _check_safetensors_header(model)
        best = self.model_path("best")
        if best.exists():
            _check_safetensors_header(best)
        if self.vocab_path.exists():
            _read_json(self.vocab_path, "vocab.json")
