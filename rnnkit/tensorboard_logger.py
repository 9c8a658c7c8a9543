"""TensorBoard view of a training run: scalars per logged step, metrics and a sample per evaluation.

``metrics.jsonl`` stays the source of truth; this module only mirrors its records into a
TensorBoard event file (``RUN/tensorboard/``) so ``tensorboard --logdir runs`` can watch and
compare runs. The mapping from a record to tags is fixed and documented:

* a ``kind="train"`` record: ``loss`` → ``train/loss`` (nats per token) and ``train/bits``
  (loss / ln 2); ``lr`` → ``train/lr``; ``grad_norm`` → ``train/grad_norm`` (before clipping);
  ``tokens_per_s`` → ``train/tokens_per_s``;
* a ``kind="eval"`` record: every number ``val_X`` → ``valid/X`` (``valid/loss``,
  ``valid/bits``, ``valid/accuracy`` ...);
* a ``kind="sample"`` record (``step``, ``text``: what the model wrote at an evaluation) →
  the text tag ``sample`` at that step.

Because every tag is derived from a record, :func:`replay_metrics` rebuilds the event file of
a finished (or crashed) run from ``metrics.jsonl`` alone. On resume the writer purges events
after the resumed step (``purge_step``), as the trainer truncates ``metrics.jsonl`` to its last
checkpoint, so the two never disagree.

The event file is a view, not a checkpoint: it is appended to as TensorBoard expects and is not
written atomically. ``tensorboard`` is an optional dependency (``pip install 'rnnkit[tensorboard]'``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["TensorBoardLogger", "replay_metrics", "TENSORBOARD_DIR"]

log = logging.getLogger(__name__)

TENSORBOARD_DIR = "tensorboard"  # the event files' folder inside a run directory
_TRAIN_KEYS = ("lr", "grad_norm", "tokens_per_s")
_LN2 = math.log(2.0)


def _summary_writer():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:  # torch raises this when the tensorboard package is missing
        raise ImportError(
            "--log tensorboard needs the tensorboard package: pip install 'rnnkit[tensorboard]'"
        ) from exc
    return SummaryWriter


def _number(value: Any) -> float | None:
    """``value`` as a finite-or-not float, or None when it is not a number (bools excluded)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


class TensorBoardLogger:
    """Mirror ``metrics.jsonl`` records into a TensorBoard event file.

    Args:
        log_dir: where the event file goes (conventionally ``RUN/tensorboard``).
        bits: also write ``train/bits`` = loss / ln 2 (right for cross-entropy losses in nats;
            pass False for a regression loss such as the forecaster's MSE).
        purge_step: on resume, the step training continues from: events logged after it by the
            interrupted run are hidden, like the records the trainer drops from metrics.jsonl.
        flush_secs: how often the writer flushes to disk.

    Use :meth:`log_train` for every ``kind="train"`` record, :meth:`log_eval` for every
    ``kind="eval"`` record (with an optional text sample), :meth:`close` at the end; or the
    logger as a context manager.
    """

    def __init__(
        self,
        log_dir: str | os.PathLike[str],
        bits: bool = True,
        purge_step: int | None = None,
        flush_secs: int = 30,
    ) -> None:
        SummaryWriter = _summary_writer()
        self.log_dir = Path(log_dir)
        self.bits = bits
        self._writer = SummaryWriter(
            log_dir=os.fspath(self.log_dir), purge_step=purge_step, flush_secs=flush_secs
        )

    # -- records -----------------------------------------------------------------------------
    def log_train(self, record: Mapping[str, Any], walltime: float | None = None) -> None:
        """One ``kind="train"`` record: loss, bits, learning rate, gradient norm, tokens/s."""
        step = int(record["step"])
        loss = _number(record.get("loss"))
        if loss is not None:
            self._writer.add_scalar("train/loss", loss, step, walltime=walltime)
            if self.bits:
                self._writer.add_scalar("train/bits", loss / _LN2, step, walltime=walltime)
        for key in _TRAIN_KEYS:
            value = _number(record.get(key))
            if value is not None:
                self._writer.add_scalar(f"train/{key}", value, step, walltime=walltime)

    def log_eval(
        self, record: Mapping[str, Any], sample: str | None = None, walltime: float | None = None
    ) -> None:
        """One ``kind="eval"`` record: every ``val_X`` number as ``valid/X``, and ``sample``."""
        step = int(record["step"])
        for key, value in record.items():
            number = _number(value)
            if key.startswith("val_") and number is not None:
                self._writer.add_scalar(f"valid/{key[4:]}", number, step, walltime=walltime)
        if sample:
            self.log_sample(sample, step, walltime=walltime)

    def log_sample(self, text: str, step: int, walltime: float | None = None) -> None:
        """A text sample at ``step`` (TensorBoard's text tab renders Markdown: keep it verbatim)."""
        # four-space indentation makes Markdown show the sample as preformatted text
        block = "\n".join("    " + line for line in text.split("\n"))
        self._writer.add_text("sample", block, step, walltime=walltime)

    def log_record(self, record: Mapping[str, Any], walltime: float | None = None) -> None:
        """Dispatch one metrics.jsonl record by its ``kind`` (other kinds are ignored)."""
        kind = record.get("kind")
        if kind == "train":
            self.log_train(record, walltime=walltime)
        elif kind == "eval":
            self.log_eval(record, walltime=walltime)
        elif kind == "sample" and isinstance(record.get("text"), str):
            self.log_sample(record["text"], int(record["step"]), walltime=walltime)

    def log_config(self, config: Mapping[str, Any]) -> None:
        """The run's resolved configuration as text (tag ``config``), shown once at step 0."""
        text = json.dumps(dict(config), indent=2, ensure_ascii=False, default=str)
        self._writer.add_text("config", "\n".join("    " + line for line in text.split("\n")), 0)

    # -- lifetime -----------------------------------------------------------------------------
    def flush(self) -> None:
        """Write pending events to disk now."""
        self._writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        self._writer.close()

    def __enter__(self) -> TensorBoardLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def replay_metrics(
    run_dir: str | os.PathLike[str],
    log_dir: str | os.PathLike[str] | None = None,
    bits: bool | None = None,
) -> Path:
    """Rebuild a run's TensorBoard event file from its ``metrics.jsonl``; returns the folder.

    Args:
        run_dir: a run directory (``config.json`` + ``metrics.jsonl``).
        log_dir: where to write (default ``RUN/tensorboard``; an existing folder there is
            replaced, so replaying twice gives one copy of each event, not two).
        bits: write ``train/bits``; by default whenever the run is not a forecaster (whose loss
            is a mean squared error, not a cross-entropy).

    Wall-clock times are reconstructed from each record's ``time`` (seconds since the run
    started), counted back from the file's modification time.
    """
    from rnnkit.checkpoint import RunDir

    run = RunDir(run_dir)
    records = run.read_metrics()
    if bits is None:
        task = run.load_config().get("task") if run.config_path.exists() else None
        bits = task != "forecast"
    target = Path(log_dir) if log_dir is not None else run.path / TENSORBOARD_DIR
    if target.exists():
        shutil.rmtree(target)
    end = run.metrics_path.stat().st_mtime if run.metrics_path.exists() else time.time()
    last = max((float(r.get("time", 0.0)) for r in records), default=0.0)
    with TensorBoardLogger(target, bits=bits) as logger:
        for record in _ordered(records):
            t = _number(record.get("time"))
            logger.log_record(record, walltime=None if t is None else end - last + t)
    log.info("wrote %d records of %s to %s", len(records), run.metrics_path, target)
    return target


def _ordered(records: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Records with a step, in file order (the trainer writes them in step order)."""
    return [r for r in records if isinstance(r.get("step"), int)]
