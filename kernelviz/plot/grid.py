"""Contact sheets: one labelled tile per image."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from ..errors import KernelvizError

__all__ = ["plot_grid"]


def plot_grid(
    images: torch.Tensor | Sequence[torch.Tensor],
    labels: Sequence[str],
    *,
    title: str | None = None,
    cols: int | None = None,
    tile_inches: float = 1.5,
    fig: Figure | None = None,
) -> Figure:
    """A contact sheet: one tile per image, its label underneath.

    Args:
        images: ``(N, 3, H, W)`` in ``[0, 1]`` (or a list of ``(3, H, W)``).
        labels: one label per tile (e.g. the filter index and its activation).
        title: figure title (model, layer, settings).
        cols: tiles per row; default: about square.
    """
    n = len(images)
    if n != len(labels):
        raise KernelvizError(f"{n} images but {len(labels)} labels")
    if n == 0:
        raise KernelvizError("nothing to draw: no images")
    cols = cols or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    lines = max(label.count("\n") + 1 for label in labels)
    label_inches = 0.15 * lines + 0.05
    fig = fig or plt.figure(figsize=(tile_inches * cols, (tile_inches + label_inches) * rows + (0.5 if title else 0)))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i in range(n):
        ax = axes[i // cols, i % cols]
        ax.imshow(images[i].permute(1, 2, 0).clamp(0, 1).cpu().numpy())
        ax.text(0.5, -0.03, labels[i], transform=ax.transAxes, ha="center", va="top", fontsize=7)
    if title:  # wrapped to the sheet's width (about 11 characters per inch at this size)
        fig.suptitle(textwrap.fill(title, max(40, int(11 * fig.get_figwidth()))), fontsize=9)
    fig.subplots_adjust(wspace=0.05, hspace=1.15 * label_inches / tile_inches)
    return fig
