"""Random views and the transforms recipe."""

from __future__ import annotations

import torch
from torch import nn

import kernelviz


def test_random_views_are_seeded_crops():
    from kernelviz.optvis.transforms import random_views

    images = torch.rand(2, 3, 40, 40)
    views = random_views(images, 3, seed=1)
    assert views.shape == (6, 3, 40, 40)
    assert torch.equal(views, random_views(images, 3, seed=1))
    assert not torch.equal(views, random_views(images, 3, seed=2))
    assert views.min() >= images.min() - 1e-6 and views.max() <= images.max() + 1e-6  # resampled, not invented


def test_standard_transforms_end_at_the_asked_size():
    from kernelviz.optvis.transforms import build_transforms, fit

    for size in (32, 160, 224):
        x = torch.rand(2, 3, size, size)
        for t in build_transforms("standard", torch.Generator().manual_seed(0), size):
            x = t(x)
        assert x.shape == (2, 3, size, size)
    ramp = torch.arange(36.0).view(1, 1, 6, 6)
    assert torch.equal(fit(4, "crop")(ramp), ramp[..., 1:5, 1:5])  # the center, pixel scale kept
    assert fit(4, "resize")(ramp).shape == (1, 1, 4, 4)


def test_a_fixed_size_network_works_with_the_default_transforms():
    """Like ViT, this network refuses any other input size (it used to get 36 px for a 32-px image)."""

    class Fixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.shape[-2:] != (32, 32):
                raise RuntimeError(f"Wrong image height! Expected 32 but got {x.shape[-2]}!")
            return self.conv(x)

    result = kernelviz.visualize(Fixed(), "conv:1", steps=3, size=32)
    assert result.steps_done == 3
