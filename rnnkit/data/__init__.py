"""Data: reading corpora, vocabularies, and batching for recurrent models.

``readers`` gets text off the disk (with errors that name the file and line), ``vocab`` maps
symbols to ids, ``batching`` arranges ids into the tensors the models consume. Nothing here
depends on models or training.
"""

from rnnkit.data.batching import StreamBatches, batchify, pad_sequences, sliding_windows
from rnnkit.data.readers import (
    IRISH_TUNES,
    TINY_SHAKESPEARE,
    bundled_path,
    read_text,
    split_text,
)
from rnnkit.data.vocab import SPECIALS, Vocab

__all__ = [
    "IRISH_TUNES",
    "SPECIALS",
    "TINY_SHAKESPEARE",
    "StreamBatches",
    "Vocab",
    "batchify",
    "bundled_path",
    "pad_sequences",
    "read_text",
    "sliding_windows",
    "split_text",
]
