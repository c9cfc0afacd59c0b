"""Random transforms applied to the image before each step (transformation robustness).

Each factory takes its settings and a ``torch.Generator`` and returns a plain
function ``(B, 3, H, W) -> (B, 3, H', W')``. Random draws come from that CPU
generator (never a global, never a device sync); the tensors stay on the
input's device. One draw per step is shared by the whole batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from ..errors import KernelvizError

__all__ = [
    "Transform",
    "build_transforms",
    "compose",
    "fit",
    "jitter",
    "pad",
    "random_affine",
    "random_rotate",
    "random_scale",
    "standard_transforms",
]

Transform = Callable[[torch.Tensor], torch.Tensor]


def _choice(values: Sequence[float], generator: torch.Generator) -> float:
    return values[int(torch.randint(len(values), (1,), generator=generator))]


def pad(width: int, value: float = 0.5) -> Transform:
    """Pad every side by ``width`` pixels of constant gray ``value``."""

    def fn(x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, (width,) * 4, mode="constant", value=value)

    return fn


def jitter(d: int, generator: torch.Generator) -> Transform:
    """Random crop that shifts the image by up to ``d - 1`` pixels (output ``d - 1`` smaller)."""

    def fn(x: torch.Tensor) -> torch.Tensor:
        if d <= 1:
            return x
        dx, dy = (int(v) for v in torch.randint(d, (2,), generator=generator))
        h, w = x.shape[-2:]
        return x[..., dy : h - (d - 1) + dy, dx : w - (d - 1) + dx]

    return fn


def _affine(x: torch.Tensor, scale: float, angle_deg: float) -> torch.Tensor:
    """Scale about the center and rotate, bilinear, same output size."""
    a = math.radians(angle_deg)
    cos, sin = math.cos(a) / scale, math.sin(a) / scale
    theta = x.new_tensor([[cos, -sin, 0.0], [sin, cos, 0.0]]).expand(x.shape[0], 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def random_scale(scales: Sequence[float], generator: torch.Generator) -> Transform:
    """Zoom by a factor drawn from ``scales`` (same output size)."""

    def fn(x: torch.Tensor) -> torch.Tensor:
        return _affine(x, _choice(scales, generator), 0.0)

    return fn


def random_rotate(angles: Sequence[float], generator: torch.Generator) -> Transform:
    """Rotate by an angle in degrees drawn from ``angles`` (same output size)."""

    def fn(x: torch.Tensor) -> torch.Tensor:
        return _affine(x, 1.0, _choice(angles, generator))

    return fn


def random_affine(scales: Sequence[float], angles: Sequence[float], generator: torch.Generator) -> Transform:
    """Random scale and rotation in one resampling (cheaper and less blurry than two)."""

    def fn(x: torch.Tensor) -> torch.Tensor:
        return _affine(x, _choice(scales, generator), _choice(angles, generator))

    return fn


def fit(size: int, how: str = "resize") -> Transform:
    """Bring the image back to ``size`` x ``size``: ``"resize"`` (bilinear, the whole view kept, as lucent
    does) or ``"crop"`` (the center, pixel scale kept). Fixed-size networks (ViT, MaxViT) need it, and the
    network then sees as many pixels as were asked for."""
    if how not in ("resize", "crop"):
        raise KernelvizError(f"fit must be 'resize' or 'crop', got {how!r}")

    def fn(x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if (h, w) == (size, size):
            return x
        if how == "crop" and h >= size and w >= size:
            top, left = (h - size) // 2, (w - size) // 2
            return x[..., top : top + size, left : left + size]
        return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)

    return fn


def compose(transforms: Sequence[Transform]) -> Transform:
    """Apply ``transforms`` in order."""

    def fn(x: torch.Tensor) -> torch.Tensor:
        for t in transforms:
            x = t(x)
        return x

    return fn


def standard_transforms(generator: torch.Generator, size: int = 224, end: str | None = None) -> list[Transform]:
    """Lucid's robustness recipe, with distances scaled to the image size (Lucid's are for 128 px).

    Pad 12 px of gray, jitter 8, scale 0.90-1.10 in steps of 0.02, rotate
    -10..10 degrees, jitter 4 (pixel distances multiplied by ``size / 128``,
    rounded, so a 224-px image moves as far, relatively, as Lucid's). ``end``: ``"resize"`` or ``"crop"``
    back to ``size`` at the end (see :func:`fit`), or ``None`` to keep the larger view.
    """
    k = max(size / 128, 0.25)
    scales = [1 + (i - 5) / 50 for i in range(11)]
    angles = list(range(-10, 11))
    return [
        pad(max(1, round(12 * k))),
        jitter(max(2, round(8 * k)), generator),
        random_affine(scales, angles, generator),  # = random_scale then random_rotate, one resampling
        jitter(max(2, round(4 * k)), generator),
        *([fit(size, end)] if end is not None else []),
    ]


def build_transforms(spec: str | Sequence[Transform] | None, generator: torch.Generator, size: int) -> list[Transform]:
    """Transforms by name: ``"standard"`` (Lucid's recipe, ending at ``size``), ``None``/``"none"``, or a list
    kept as is."""
    if spec is None or spec == "none":
        return []
    if spec in ("standard", "default"):
        # ending with a center crop back to the asked size: fixed-size networks (ViT) work, and measured on
        # EfficientNet-Lite0 (benchmarks/bench_fit.py) it is 1.12x faster at 224 px, 1.29x at 160 px, with the
        # same objective reached (resizing back instead, as lucent does, lost 10-16%)
        return standard_transforms(generator, size, end="crop")
    if isinstance(spec, str):
        raise KernelvizError(f"unknown transforms {spec!r}: use 'standard' or 'none'")
    return list(spec)


def random_views(images: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` random views of each image, to test whether a result survives being looked at differently.

    Each view crops 50-100% of the side at a random place, rescales it back to the full size
    (bilinear) and shifts it by up to 10% (wrapping around).

    Args:
        images: ``(B, 3, H, W)``.
        n: views per image.
        seed: seeds the draws.

    Returns:
        ``(B * n, 3, H, W)``: the views of image 0, then of image 1, ...
    """
    g = torch.Generator().manual_seed(seed)
    size = images.shape[-1]
    views = []
    for img in images:
        for _ in range(n):
            side = max(8, int(size * (0.5 + 0.5 * float(torch.rand(1, generator=g)))))
            top, left = (int(v) for v in torch.randint(0, size - side + 1, (2,), generator=g))
            crop = img[None, :, top : top + side, left : left + side]
            view = F.interpolate(crop, size=images.shape[-2:], mode="bilinear", align_corners=False)[0]
            dx, dy = (int(v) for v in torch.randint(-size // 10, size // 10 + 1, (2,), generator=g))
            views.append(torch.roll(view, shifts=(dy, dx), dims=(1, 2)))
    return torch.stack(views)
