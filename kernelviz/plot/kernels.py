"""Pictures of the learned kernels: one symmetric color scale shared by every tile."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from ..errors import KernelvizError, out_of_range

__all__ = ["plot_kernels"]


def plot_kernels(
    weights: torch.Tensor,
    *,
    filters: Sequence[int] | None = None,
    inputs: Sequence[int] | None = None,
    title: str | None = None,
    fig: Figure | None = None,
    input_labels: Sequence[int] | None = None,
) -> Figure:
    """Draw convolution kernels with one symmetric scale shared by all tiles.

    * RGB first layers (``C_in == 3``): one color tile per filter, each pixel
      ``0.5 + w / (2 * max|w|)`` per color channel, so gray is zero weight,
      and the strongest weight of the layer reaches full saturation.
    * Deeper layers: a grid of gray-level tiles, one row per filter and one
      column per input channel, on a diverging colormap (blue negative, red
      positive) with a colorbar in weight units.
    * One input per filter (depthwise convolutions, ``C_in == 1``): the same
      tiles, the filters laid out in a square grid instead of one tall column.

    Args:
        weights: ``(C_out, C_in, kH, kW)``.
        filters: which filters to draw (default: all for RGB, the first 64 of a depthwise layer, the first 16
            otherwise).
        inputs: which input channels to draw for deeper layers (default: the first 16).
        title: figure title.
        fig: draw into this figure.
        input_labels: the number each drawn input channel is shown with (default: its index in ``weights``), e.g.
            the previous layer's channel numbers for a grouped convolution.
    """
    if weights.dim() != 4:
        raise KernelvizError(f"kernel weights must be (C_out, C_in, kH, kW), got {tuple(weights.shape)}")
    c_out, c_in = weights.shape[:2]
    rgb = c_in == 3 and inputs is None
    depthwise = c_in == 1
    default = c_out if rgb else min(c_out, 64 if depthwise else 16)
    filters = list(filters) if filters is not None else list(range(default))
    inputs = list(inputs) if inputs is not None else list(range(min(c_in, 16)))
    for what, idx, limit in (("filter", filters, c_out), ("input channel", inputs, c_in)):
        bad = [i for i in idx if not 0 <= i < limit]
        if bad:
            raise out_of_range(what, bad[0], limit, "the layer")
    peak = float(weights.abs().max()) or 1.0
    if rgb or depthwise:
        n = len(filters)
        cols = int(np.ceil(np.sqrt(n)))
        rows = int(np.ceil(n / cols))
        fig = fig or plt.figure(figsize=(1.1 * cols + (1.3 if depthwise else 0.5), 1.25 * rows + 0.8))
        axes = fig.subplots(rows, cols, squeeze=False)
        for ax in axes.ravel():
            ax.axis("off")
        mappable = None
        for i, f in enumerate(filters):
            ax = axes[i // cols, i % cols]
            if depthwise:
                tile = weights[f, 0].numpy()  # (kH, kW)
                mappable = ax.imshow(tile, cmap="RdBu_r", vmin=-peak, vmax=peak, interpolation="nearest")
            else:
                ax.imshow((0.5 + weights[f] / (2 * peak)).permute(1, 2, 0).numpy(), interpolation="nearest")
            ax.set_title(str(f), fontsize=7, pad=2)
        if mappable is not None:
            fig.colorbar(mappable, ax=axes.ravel().tolist(), fraction=0.03, pad=0.02, label="weight")
        else:
            fig.text(
                0.5,
                0.01,
                f"gray = 0; full color = |w| {peak:.3g} (shared symmetric scale)",
                ha="center",
                fontsize=8,
            )
    else:
        fig = fig or plt.figure(figsize=(0.75 * len(inputs) + 1.6, 0.75 * len(filters) + 1.0))
        axes = fig.subplots(len(filters), len(inputs), squeeze=False)
        mappable = None
        for r, f in enumerate(filters):
            for c, i in enumerate(inputs):
                ax = axes[r, c]
                mappable = ax.imshow(
                    weights[f, i].numpy(), cmap="RdBu_r", vmin=-peak, vmax=peak, interpolation="nearest"
                )
                ax.set_xticks([])
                ax.set_yticks([])
                if c == 0:
                    ax.set_ylabel(f"f{f}", fontsize=7, rotation=0, labelpad=10)
                if r == 0:
                    ax.set_title(f"in {input_labels[c] if input_labels is not None else i}", fontsize=7)
        if mappable is not None:
            fig.colorbar(mappable, ax=axes.ravel().tolist(), fraction=0.03, pad=0.02, label="weight")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
