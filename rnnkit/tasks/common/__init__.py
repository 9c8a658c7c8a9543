"""What the tasks share: the recurrent-layer factory and sentence batching."""

from __future__ import annotations

from rnnkit.tasks.common.batching import (
    BucketedBatches,
    Example,
    bucket_batches,
    collate,
    length_sorted_batches,
    split_holdout,
    to_device,
)
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
    "RecurrentOptions",
    "bucket_batches",
    "build_recurrent",
    "collate",
    "length_sorted_batches",
    "recurrent_for",
    "split_holdout",
    "to_device",
]
