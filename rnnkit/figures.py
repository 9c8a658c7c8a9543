"""The house style of rnnkit's heat-map PNGs (attention weights, confusion matrices): a labelled
colour bar, a tight layout, 110 dpi. matplotlib is imported only when a figure is written."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["save_heatmap"]


def save_heatmap(fig, image, path: str | os.PathLike[str], label: str) -> Path:
    """Give ``image`` (an ``imshow`` result on ``fig``) a colour bar labelled ``label``, lay the
    figure out, write it as a 110-dpi PNG at ``path`` and close it; returns the path."""
    import matplotlib.pyplot as plt

    fig.colorbar(image, ax=image.axes, fraction=0.046, pad=0.04, label=label)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, format="png", dpi=110)
    plt.close(fig)
    return path
