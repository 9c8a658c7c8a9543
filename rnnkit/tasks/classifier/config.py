"""The classifier's settings: model and data config dataclasses and the option names."""

from __future__ import annotations

from dataclasses import dataclass, field

from rnnkit.config import field_meta as _opt
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

    embed_init: float = field(
        default=0.1, metadata=_opt("embeddings start as U(-a, a) with this a (0: torch's N(0, 1))")
    )
    hidden_size: int = field(default=128, metadata=_opt("recurrent state width per direction"))
    char_embed_size: int = field(default=16, metadata=_opt("character embedding width"))
    char_hidden_size: int = field(
        default=32, metadata=_opt("char CNN filters, or char RNN state width per direction")
    )
    char_kernel: int = field(default=3, metadata=_opt("char CNN window (odd)"))


@dataclass
class ClassifierConfig(TokenFeatureOptions):
    """Architecture of a sequence classifier."""

    embed_size: int = field(default=128, metadata=_opt("word (or character) embedding width"))
    bidirectional: bool = field(default=True, metadata=_opt("read the sequence both ways"))
    pooling: str = field(default="max", metadata=_opt("how steps become one vector", POOLINGS))
    attention_size: int = field(default=64, metadata=_opt("attention pooling: hidden width"))
    dropout: float = field(
        default=0.5, metadata=_opt("dropout on embeddings, between layers and before the output")
    )
    word_dropout: float = field(
        default=0.0, metadata=_opt("training: replace a token by <unk> with this probability")
    )
    char_repr: str = field(
        default="none",
        metadata=_opt("word level: add a character-level word vector", CHAR_REPRS),
    )


@dataclass
class LabelledTextData:
    """The data fields the classifier and the tagger declare alike: the files' encoding, the
    held-out validation split of ``--data``, and what the word features read (the kept length of
    long words, pretrained word vectors)."""

    encoding: str = field(default="utf-8", metadata=_opt("text encoding of the files"))
    valid_fraction: float = field(
        default=0.1, metadata=_opt("share held out for validation when no --valid file")
    )
    split_seed: int = field(default=0, metadata=_opt("seed of the held-out split"))
    max_word_len: int = field(
        default=20, metadata=_opt("char representation: first and last characters kept")
    )
    embeddings: str | None = field(
        default=None, metadata=_opt("word2vec/GloVe text file to initialise word embeddings")
    )


@dataclass
class ClassifierData(LabelledTextData):
    """Where the examples come from and how they become sequences."""

    data: str | None = field(default=None, metadata=_opt("training file"))
    valid: str | None = field(
        default=None,
        metadata=_opt("validation file (default: hold out valid_fraction of the training file)"),
    )
    format: str = field(
        default="auto",
        metadata=_opt(
            "lines ('<label> <text>'), tsv, csv, jsonl, numeric (rows of numbers + a label), "
            "or auto (from the file name)",
            ("auto", "lines", "tsv", "csv", "jsonl", "numeric"),
        ),
    )
    text_column: str = field(default="text", metadata=_opt("tsv/csv/jsonl: text column"))
    label_column: str = field(
        default="label", metadata=_opt("tsv/csv/jsonl/numeric: label column (name or index)")
    )
    skip_bad_lines: bool = field(
        default=False, metadata=_opt("report and skip malformed lines instead of stopping")
    )
    level: str = field(default="word", metadata=_opt("word or char tokens", ("word", "char")))
    lowercase: bool = field(default=False, metadata=_opt("lowercase text before tokenizing"))
    max_len: int | None = field(default=None, metadata=_opt("keep at most this many tokens"))
    max_vocab: int | None = field(default=None, metadata=_opt("keep the N most frequent tokens"))
    min_freq: int = field(default=1, metadata=_opt("drop tokens rarer than this"))
    step_size: int = field(default=1, metadata=_opt("numeric: values per time step"))
    label_names: str | None = field(
        default=None, metadata=_opt("display names, e.g. '0=negative,1=positive'")
    )
    labels: list[str] | None = field(default=None, metadata=_opt("classes", cli=False))
    chars: list[str] | None = field(default=None, metadata=_opt("character vocabulary", cli=False))
    num_features: int | None = field(default=None, metadata=_opt("numeric width", cli=False))
    feature_scale: float | None = field(default=None, metadata=_opt("numeric scale", cli=False))
