"""The seq2seq settings: model and data config dataclasses."""

from __future__ import annotations

from dataclasses import dataclass, field

from rnnkit.attention import ATTENTION_KINDS
from rnnkit.config import field_meta as _opt

CELLS = ("gru", "lstm")
#: upper edges of the source-length buckets (in tokens) used by :func:`bleu_by_length`
LENGTH_BUCKETS = (8, 11, 14, 18)


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------
@dataclass
class Seq2SeqConfig:
    """Architecture of an encoder–decoder."""

    cell: str = field(default="gru", metadata=_opt("recurrent cell of encoder and decoder", CELLS))
    embed_size: int = field(default=256, metadata=_opt("word embedding width (both sides)"))
    hidden_size: int = field(default=256, metadata=_opt("encoder state width per direction"))
    num_layers: int = field(default=1, metadata=_opt("stacked encoder layers"))
    bidirectional: bool = field(default=True, metadata=_opt("read the source both ways"))
    decoder_size: int = field(default=512, metadata=_opt("decoder state width"))
    attention: str = field(
        default="additive",
        metadata=_opt("additive (Bahdanau), dot / general (Luong), none", ATTENTION_KINDS),
    )
    attention_size: int = field(default=256, metadata=_opt("additive attention: hidden width"))
    output_size: int = field(
        default=256, metadata=_opt("width of the tanh layer before the softmax")
    )
    tie_embeddings: bool = field(
        default=True, metadata=_opt("share the softmax weights with the target embedding")
    )
    dropout: float = field(default=0.3, metadata=_opt("dropout on embeddings and before output"))
    teacher_forcing: float = field(
        default=1.0, metadata=_opt("training: probability of feeding the reference word")
    )
    label_smoothing: float = field(default=0.1, metadata=_opt("training: label smoothing ε"))


@dataclass
class Seq2SeqData:
    """Where the sentence pairs come from and how they become tokens."""

    src: str | None = field(
        default=None, metadata=_opt("training source file (or a source<TAB>target TSV)")
    )
    tgt: str | None = field(default=None, metadata=_opt("training target file, aligned by line"))
    valid_src: str | None = field(
        default=None,
        metadata=_opt("validation source file or TSV (default: hold out valid_fraction)"),
    )
    valid_tgt: str | None = field(default=None, metadata=_opt("validation target file"))
    encoding: str = field(default="utf-8", metadata=_opt("text encoding of the files"))
    lowercase: bool = field(default=True, metadata=_opt("lower-case both sides"))
    min_freq: int = field(default=2, metadata=_opt("words rarer than this become <unk>"))
    max_vocab: int | None = field(default=None, metadata=_opt("keep the N most frequent words"))
    max_len: int = field(
        default=80, metadata=_opt("training: drop pairs with a side longer than this")
    )
    valid_fraction: float = field(
        default=0.05, metadata=_opt("share held out for validation when no --valid-src")
    )
    split_seed: int = field(default=0, metadata=_opt("seed of the held-out split"))
    bleu: bool = field(
        default=True, metadata=_opt("compute greedy validation BLEU at every evaluation")
    )
    source_vocab: list[str] | None = field(default=None, metadata=_opt("source words", cli=False))
    target_vocab: list[str] | None = field(default=None, metadata=_opt("target words", cli=False))
