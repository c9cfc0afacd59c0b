"""Random views and the transforms recipe."""

from __future__ import annotations

import torch


def test_random_views_are_seeded_crops():
    from kernelviz.optvis.transforms import random_views

    images = torch.rand(2, 3, 40, 40)
    views = random_views(images, 3, seed=1)
    assert views.shape == (6, 3, 40, 40)
    assert torch.equal(views, random_views(images, 3, seed=1))
    assert not torch.equal(views, random_views(images, 3, seed=2))
    assert views.min() >= images.min() - 1e-6 and views.max() <= images.max() + 1e-6  # resampled, not invented
