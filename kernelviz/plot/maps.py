"""Feature maps drawn: a labelled grid of channels beside the input image."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from ..errors import KernelvizError, out_of_range
from ..explain.maps import top_channels

__all__ = ["plot_feature_maps"]


def plot_feature_maps(
    maps: torch.Tensor,
    *,
    image: torch.Tensor | None = None,
    channels: Sequence[int] | None = None,
    k: int = 16,
    scale: str = "channel",
    cmap: str = "viridis",
    title: str | None = None,
    fig: Figure | None = None,
) -> Figure:
    """A labelled grid of feature maps for one image, the image beside it.

    Args:
        maps: ``(C, H, W)`` feature maps of one image.
        image: the ``(3, H, W)`` input in ``[0, 1]``, shown left of the grid.
        channels: which channels to show, in order; default: the top ``k`` by mean activation.
        scale: ``"channel"`` (each tile stretched over its own min..max; the
            colorbar reads 0 = tile minimum, 1 = tile maximum) or ``"shared"``
            (one value range for all tiles, so tiles compare; colorbar in
            activation units).
        cmap: matplotlib colormap.
        title: figure title.
        fig: draw into this figure instead of a new one.

    Returns:
        The matplotlib ``Figure`` (not shown; save it or display it yourself).
    """
    if maps.dim() != 3:
        raise KernelvizError(f"feature maps must be (C, H, W) to plot, got {tuple(maps.shape)}")
    if scale not in ("channel", "shared"):
        raise KernelvizError(f"scale must be 'channel' or 'shared', got {scale!r}")
    chosen = list(channels) if channels is not None else top_channels(maps, k)
    bad = [c for c in chosen if not 0 <= c < maps.shape[0]]
    if bad:
        raise out_of_range("channel", bad[0], maps.shape[0], "the layer")
    n = len(chosen)
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    extra = 1 if image is not None else 0
    side = max(1.0, rows * 0.6)  # the input image is about 60% as tall as the grid
    fig = fig or plt.figure(figsize=(1.9 * (cols + side * extra) + 0.9, 2.0 * rows + 0.5))
    grid = fig.add_gridspec(rows, cols + extra + 1, width_ratios=[side] * extra + [1] * cols + [0.08])
    if image is not None:
        ax = fig.add_subplot(grid[:, 0])
        ax.imshow(image.permute(1, 2, 0).clamp(0, 1).numpy())
        ax.set_title("input", fontsize=9)
        ax.axis("off")
    selected = maps[chosen]  # (n, H, W)
    vmin, vmax = float(selected.min()), float(selected.max())
    mappable = None
    for i, c in enumerate(chosen):
        ax = fig.add_subplot(grid[i // cols, extra + i % cols])
        tile = maps[c].numpy()
        lo, hi = float(tile.min()), float(tile.max())
        if scale == "shared":
            mappable = ax.imshow(tile, cmap=cmap, vmin=vmin, vmax=vmax if vmax > vmin else vmin + 1)
        else:
            rel = (tile - lo) / (hi - lo) if hi > lo else np.zeros_like(tile)
            mappable = ax.imshow(rel, cmap=cmap, vmin=0, vmax=1)
        ax.set_title(f"ch {c}\n[{lo:.3g}, {hi:.3g}]", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    if mappable is not None:
        cbar = fig.colorbar(mappable, cax=fig.add_subplot(grid[:, -1]))
        cbar.set_label("activation" if scale == "shared" else "relative to each tile's range", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
