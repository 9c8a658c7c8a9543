"""The language model's settings: model and data config dataclasses, tokenisation."""

from __future__ import annotations

from dataclasses import dataclass, field

from rnnkit.config import field_meta as _opt
from rnnkit.data.vocab import EOS
from rnnkit.tasks.common.recurrent import RecurrentOptions


@dataclass
class LanguageModelConfig(RecurrentOptions):
    """Architecture of a recurrent language model."""

    model: str = field(
        default="rnn",
        metadata=_opt(
            "rnn (recurrent) or window (feed-forward over the previous N tokens)", ("rnn", "window")
        ),
    )
    window: int = field(default=8, metadata=_opt("window model: how many previous tokens it sees"))
    embed_size: int = field(default=64, metadata=_opt("embedding width"))
    hidden_size: int = field(default=384, metadata=_opt("recurrent state width"))
    dropout: float = field(
        default=0.1, metadata=_opt("dropout on embeddings, between layers and before the decoder")
    )
    dropout_mode: str = field(
        default="standard",
        metadata=_opt(
            "standard or variational (one mask per sequence)", ("standard", "variational")
        ),
    )
    embed_dropout: float = field(
        default=0.0, metadata=_opt("drop whole embedding rows (words) with this probability")
    )
    weight_drop: float = field(
        default=0.0, metadata=_opt("DropConnect on hidden-to-hidden weights")
    )
    zoneout: float = field(default=0.0, metadata=_opt("zoneout probability"))
    peephole: bool = field(default=False, metadata=_opt("peephole connections (LSTM)"))
    reset_after: bool = field(
        default=True, metadata=_opt("GRU form: torch's (true) or Cho 2014 (false)")
    )
    tie_weights: bool = field(
        default=False,
        metadata=_opt("share the embedding and decoder matrix (needs embed_size == hidden_size)"),
    )
    norm_stabilizer: float = field(
        default=0.0,
        metadata=_opt("β of the norm-stabiliser penalty β·mean_t (‖h_t‖ − ‖h_{t−1}‖)² (0 = off)"),
    )
    init_range: float | None = field(
        default=None, metadata=_opt("if set, every weight ~ U(-r, r) (Zaremba et al.)")
    )
    time_reduction: str = field(
        default="mean",
        metadata=_opt("loss over time steps: mean, or sum (Zaremba et al.)", ("mean", "sum")),
    )
    softmax: str = field(
        default="full",
        metadata=_opt(
            "output layer: full softmax, or adaptive (Grave et al. 2017; word and BPE models)",
            ("full", "adaptive"),
        ),
    )
    cutoffs: str = field(
        default="2000,10000",
        metadata=_opt("adaptive softmax: ids where the head ends and each tail cluster ends"),
    )


@dataclass
class LanguageModelData:
    """Where the text comes from and how it is cut into training windows."""

    data: str | None = field(
        default=None,
        metadata=_opt(
            "training text file, or a folder made by `rnnkit prepare lm` (default: bundled "
            "Tiny Shakespeare); a text file over 64 MB, or any at --level bpe, is prepared into "
            "a cache folder first"
        ),
    )
    data_dir: str | None = field(
        default=None,
        metadata=_opt("directory with *train.txt and *valid.txt (e.g. PTB's ptb.train.txt)"),
    )
    valid: str | None = field(
        default=None,
        metadata=_opt("validation text file (default: the last valid_fraction of data)"),
    )
    valid_fraction: float = field(
        default=0.1, metadata=_opt("share of data held out when no --valid file")
    )
    encoding: str = field(default="utf-8", metadata=_opt("text encoding of the files"))
    level: str = field(
        default="char",
        metadata=_opt("char, word or bpe (byte-level subwords) tokens", ("char", "word", "bpe")),
    )
    bptt: int = field(default=64, metadata=_opt("truncated-BPTT window (time steps per update)"))
    max_vocab: int | None = field(
        default=None, metadata=_opt("word level: keep the most frequent N words")
    )
    min_freq: int = field(default=1, metadata=_opt("word level: drop words rarer than this"))
    vocab_size: int = field(default=8000, metadata=_opt("bpe level: vocabulary to train"))


def tokenize_text(text: str, level: str) -> list[str]:
    """Characters, or words with ``<eos>`` at every line break (the PTB convention)."""
    if level == "char":
        return list(text)
    out: list[str] = []
    for i, line in enumerate(text.split("\n")):
        if i:
            out.append(EOS)
        out.extend(line.split())
    return out
