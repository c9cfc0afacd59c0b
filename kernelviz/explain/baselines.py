"""Reference images ("baselines") that attribution methods compare an image against.

Integrated gradients, DeepLift and GradientShap explain the change of the score from a baseline to the image;
occlusion and feature ablation replace regions with it; deletion and insertion scores fade the image into it.
The choice changes the answer (a black baseline cannot credit black pixels), so it is a named option and
it is recorded with every map.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..errors import unknown_choice

if TYPE_CHECKING:  # torch is imported where an image is made: the CLI reads BASELINES without it
    import torch

__all__ = ["BASELINES", "baseline_image", "describe_baseline"]

#: The baselines every perturbation method accepts.
BASELINES = ("black", "mean", "blur", "noise")

_DESCRIPTIONS = {
    "black": "black image (all zeros in [0, 1] space)",
    "mean": "the normalization's mean color (zero after normalization; gray 0.5 without one)",
    "blur": "the image blurred (Gaussian, sigma = 1/20 of its side)",
    "noise": "uniform noise in [0, 1] (seed 0)",
}


def describe_baseline(kind: str) -> str:
    """One line saying what baseline ``kind`` is, for records."""
    if kind not in BASELINES:
        raise unknown_choice("baseline", kind, BASELINES)
    return _DESCRIPTIONS[kind]


def baseline_image(images: torch.Tensor, kind: str, mean: Sequence[float] | None = None) -> torch.Tensor:
    """The baseline of each image.

    Args:
        images: ``(B, 3, H, W)`` RGB in ``[0, 1]``.
        kind: one of :data:`BASELINES`.
        mean: the model's normalization mean, used by ``"mean"`` (``None``: gray 0.5).

    Returns:
        ``(B, 3, H, W)`` on the images' device and dtype.
    """
    import torch
    import torchvision.transforms.functional as TF

    describe_baseline(kind)
    if kind == "black":
        return torch.zeros_like(images)
    if kind == "mean":
        color = torch.tensor(list(mean or (0.5, 0.5, 0.5)), dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
        return color.expand_as(images).clone()
    if kind == "blur":
        sigma = max(images.shape[-2:]) / 20
        size = 2 * int(3 * sigma) + 1  # odd, +-3 sigma
        return TF.gaussian_blur(images, [size, size], [sigma, sigma])
    generator = torch.Generator().manual_seed(0)
    return torch.rand(images.shape, generator=generator).to(images.device, images.dtype)
