"""Image parameterizations: how the optimized image is represented.

Each factory returns an :class:`ImageParam`: the tensors the optimizer
updates, a ``render()`` that turns them into a valid RGB image
``(B, 3, H, W)`` in ``[0, 1]``, and a ``project()`` run after each optimizer
step (a no-op except for plain pixels, which are clipped to the pixel box).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..errors import KernelvizError, unknown_choice
from ..files.images import image_files, load_image

__all__ = ["PARAMS", "ImageParam", "fourier_image", "image_param", "maco_image", "natural_magnitude", "pixel_image"]

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
    detail: float = 1.0,
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
        detail: the spectrum's resolution as a fraction of ``size``: the image is
            built at ``round(H * detail) x round(W * detail)`` and upsampled
            (bilinear) to ``size``, so nothing finer than about ``1 / detail`` pixels
            can form. 1 leaves every pixel free (ignored with ``init``, which is
            inverted at full resolution).
        std: standard deviation of the random initial spectrum.
        init: optional start image ``(B, 3, H, W)`` in ``[0, 1]``, inverted
            exactly into the parameterization (feature accentuation).
    """
    if init is None and detail < 1:
        return _upsampled(fourier_image(
            batch, (max(1, round(size[0] * detail)), max(1, round(size[1] * detail))),
            generator=generator, device=device, decay=decay, std=std,
        ), size)  # fmt: skip
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


def _upsampled(inner: ImageParam, size: tuple[int, int]) -> ImageParam:
    """``inner``'s images resized (bilinear) to ``size``: ``(B, 3, *size)``."""

    def render() -> torch.Tensor:
        return torch.nn.functional.interpolate(inner.render(), size=size, mode="bilinear", align_corners=False)

    return ImageParam(inner.params, render, inner.project, inner.name)


def natural_magnitude(
    size: tuple[int, int], *, decay: float = 1.0, images: str | os.PathLike | None = None, limit: int = 256
) -> torch.Tensor:
    """A natural-image amplitude spectrum on the ``rfft2`` grid, ``(H, W//2+1)``, unit mean.

    Args:
        size: ``(H, W)``.
        decay: exponent of the ``1/f`` model used without ``images``.
        images: a folder of photos: the mean amplitude spectrum of their gray levels
            (each resized and center-cropped to ``size``, mean removed), up to ``limit`` files.
    """
    h, w = size
    if images is None:
        mag = _frequency_scale(h, w, decay, torch.device("cpu"))
    else:
        files = image_files(images)[:limit]
        total, count = torch.zeros(h, w // 2 + 1), 0
        for path in files:
            try:
                gray = load_image(path, h if h == w else None).mean(0)
            except KernelvizError:
                continue
            if gray.shape != (h, w):
                gray = torch.nn.functional.interpolate(gray[None, None], size=(h, w), mode="bilinear")[0, 0]
            total += torch.fft.rfft2(gray - gray.mean(), norm="ortho").abs()
            count += 1
        if count == 0:
            raise KernelvizError(f"no readable images in {images} to measure a spectrum from")
        mag = total / count
    mag[0, 0] = 0.0  # no DC term: the mean is set by the sigmoid's center
    return mag / mag.mean()


def maco_image(
    batch: int,
    size: tuple[int, int],
    *,
    generator: Generators,
    device: torch.device,
    magnitude: torch.Tensor | None = None,
    init: torch.Tensor | None = None,
) -> ImageParam:
    """MACO (Fel et al., 2023): only the spectrum's phase is optimized, under a fixed natural magnitude.

    Each color channel (in the decorrelated color space of :func:`fourier_image`) is
    ``irfft2(magnitude * exp(i * phase))``, standardized to zero mean and unit variance, mapped
    to RGB and squashed by a sigmoid. Keeping a natural amplitude spectrum keeps the image's
    energy spread over frequencies like a photo's, however the phase moves.

    Args:
        magnitude: ``(H, W//2+1)`` amplitude; default: :func:`natural_magnitude` (a ``1/f`` model).
        init: start from this image's phase (its magnitude is replaced by ``magnitude``).
    """
    h, w = size
    mag = (magnitude if magnitude is not None else natural_magnitude(size)).to(device)
    if mag.shape != (h, w // 2 + 1):
        raise KernelvizError(f"magnitude must be {(h, w // 2 + 1)} for a {h}x{w} image, got {tuple(mag.shape)}")
    color = _COLOR.to(device)
    if init is None:
        phase = (2 * _draw(torch.rand, batch, (3, h, w // 2 + 1), generator) - 1) * math.pi
    else:
        z = torch.einsum("ij,bjhw->bihw", torch.linalg.inv(color.cpu()), _logit(init.to(torch.float32)))
        phase = torch.angle(torch.fft.rfft2(z, norm="ortho"))
    phase = phase.to(device).requires_grad_(True)

    def render() -> torch.Tensor:
        z = torch.fft.irfft2(torch.polar(mag.expand_as(phase), phase), s=(h, w), norm="ortho")  # (B, 3, H, W)
        z = (z - z.mean((2, 3), keepdim=True)) / (z.std((2, 3), keepdim=True) + 1e-8)
        return torch.sigmoid(torch.einsum("ij,bjhw->bihw", color, z))

    return ImageParam([phase], render, _noop, "maco")


PARAMS = {"pixel": pixel_image, "fourier": fourier_image, "maco": maco_image}


def image_param(
    name: str,
    batch: int,
    size: tuple[int, int],
    *,
    generator: Generators,
    device: torch.device,
    init: torch.Tensor | None = None,
    decay: float = 1.0,
    detail: float = 1.0,
) -> ImageParam:
    """Build a parameterization by name (``"pixel"``, ``"fourier"`` or ``"maco"``); ``decay`` and ``detail``
    are the Fourier image's spectrum exponent and resolution (see :func:`fourier_image`)."""
    try:
        factory = PARAMS[name]
    except KeyError:
        raise unknown_choice("parameterization", name, PARAMS) from None
    if name == "fourier":
        return fourier_image(batch, size, generator=generator, device=device, init=init, decay=decay, detail=detail)
    return factory(batch, size, generator=generator, device=device, init=init)
