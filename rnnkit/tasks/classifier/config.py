"""The classifier's settings: model and data config dataclasses and the option names."""

from __future__ import annotations

from dataclasses import dataclass

from rnnkit.config import option
from rnnkit.data.vocab import PAD, UNK
from rnnkit.tasks.common.recurrent import RecurrentOptions

POOLINGS = ("last", "mean", "max", "attention")
CHAR_REPRS = ("none", "cnn", "rnn")
CHAR_SPECIALS = (PAD, UNK)


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------
@dataclass
class TokenFeatureOptions(RecurrentOptions):
    """The fields the classifier and the tagger declare alike for their word (+ character)
    features, read by :func:`~rnnkit.tasks.classifier.encoders.token_features`, and their
    recurrent layer (the defaults are the classifier's; the tagger re-defaults some with
    :func:`~rnnkit.tasks.common.options.with_default`)."""

    embed_init: float = option(0.1, "embeddings start as U(-a, a) with this a (0: torch's N(0, 1))")
    hidden_size: int = option(128, "recurrent state width per direction")
    char_embed_size: int = option(16, "character embedding width")
    char_hidden_size: int = option(32, "char CNN filters, or char RNN state width per direction")
    char_kernel: int = option(3, "char CNN window (odd)")


@dataclass
class ClassifierConfig(TokenFeatureOptions):
    """Architecture of a sequence classifier."""

    embed_size: int = option(128, "word (or character) embedding width")
    bidirectional: bool = option(True, "read the sequence both ways")
    pooling: str = option("max", "how steps become one vector", POOLINGS)
    attention_size: int = option(64, "attention pooling: hidden width")
    dropout: float = option(0.5, "dropout on embeddings, between layers and before the output")
    word_dropout: float = option(0.0, "training: replace a token by <unk> with this probability")
    char_repr: str = option("none", "word level: add a character-level word vector", CHAR_REPRS)


@dataclass
class LabelledTextData:
    """The data fields the classifier and the tagger declare alike: the training and validation
    files and their encoding, the held-out validation split of ``--data``, and what the word
    features read (the kept length of long words, pretrained word vectors)."""

    data: str | None = option(None, "training file (see --format)")
    valid: str | None = option(
        None, "validation file (default: hold out valid_fraction of the training data)"
    )
    encoding: str = option("utf-8", "text encoding of the files")
    valid_fraction: float = option(0.1, "share held out for validation when no --valid file")
    split_seed: int = option(0, "seed of the held-out split")
    max_word_len: int = option(20, "char representation: first and last characters kept")
    embeddings: str | None = option(None, "word2vec/GloVe text file to initialise word embeddings")


@dataclass
class ClassifierData(LabelledTextData):
    """Where the examples come from and how they become sequences."""

    format: str = option(
        "auto",
        "lines ('<label> <text>'), tsv, csv, jsonl, numeric (rows of numbers + a label), "
        "or auto (from the file name)",
        ("auto", "lines", "tsv", "csv", "jsonl", "numeric"),
    )
    text_column: str = option("text", "tsv/csv/jsonl: text column")
    label_column: str = option("label", "tsv/csv/jsonl/numeric: label column (name or index)")
    skip_bad_lines: bool = option(False, "report and skip malformed lines instead of stopping")
    level: str = option("word", "word or char tokens", ("word", "char"))
    lowercase: bool = option(False, "lowercase text before tokenizing")
    max_len: int | None = option(None, "keep at most this many tokens")
    max_vocab: int | None = option(None, "keep the N most frequent tokens")
    min_freq: int = option(1, "drop tokens rarer than this")
    step_size: int = option(1, "numeric: values per time step")
    label_names: str | None = option(None, "display names, e.g. '0=negative,1=positive'")
    labels: list[str] | None = option(None, "classes", cli=False)
    chars: list[str] | None = option(None, "character vocabulary", cli=False)
    num_features: int | None = option(None, "numeric width", cli=False)
    feature_scale: float | None = option(None, "numeric scale", cli=False)
