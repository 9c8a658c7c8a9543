"""The captioner's settings: model and data config dataclasses."""

from __future__ import annotations

from dataclasses import dataclass

from rnnkit.config import option
from rnnkit.image_encoders import (
    ENCODERS,
)

ATTENTIONS = ("additive", "none")
GRID = 7  # both encoders give a 7×7 grid: L = 49 positions


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------
@dataclass
class CaptionerConfig:
    """Architecture of the image captioner."""

    encoder: str = option(
        "efficientnet-lite0",
        "image encoder: frozen ImageNet EfficientNet-Lite0 (features cached) or a small CNN "
        "trained from scratch",
        tuple(ENCODERS),
    )
    cnn_width: int = option(32, "small-cnn: channels of its first stage")
    attention: str = option(
        "additive",
        "soft attention over the 7×7 grid (Show, Attend and Tell) or none (Show and Tell)",
        ATTENTIONS,
    )
    embed_size: int = option(256, "word embedding width")
    hidden_size: int = option(512, "LSTM state width")
    feature_size: int = option(512, "width F the image features are projected to (attention keys)")
    attention_size: int = option(256, "additive attention: hidden width")
    gate: bool = option(True, "attention: gate the context with β = σ(W h_{t−1})")
    doubly_stochastic: float = option(
        1.0, "attention: weight λ of the penalty mean (1 − Σ_t α_ti)² (0 = off)"
    )
    dropout: float = option(0.5, "dropout on the pooled image, the embeddings and the output")
    tie_weights: bool = option(True, "share the word embedding with the output layer")


@dataclass
class CaptionData:
    """Images, captions and how captions become tokens."""

    images: str | None = option(None, "training images: a tar or a folder")
    captions: str | None = option(None, "training captions: '<image>#<k><TAB><caption>' lines")
    valid_images: str | None = option(None, "validation images")
    valid_captions: str | None = option(None, "validation captions")
    feature_cache: str | None = option(
        None, "cache directory for image features (default: ~/.cache/rnnkit/features)"
    )
    max_images: int | None = option(None, "use only the first N training images")
    max_valid_images: int | None = option(None, "use only the first N validation images")
    min_freq: int = option(5, "keep words seen at least this often")
    max_len: int = option(30, "longest caption (tokens) kept and generated")
    extract_batch_size: int = option(32, "images per encoder batch")
    eval_beam: int = option(1, "beam size for the validation BLEU during training (1 = greedy)")
