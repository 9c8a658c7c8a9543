"""The language model's settings: model and data config dataclasses, tokenisation."""

from __future__ import annotations

from dataclasses import dataclass

from rnnkit.config import option
from rnnkit.data.vocab import EOS
from rnnkit.tasks.common.recurrent import RecurrentOptions


@dataclass
class LanguageModelConfig(RecurrentOptions):
    """Architecture of a recurrent language model."""

    model: str = option(
        "rnn",
        "rnn (recurrent) or window (feed-forward over the previous N tokens)",
        ("rnn", "window"),
    )
    window: int = option(8, "window model: how many previous tokens it sees")
    embed_size: int = option(64, "embedding width")
    hidden_size: int = option(384, "recurrent state width")
    dropout: float = option(0.1, "dropout on embeddings, between layers and before the decoder")
    dropout_mode: str = option(
        "standard", "standard or variational (one mask per sequence)", ("standard", "variational")
    )
    embed_dropout: float = option(0.0, "drop whole embedding rows (words) with this probability")
    weight_drop: float = option(0.0, "DropConnect on hidden-to-hidden weights")
    zoneout: float = option(0.0, "zoneout probability")
    peephole: bool = option(False, "peephole connections (LSTM)")
    reset_after: bool = option(True, "GRU form: torch's (true) or Cho 2014 (false)")
    tie_weights: bool = option(
        False, "share the embedding and decoder matrix (needs embed_size == hidden_size)"
    )
    norm_stabilizer: float = option(
        0.0, "β of the norm-stabiliser penalty β·mean_t (‖h_t‖ − ‖h_{t−1}‖)² (0 = off)"
    )
    init_range: float | None = option(None, "if set, every weight ~ U(-r, r) (Zaremba et al.)")
    time_reduction: str = option(
        "mean", "loss over time steps: mean, or sum (Zaremba et al.)", ("mean", "sum")
    )
    softmax: str = option(
        "full",
        "output layer: full softmax, or adaptive (Grave et al. 2017; word and BPE models)",
        ("full", "adaptive"),
    )
    cutoffs: str = option(
        "2000,10000", "adaptive softmax: ids where the head ends and each tail cluster ends"
    )


@dataclass
class LanguageModelData:
    """Where the text comes from and how it is cut into training windows."""

    data: str | None = option(
        None,
        "training text file, or a folder made by `rnnkit prepare lm` (default: bundled "
        "Tiny Shakespeare); a text file over 64 MB, or any at --level bpe, is prepared into "
        "a cache folder first",
    )
    data_dir: str | None = option(
        None, "directory with *train.txt and *valid.txt (e.g. PTB's ptb.train.txt)"
    )
    valid: str | None = option(
        None, "validation text file (default: the last valid_fraction of data)"
    )
    valid_fraction: float = option(0.1, "share of data held out when no --valid file")
    encoding: str = option("utf-8", "text encoding of the files")
    level: str = option(
        "char", "char, word or bpe (byte-level subwords) tokens", ("char", "word", "bpe")
    )
    bptt: int = option(64, "truncated-BPTT window (time steps per update)")
    max_vocab: int | None = option(None, "word level: keep the most frequent N words")
    min_freq: int = option(1, "word level: drop words rarer than this")
    vocab_size: int = option(8000, "bpe level: vocabulary to train")


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
