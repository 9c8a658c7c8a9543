"""What the tasks share: the recurrent-layer factory and its config options, sentence batching and
the in-memory training batches, the score tables."""

from __future__ import annotations

from rnnkit.tasks.common.batching import (
    BucketedBatches,
    Example,
    PlannedBatches,
    batch_and_seed,
    bucket_batches,
    collate,
    length_sorted_batches,
    read_with_validation,
    split_holdout,
    to_device,
)
from rnnkit.tasks.common.options import with_default
from rnnkit.tasks.common.recurrent import (
    LAYERS,
    CellOptions,
    RecurrentOptions,
    build_recurrent,
    recurrent_for,
)

__all__ = [
    "LAYERS",
    "BucketedBatches",
    "CellOptions",
    "Example",
    "PlannedBatches",
    "RecurrentOptions",
    "batch_and_seed",
    "bucket_batches",
    "build_recurrent",
    "collate",
    "length_sorted_batches",
    "read_with_validation",
    "recurrent_for",
    "split_holdout",
    "to_device",
    "with_default",
]
