"""Dataset examples drawn: the synthesized image beside the natural crops that excite the filter most."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from matplotlib.figure import Figure

from ..units.examples import Example
from .grid import plot_grid

__all__ = ["plot_examples"]


def plot_examples(
    examples: Sequence[Example],
    synthesized: torch.Tensor | None = None,
    *,
    synthesized_value: float | None = None,
    title: str | None = None,
) -> Figure:
    """The synthesized image beside the top natural crops, each labelled with its activation."""
    tiles, labels = [], []
    if synthesized is not None:
        tiles.append(synthesized)
        labels.append("synthesized" + (f"\nmax {synthesized_value:.3g}" if synthesized_value is not None else ""))
    side = synthesized.shape[-1] if synthesized is not None else 96
    for ex in examples:
        crop = torch.nn.functional.interpolate(ex.crop[None], size=(side, side), mode="nearest")[0]
        tiles.append(crop)
        labels.append(f"{(ex.caption or ex.path.name)[:18]}\nmax {ex.value:.3g}")
    return plot_grid(tiles, labels, title=title, cols=min(len(tiles), 5), tile_inches=1.8)
