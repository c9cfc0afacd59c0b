"""Reading images: any file Pillow opens, as RGB ``(3, H, W)`` in ``[0, 1]``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..errors import KernelvizError

__all__ = ["IMAGE_SUFFIXES", "image_files", "load_image", "load_images", "square"]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def image_files(folder: str | os.PathLike) -> list[Path]:
    """Image files under ``folder`` (recursively), sorted, by suffix."""
    root = Path(folder)
    if not root.is_dir():
        raise KernelvizError(f"image folder not found: {root}")
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def square(image: torch.Tensor, size: int) -> torch.Tensor:
    """Resize ``(3, H, W)`` so its shorter side is ``size`` (antialiased), then center-crop to ``(3, size, size)``."""
    h, w = image.shape[-2:]
    scale = size / min(h, w)
    new = (max(size, round(h * scale)), max(size, round(w * scale)))
    resized = torch.nn.functional.interpolate(image[None], size=new, mode="bilinear", antialias=True)[0]
    top, left = (new[0] - size) // 2, (new[1] - size) // 2
    return resized[:, top : top + size, left : left + size].clamp(0, 1)


def load_image(path: str | os.PathLike, size: int | tuple[int, int] | None = None) -> torch.Tensor:
    """Read an image file as RGB ``(3, H, W)`` in ``[0, 1]``.

    Any format Pillow reads; grayscale, palette and RGBA images are converted
    to RGB (transparent areas composited over white).

    Args:
        size: resize the shorter side to ``size`` and center-crop to a square
            (an int), or resize exactly to ``(H, W)``; ``None`` keeps the size.

    Raises:
        KernelvizError: the file is missing or not an image.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise KernelvizError(f"image not found: {path}")
    try:
        with Image.open(path) as opened:
            opened.load()
            im: Image.Image = opened
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                background = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(background, im.convert("RGBA"))
            rgb = im.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise KernelvizError(f"cannot read image {path}: {err}") from err
    if size is not None and not isinstance(size, int):
        rgb = rgb.resize((size[1], size[0]), Image.Resampling.BICUBIC)
    arr = np.asarray(rgb, dtype=np.float32) / 255.0  # (H, W, 3)
    image = torch.from_numpy(arr).permute(2, 0, 1).contiguous()  # (3, H, W)
    return square(image, size) if isinstance(size, int) else image


def load_images(paths: Sequence[str | os.PathLike], size: int) -> torch.Tensor:
    """Several image files, each as :func:`load_image` with an int ``size``: ``(B, 3, size, size)``."""
    return torch.stack([load_image(p, size) for p in paths])
