"""Drawing: contact sheets, feature-map grids, kernel pictures (figures checked by their contents)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from kernelviz.errors import KernelvizError
from kernelviz.explain.kernels import kernel_weights
from kernelviz.explain.maps import top_channels
from kernelviz.plot.grid import plot_grid
from kernelviz.plot.kernels import plot_kernels
from kernelviz.plot.maps import plot_feature_maps


def test_top_channels_and_plot():
    maps = torch.zeros(5, 4, 4)
    for c, level in enumerate([0.1, 3.0, 0.5, 2.0, -1.0]):
        maps[c] = level
    assert top_channels(maps, 3) == [1, 3, 2]
    fig = plot_feature_maps(maps, image=torch.rand(3, 8, 8), k=3, scale="shared", title="t")
    assert isinstance(fig, Figure)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title().startswith("ch")]
    assert titles == ["ch 1\n[3, 3]", "ch 3\n[2, 2]", "ch 2\n[0.5, 0.5]"]
    with pytest.raises(KernelvizError, match="out of range"):
        plot_feature_maps(maps, channels=[7])


def test_kernel_pictures(vgg16):
    w = kernel_weights(vgg16, "conv1_1")
    assert w.shape == (64, 3, 3, 3) and torch.equal(w, vgg16.features[0].weight.detach())
    fig = plot_kernels(w)
    tiles = [im.get_array() for ax in fig.axes for im in ax.get_images()]
    assert len(tiles) == 64
    peak = float(w.abs().max())
    np.testing.assert_allclose(tiles[5], (0.5 + w[5] / (2 * peak)).permute(1, 2, 0).numpy(), rtol=1e-6)
    deeper = plot_kernels(kernel_weights(vgg16, "conv2_1"), filters=[0, 1], inputs=[3, 4, 5])
    assert sum(len(ax.get_images()) for ax in deeper.axes) == 6
    depthwise = torch.randn(40, 1, 3, 3)  # (C, 1, k, k): one input per filter
    fig = plot_kernels(depthwise)
    tiles = [im.get_array() for ax in fig.axes for im in ax.get_images()]
    assert len(tiles) == 40 and np.allclose(tiles[7], depthwise[7, 0].numpy())
    width, height = fig.get_size_inches()
    assert 0.6 < height / width < 1.4  # a square grid (7 x 6), not one tall column
    with pytest.raises(KernelvizError, match="not a Conv2d"):
        kernel_weights(vgg16, "relu1_1")


def test_a_grid_title_wraps_at_its_phrases_above_the_tiles():
    """A long title on a narrow sheet: broken after its separators (never inside "seed 0"), every line within the
    sheet, and drawn above the tiles, not over them."""
    title = "vgg16 (random) conv3_2: mean activation under each filter; fourier image, 192 steps, lr 0.05, seed 0"
    fig = plot_grid(torch.rand(4, 3, 8, 8), [str(n) for n in range(4)], title=title, cols=2)
    fig.canvas.draw()
    heading = fig._suptitle
    lines = heading.get_text().split("\n")
    assert len(lines) >= 3 and lines[-1].endswith("seed 0") and any(line.endswith("filter;") for line in lines)
    box = heading.get_window_extent()
    assert box.x0 >= 0 and box.x1 <= fig.bbox.x1  # within the sheet
    assert box.y0 >= max(ax.get_window_extent().y1 for ax in fig.axes) - 1  # above every tile
