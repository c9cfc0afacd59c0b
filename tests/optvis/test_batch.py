"""Layer grids: each filter from its own start, reproducible whatever the batching."""

from __future__ import annotations

import torch

from kernelviz.optvis.batch import layer_grid
from kernelviz.plot.grid import plot_grid

TINY = dict(steps=3, size=32, seed=0)


def test_grid_starts_per_filter_and_is_reproducible(vgg16):
    """Each filter starts from its own seed, whatever its batch; the same batching gives the same images.

    (Batching changes pictures in detail only: oneDNN rounds differently for another batch size,
    about 5e-7, and Adam's sign-like first steps amplify that in gradient components near zero.)
    """
    start4 = layer_grid(vgg16, "conv2_1", [0, 3, 5, 6], batch_size=4, **{**TINY, "steps": 0})
    start1 = layer_grid(vgg16, "conv2_1", [3, 6], batch_size=1, **{**TINY, "steps": 0})
    assert torch.equal(start4.images[[1, 3]], start1.images)
    a = layer_grid(vgg16, "conv2_1", [0, 3, 5, 6], batch_size=2, **TINY)
    b = layer_grid(vgg16, "conv2_1", [0, 3, 5, 6], batch_size=2, **TINY)
    assert torch.equal(a.images, b.images)
    assert a.filters == [0, 3, 5, 6] and a.images.shape == (4, 3, 32, 32) and len(a.results) == 2
    fig = plot_grid(a.images, [f"{n}" for n in a.filters], title="t")
    assert [t.get_text() for ax in fig.axes for t in ax.texts] == ["0", "3", "5", "6"]
