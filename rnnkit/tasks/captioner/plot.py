"""The attention overlay: where the captioner looked for each word, drawn over the image."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch import Tensor

from rnnkit.tasks.captioner.config import GRID


def plot_attention_overlay(
    pixels: np.ndarray,
    words: Sequence[str],
    attention: Tensor | np.ndarray,
    path: str | os.PathLike[str],
) -> Path:
    """The image, then one panel per generated word (and <eos>) with that step's 7×7 attention
    map upsampled (bilinear) over it: bright = looked at."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    att = np.asarray(attention.detach().cpu() if isinstance(attention, Tensor) else attention)
    labels = list(words) + ["<eos>"]
    att = att[: len(labels)]
    labels = labels[: len(att)]
    H, W = pixels.shape[:2]
    panels = 1 + len(labels)
    cols = min(5, panels)
    rows = math.ceil(panels / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.5 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    axes.flat[0].imshow(pixels)
    axes.flat[0].set_title("image", fontsize=9)
    for k, (word, a) in enumerate(zip(labels, att), 1):
        m = a.reshape(GRID, GRID).astype(np.float32)
        m = m / max(float(m.max()), 1e-12)
        up = np.asarray(Image.fromarray(m).resize((W, H), Image.BILINEAR))
        ax = axes.flat[k]
        ax.imshow(pixels)
        ax.imshow(up, cmap="gray", alpha=0.6, vmin=0.0, vmax=1.0)
        ax.set_title(word, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)
    return path
