"""The seq2seq settings: model and data config dataclasses."""

from __future__ import annotations

from dataclasses import dataclass

from rnnkit.attention import ATTENTION_KINDS
from rnnkit.config import option
from rnnkit.tasks.common.recurrent import LAYERS

#: every cell of ``LAYERS``: the encoder is its layer, the decoder one step cell of its family
CELLS = tuple(LAYERS)
#: upper edges of the source-length buckets (in tokens) used by :func:`bleu_by_length`
LENGTH_BUCKETS = (8, 11, 14, 18)


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------
@dataclass
class Seq2SeqConfig:
    """Architecture of an encoder–decoder."""

    cell: str = option("gru", "recurrent cell of encoder and decoder", CELLS)
    embed_size: int = option(256, "word embedding width (both sides)")
    hidden_size: int = option(256, "encoder state width per direction")
    num_layers: int = option(1, "stacked encoder layers")
    bidirectional: bool = option(True, "read the source both ways")
    decoder_size: int = option(512, "decoder state width")
    attention: str = option(
        "additive", "additive (Bahdanau), dot / general (Luong), none", ATTENTION_KINDS
    )
    attention_size: int = option(256, "additive attention: hidden width")
    output_size: int = option(256, "width of the tanh layer before the softmax")
    tie_embeddings: bool = option(True, "share the softmax weights with the target embedding")
    dropout: float = option(0.3, "dropout on embeddings and before output")
    teacher_forcing: float = option(1.0, "training: probability of feeding the reference word")
    label_smoothing: float = option(0.1, "training: label smoothing ε")


@dataclass
class Seq2SeqData:
    """Where the sentence pairs come from and how they become tokens."""

    src: str | None = option(None, "training source file (or a source<TAB>target TSV)")
    tgt: str | None = option(None, "training target file, aligned by line")
    valid_src: str | None = option(
        None, "validation source file or TSV (default: hold out valid_fraction)"
    )
    valid_tgt: str | None = option(None, "validation target file")
    encoding: str = option("utf-8", "text encoding of the files")
    lowercase: bool = option(True, "lower-case both sides")
    min_freq: int = option(2, "words rarer than this become <unk>")
    max_vocab: int | None = option(None, "keep the N most frequent words")
    max_len: int = option(80, "training: drop pairs with a side longer than this")
    valid_fraction: float = option(0.05, "share held out for validation when no --valid-src")
    split_seed: int = option(0, "seed of the held-out split")
    bleu: bool = option(True, "compute greedy validation BLEU at every evaluation")
    source_vocab: list[str] | None = option(None, "source words", cli=False)
    target_vocab: list[str] | None = option(None, "target words", cli=False)
