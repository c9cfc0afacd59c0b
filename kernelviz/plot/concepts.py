"""Concepts drawn: each concept's synthesized picture beside the patches that carry it, one row per concept."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from matplotlib.figure import Figure

from .grid import plot_grid

__all__ = ["plot_concepts"]


def _tile(image: torch.Tensor, side: int) -> torch.Tensor:
    """``image`` ``(3, h, w)`` resized to ``(3, side, side)`` (a patch enlarged without smoothing)."""
    return torch.nn.functional.interpolate(image[None].float(), size=(side, side), mode="nearest")[0]


def plot_concepts(
    pictures: torch.Tensor,
    patches: Sequence[Sequence[torch.Tensor]],
    labels: Sequence[str],
    patch_labels: Sequence[Sequence[str]],
    *,
    title: str | None = None,
    per_row: int = 5,
) -> Figure:
    """One row per concept: its synthesized picture, then up to ``per_row`` of its strongest patches.

    Args:
        pictures: ``(K, 3, H, W)`` in ``[0, 1]``, one per concept.
        patches: per concept, the patch crops ``(3, h, w)``, strongest first.
        labels: per concept, the picture's label (index, share, importance).
        patch_labels: per concept, one label per patch (file, code).
        title: the sheet's title (model, layer, images, settings).
    """
    side = int(pictures.shape[-1])
    tiles, names = [], []
    blank = torch.ones(3, side, side)
    for picture, crops, label, crop_labels in zip(pictures, patches, labels, patch_labels, strict=True):
        tiles.append(picture)
        names.append(label)
        for j in range(per_row):
            tiles.append(_tile(crops[j], side) if j < len(crops) else blank)
            names.append(crop_labels[j] if j < len(crops) else "")
    return plot_grid(tiles, names, title=title, cols=per_row + 1, tile_inches=1.6)
