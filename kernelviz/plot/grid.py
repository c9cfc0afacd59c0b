"""Contact sheets: one labelled tile per image."""

from __future__ import annotations

import re
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
    width = fig.get_figwidth() if fig is not None else tile_inches * cols
    heading = _wrapped(title, max(24, int(11 * width))) if title else ""  # about 11 characters per inch
    title_inches = 0.17 * (heading.count("\n") + 1) + 0.2 if title else 0.0
    grid_inches = (tile_inches + label_inches) * rows
    fig = fig or plt.figure(figsize=(width, grid_inches + title_inches))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i in range(n):
        ax = axes[i // cols, i % cols]
        ax.imshow(images[i].permute(1, 2, 0).clamp(0, 1).cpu().numpy())
        ax.text(0.5, -0.03, labels[i], transform=ax.transAxes, ha="center", va="top", fontsize=7)
    height = fig.get_figheight()
    if title:  # above the tiles, in the room its lines need
        fig.suptitle(heading, fontsize=9, y=1 - 0.08 / height, va="top")
    top = 1 - title_inches / height
    fig.subplots_adjust(top=top, bottom=label_inches / height, wspace=0.05, hspace=1.15 * label_inches / tile_inches)
    return fig


def _wrapped(title: str, width: int) -> str:
    """``title`` in lines of at most ``width`` characters: a new line after each ``; ``, and lines broken only
    after a ``: `` or ``, `` (so "seed 0" or "lr 0.05" stay whole), words wrapped only inside a longer phrase."""
    lines: list[str] = []
    for group in re.split(r"(?<=;) ", title):
        line = ""
        for phrase in re.split(r"(?<=[:,]) ", group):
            if len(phrase) > width:  # a long phrase: words wrapped, from the end of the line so far
                *full, line = textwrap.wrap(f"{line} {phrase}" if line else phrase, width) or [""]
                lines += full
            elif line and len(line) + 1 + len(phrase) > width:
                lines.append(line)
                line = phrase
            else:
                line = f"{line} {phrase}" if line else phrase
        lines.append(line)
    return "\n".join(lines)
