"""Language-model training from prepared corpora (:mod:`rnnkit.data.prepared`).

``rnnkit train lm --data DIR`` on a folder made by ``rnnkit prepare lm`` trains from its memory
maps; a raw text file over :data:`RAW_THRESHOLD_BYTES` (or any at ``--level bpe``) is prepared
into a cache folder first (with the progress bar) and the cache is reused while the file and the
options stay the same. :class:`PreparedLanguageModelTraining` is
:class:`~rnnkit.tasks.language_model.LanguageModelTraining` over the maps: the same epoch offsets,
the same windows and the same split of the streams between torchrun ranks, so a prepared folder
trains exactly as the in-memory ids of the same text would, and exact resume holds (the position
is the step count).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from rnnkit.data.prepared import MemmapStreams, PreparedCorpus, is_prepared, prepare_lm
from rnnkit.errors import DataError
from rnnkit.tasks.language_model.task import LanguageModelTraining

__all__ = ["RAW_THRESHOLD_BYTES", "PreparedLanguageModelTraining", "cache_root", "open_prepared"]

log = logging.getLogger(__name__)

#: raw text files larger than this are prepared into the cache instead of read into memory
#: (``RNNKIT_RAW_THRESHOLD_MB`` overrides it, e.g. to measure the in-memory path on a large file)
RAW_THRESHOLD_BYTES = int(float(os.environ.get("RNNKIT_RAW_THRESHOLD_MB", 64)) * 1024 * 1024)


def cache_root() -> Path:
    """Where prepared caches of raw files live: ``$RNNKIT_CACHE``, else
    ``$XDG_CACHE_HOME/rnnkit`` or ``~/.cache/rnnkit``, then ``prepared/``."""
    base = os.environ.get("RNNKIT_CACHE")
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        base = os.path.join(xdg, "rnnkit")
    return Path(base) / "prepared"


def open_prepared(data_cfg, progress: bool = True) -> PreparedCorpus | None:
    """The prepared corpus ``data_cfg`` trains on, or None for the in-memory path.

    ``data`` naming a prepared folder opens it; a raw file above the threshold (or at BPE level)
    is prepared into :func:`cache_root` (a no-op when the cache is up to date).
    """
    if data_cfg.data_dir or not data_cfg.data:
        return None
    path = Path(data_cfg.data)
    if path.is_dir():
        if not is_prepared(path):
            raise DataError(
                "is a folder but not a prepared corpus (no meta.json); make one with "
                "`rnnkit prepare lm INPUT... --out DIR`, or pass a text file",
                path=path,
            )
        corpus = PreparedCorpus(path)
        if data_cfg.valid:
            log.warning("--valid is ignored: the prepared folder has its own validation split")
        return corpus
    if not path.is_file():
        return None  # the in-memory reader gives its usual error
    if data_cfg.level != "bpe" and path.stat().st_size <= RAW_THRESHOLD_BYTES:
        return None
    options = {
        "data": str(path.resolve()),
        "valid": str(Path(data_cfg.valid).resolve()) if data_cfg.valid else None,
        "valid_fraction": data_cfg.valid_fraction,
        "encoding": data_cfg.encoding,
        "level": data_cfg.level,
        "vocab": data_cfg.max_vocab if data_cfg.level == "word" else data_cfg.vocab_size,
        "min_freq": data_cfg.min_freq,
    }
    key = hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:16]
    out = cache_root() / f"{path.name}-{data_cfg.level}-{key}"
    log.info("%s: preparing into the cache %s (reused while the file is unchanged)", path, out)
    prepare_lm(
        [path],
        out,
        level=data_cfg.level,
        vocab_size=options["vocab"],
        valid=data_cfg.valid,
        valid_fraction=data_cfg.valid_fraction,
        encoding=data_cfg.encoding,
        min_freq=data_cfg.min_freq,
        progress=progress,
    )
    return PreparedCorpus(out)


class PreparedLanguageModelTraining(LanguageModelTraining):
    """Truncated-BPTT training whose windows are read from memory-mapped ids.

    Only each window (``B × (bptt + 1)`` ids of this rank's streams) is copied out of the map;
    the validation split is evaluated in chunks converted one at a time.
    """

    def _fewest_windows(self) -> int:
        """As :class:`LanguageModelTraining` counts them, without reading the map:
        ⌊(⌊(n − bptt) / B⌋ − 1) / bptt⌋ windows of B streams (n ids)."""
        n, bptt = self.train_ids.shape[0], self.bptt
        per_stream = (n - bptt) // self.batch_size - 1 if n > bptt else 0
        return max(0, per_stream) // bptt

    def _streams_for(self, epoch: int) -> MemmapStreams:
        if self._epoch != epoch or self._streams is None:
            self._streams = MemmapStreams(
                self.train_ids[self._offset(epoch) :],
                self.batch_size,
                self.bptt,
                drop_last=True,
                rows=self._rows,
            )
            self._epoch = epoch
        return self._streams

    def batch(self, epoch: int, index: int):
        return self._streams_for(epoch).window(index)  # this rank's rows only
