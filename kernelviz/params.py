"""Image parameterizations: how the optimized image is represented.

Each factory returns an :class:`ImageParam`: the tensors the optimizer
updates, a ``render()`` that turns them into a valid RGB image
``(B, 3, H, W)`` in ``[0, 1]``, and a ``project()`` run after each optimizer
step (a no-op except for plain pixels, which are clipped to the pixel box).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .errors import KernelvizError

__all__ = ["PARAMS", "ImageParam", "fourier_image", "image_param", "pixel_image"]

# Square root of ImageNet's RGB color covariance (rows = RGB), as used by Lucid;
# normalized below by its largest column norm so no channel can exceed the sigmoid's range.
_COLOR_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
_COLOR = _COLOR_SQRT / _COLOR_SQRT.norm(dim=0).max()


@dataclass(frozen=True)
class ImageParam:
    """A parameterized batch of images.

    Attributes:
        params: leaf tensors to optimize (``requires_grad=True``).
        render: returns the image ``(B, 3, H, W)`` in ``[0, 1]``.
        project: called under ``no_grad`` after each optimizer step.
        name: ``"pixel"``, ``"fourier"``...
    """

    params: list[torch.Tensor]
    render: Callable[[], torch.Tensor]
    project: Callable[[], None]
    name: str


def _noop() -> None:
    return None


Generators = torch.Generator | Sequence[torch.Generator]


def _draw(
    sample: Callable[..., torch.Tensor], batch: int, shape: tuple[int, ...], generator: Generators
) -> torch.Tensor:
    """``(batch, *shape)`` random numbers: from one generator, or image ``i`` from ``generator[i]``.

    One generator per image makes each image's start independent of the batch it is optimized in.
    """
    if isinstance(generator, torch.Generator):
        return sample(batch, *shape, generator=generator)
    if len(generator) != batch:
        raise KernelvizError(f"{len(generator)} generators for a batch of {batch}")
    return torch.stack([sample(*shape, generator=g) for g in generator])


def pixel_image(
    batch: int,
    size: tuple[int, int],
    *,
    generator: Generators,
    device: torch.device,
    init: torch.Tensor | None = None,
) -> ImageParam:
    """Plain pixels in ``[0, 1]``, moved by the gradient and clipped back into the box after each step.

    This is the article's method: start from random pixels, change them along
    the gradient. The start is gray noise (``0.5 ± 0.1``) unless ``init``
    ``(B, 3, H, W)`` in ``[0, 1]`` is given.
    """
    h, w = size
    if init is None:
        init = 0.4 + 0.2 * _draw(torch.rand, batch, (3, h, w), generator)
    x = init.detach().to(device=device, dtype=torch.float32).clone().requires_grad_(True)

    def project() -> None:
        x.clamp_(0.0, 1.0)

    return ImageParam([x], lambda: x, project, "pixel")


def _logit(p: torch.Tensor) -> torch.Tensor:
    p = p.clamp(1e-3, 1 - 1e-3)
    return torch.log(p / (1 - p))


def _frequency_scale(h: int, w: int, decay: float, device: torch.device) -> torch.Tensor:
    """``1 / max(f, 1/max(h, w)) ** decay`` on the ``rfft2`` grid: ``(H, W//2+1)``."""
    fy = torch.fft.fftfreq(h, device=device)[:, None]
    fx = torch.fft.rfftfreq(w, device=device)[None, :]
    freq = torch.sqrt(fx * fx + fy * fy)
    return 1.0 / freq.clamp(min=1.0 / max(h, w)) ** decay


def fourier_image(
    batch: int,
    size: tuple[int, int],
    *,
    generator: Generators,
    device: torch.device,
    decay: float = 1.0,
    std: float = 0.01,
    init: torch.Tensor | None = None,
) -> ImageParam:
    """Lucid-style image: a 2-D spectrum with ``1/f`` scaling, decorrelated color, sigmoid.

    Optimizing the spectrum instead of pixels whitens the gradient (low
    frequencies get as much change as high ones), which removes most of the
    high-frequency noise pixel-space ascent produces. Colors are built in a
    decorrelated space mapped to RGB by the square root of ImageNet's color
    covariance, and a sigmoid keeps every pixel in ``(0, 1)``.

    Args:
        decay: exponent of the ``1/f`` scaling (1 = natural-image spectrum).
        std: standard deviation of the random initial spectrum.
        init: optional start image ``(B, 3, H, W)`` in ``[0, 1]``, inverted
            exactly into the parameterization (feature accentuation).
    """
    h, w = size
    scale = _frequency_scale(h, w, decay, device)  # (H, W//2+1)
    color = _COLOR.to(device)
    if init is None:
        spec = std * _draw(torch.randn, batch, (3, h, w // 2 + 1, 2), generator)
    else:  # invert render(): logit -> color decorrelation -> spectrum
        z = _logit(init.to(torch.float32))
        z = torch.einsum("ij,bjhw->bihw", torch.linalg.inv(color.cpu()), z)
        spec = torch.view_as_real(torch.fft.rfft2(z * 4, norm="ortho") / scale.cpu())
    spec = spec.to(device).requires_grad_(True)

    def render() -> torch.Tensor:
        spectrum = torch.view_as_complex(spec) * scale  # (B, 3, H, W//2+1)
        z = torch.fft.irfft2(spectrum, s=(h, w), norm="ortho") / 4  # (B, 3, H, W), decorrelated color
        rgb = torch.einsum("ij,bjhw->bihw", color, z)
        return torch.sigmoid(rgb)

    return ImageParam([spec], render, _noop, "fourier")


PARAMS = {"pixel": pixel_image, "fourier": fourier_image}


def image_param(
    name: str,
    batch: int,
    size: tuple[int, int],
    *,
    generator: Generators,
    device: torch.device,
    init: torch.Tensor | None = None,
) -> ImageParam:
    """Build a parameterization by name (``"pixel"`` or ``"fourier"``)."""
    try:
        factory = PARAMS[name]
    except KeyError:
        raise KernelvizError(f"unknown parameterization {name!r}: choose from {', '.join(PARAMS)}") from None
    return factory(batch, size, generator=generator, device=device, init=init)
