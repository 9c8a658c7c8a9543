"""The captioner's settings: model and data config dataclasses."""

from __future__ import annotations

from dataclasses import dataclass, field

from rnnkit.config import field_meta as _opt
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

    encoder: str = field(
        default="efficientnet-lite0",
        metadata=_opt(
            "image encoder: frozen ImageNet EfficientNet-Lite0 (features cached) or a small CNN "
            "trained from scratch",
            tuple(ENCODERS),
        ),
    )
    cnn_width: int = field(default=32, metadata=_opt("small-cnn: channels of its first stage"))
    attention: str = field(
        default="additive",
        metadata=_opt(
            "soft attention over the 7×7 grid (Show, Attend and Tell) or none (Show and Tell)",
            ATTENTIONS,
        ),
    )
    embed_size: int = field(default=256, metadata=_opt("word embedding width"))
    hidden_size: int = field(default=512, metadata=_opt("LSTM state width"))
    feature_size: int = field(
        default=512, metadata=_opt("width F the image features are projected to (attention keys)")
    )
    attention_size: int = field(default=256, metadata=_opt("additive attention: hidden width"))
    gate: bool = field(
        default=True, metadata=_opt("attention: gate the context with β = σ(W h_{t−1})")
    )
    doubly_stochastic: float = field(
        default=1.0,
        metadata=_opt("attention: weight λ of the penalty mean (1 − Σ_t α_ti)² (0 = off)"),
    )
    dropout: float = field(
        default=0.5, metadata=_opt("dropout on the pooled image, the embeddings and the output")
    )
    tie_weights: bool = field(
        default=True, metadata=_opt("share the word embedding with the output layer")
    )


@dataclass
class CaptionData:
    """Images, captions and how captions become tokens."""

    images: str | None = field(default=None, metadata=_opt("training images: a tar or a folder"))
    captions: str | None = field(
        default=None, metadata=_opt("training captions: '<image>#<k><TAB><caption>' lines")
    )
    valid_images: str | None = field(default=None, metadata=_opt("validation images"))
    valid_captions: str | None = field(default=None, metadata=_opt("validation captions"))
    feature_cache: str | None = field(
        default=None,
        metadata=_opt("cache directory for image features (default: ~/.cache/rnnkit/features)"),
    )
    max_images: int | None = field(
        default=None, metadata=_opt("use only the first N training images")
    )
    max_valid_images: int | None = field(
        default=None, metadata=_opt("use only the first N validation images")
    )
    min_freq: int = field(default=5, metadata=_opt("keep words seen at least this often"))
    max_len: int = field(default=30, metadata=_opt("longest caption (tokens) kept and generated"))
    extract_batch_size: int = field(default=32, metadata=_opt("images per encoder batch"))
    eval_beam: int = field(
        default=1, metadata=_opt("beam size for the validation BLEU during training (1 = greedy)")
    )
