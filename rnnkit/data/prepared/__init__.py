"""Prepared corpora: text of any size tokenized once into memory-mappable id files.

``prepare`` writes a folder (``train.bin``, ``valid.bin``, the tokenizer, ``meta.json``) from
files, folders or globs, plain or gzipped, streaming them in chunks; ``streams`` opens it with
``np.memmap`` and serves truncated-BPTT windows that equal the in-memory path's; ``tokenizer``
holds the one interface char, word and byte-level BPE tokenizers share; ``sources`` turns inputs
into a stream of decoded text. Nothing here depends on models or training.
"""

from rnnkit.data.prepared.prepare import LEVELS, META, prepare_lm, read_meta, verify
from rnnkit.data.prepared.sources import Source, expand_inputs, iter_text
from rnnkit.data.prepared.streams import MemmapStreams, PreparedCorpus, is_prepared
from rnnkit.data.prepared.tokenizer import (
    BPETokenizer,
    Tokenizer,
    VocabTokenizer,
    as_tokenizer,
    load_tokenizer,
    load_vocabulary,
    tokenizer_from_dict,
    train_bpe,
    vocab_from_counts,
)

__all__ = [
    "BPETokenizer",
    "LEVELS",
    "META",
    "MemmapStreams",
    "PreparedCorpus",
    "Source",
    "Tokenizer",
    "VocabTokenizer",
    "expand_inputs",
    "is_prepared",
    "iter_text",
    "as_tokenizer",
    "load_tokenizer",
    "load_vocabulary",
    "prepare_lm",
    "read_meta",
    "tokenizer_from_dict",
    "train_bpe",
    "verify",
    "vocab_from_counts",
]
