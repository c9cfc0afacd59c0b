"""Reading images: any file Pillow opens, as RGB ``(3, H, W)`` in ``[0, 1]``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import KernelvizError, NotFoundError

__all__ = ["IMAGE_SUFFIXES", "image_files", "image_size", "load_image", "load_images", "square"]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def image_files(folder: str | os.PathLike) -> list[Path]:
    """Image files under ``folder`` (recursively, into linked folders too: a folder of links to a dataset is the
    usual layout; each real folder once), sorted, by suffix; named as found under ``folder``, links not resolved."""
    root = Path(folder)
    if not root.is_dir():
        raise NotFoundError(f"image folder not found: {root}")
    found: list[Path] = []
    seen: set[str] = set()
    for here, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(here)
        if real in seen:  # a link back to a folder already walked
            dirs.clear()
            continue
        seen.add(real)
        found.extend(Path(here) / f for f in files if Path(f).suffix.lower() in IMAGE_SUFFIXES)
    return sorted(p for p in found if p.is_file())


def square(image: torch.Tensor, size: int) -> torch.Tensor:
    """Resize ``(3, H, W)`` so its shorter side is ``size`` (antialiased), then center-crop to ``(3, size, size)``."""
    h, w = image.shape[-2:]
    scale = size / min(h, w)
    new = (max(size, round(h * scale)), max(size, round(w * scale)))
    resized = torch.nn.functional.interpolate(image[None], size=new, mode="bilinear", antialias=True)[0]
    top, left = (new[0] - size) // 2, (new[1] - size) // 2
    return resized[:, top : top + size, left : left + size].clamp(0, 1)


#: Pillow modes that hold more than 8 bits per pixel, and the value that means white in each.
_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def _wide_to_unit(arr: np.ndarray, mode: str) -> np.ndarray:
    """A 16-bit, 32-bit integer or float gray image as floats in ``[0, 1]``.

    16-bit modes are divided by 65535. 32-bit integer and float images carry no declared range: values up to
    1 are taken as ``[0, 1]`` already (float only), up to 255 as 8-bit, up to 65535 as 16-bit, and anything
    larger is stretched from its minimum to its maximum.
    """
    arr = arr.astype(np.float32)
    if mode.startswith("I;16"):
        return arr / 65535.0
    low, high = float(arr.min()), float(arr.max())
    for white in (1.0, 255.0, 65535.0):
        if high <= white and low >= 0 and (white > 1.0 or mode == "F"):
            return arr / white
    return (arr - low) / (high - low) if high > low else np.zeros_like(arr)


def load_image(path: str | os.PathLike, size: int | tuple[int, int] | None = None) -> torch.Tensor:
    """Read an image file as RGB ``(3, H, W)`` in ``[0, 1]``.

    Any format Pillow reads: the EXIF orientation is applied (a phone photo comes out upright);
    grayscale, palette, CMYK and RGBA images are converted to RGB (transparent areas composited over
    white); 16-bit, 32-bit and float grayscale images keep their full range (see :func:`_wide_to_unit`)
    instead of being clipped to 8 bits.

    Args:
        size: resize the shorter side to ``size`` and center-crop to a square
            (an int), or resize exactly to ``(H, W)``; ``None`` keeps the size.

    Raises:
        KernelvizError: the file is missing or not an image.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as opened:
            opened.load()
            im: Image.Image = ImageOps.exif_transpose(opened)
            if im.mode in _WIDE_MODES:
                raw = np.asarray(im)
                if im.mode == "F" and not np.isfinite(raw).all():
                    bad = int((~np.isfinite(raw)).sum())
                    raise KernelvizError(
                        f"image {path} holds {bad} NaN or infinite pixel(s): fill them (or save the image without "
                        "them) to use it"
                    )
                gray = torch.from_numpy(_wide_to_unit(raw, im.mode))  # (H, W)
                image = gray.expand(3, *gray.shape).contiguous()  # (3, H, W)
                if size is not None and not isinstance(size, int):
                    resized = F.interpolate(image[None], size=size, mode="bicubic", antialias=True)[0]
                    image = resized.clamp(0, 1)
                return square(image, size) if isinstance(size, int) else image
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                background = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(background, im.convert("RGBA"))
            rgb = im.convert("RGB")
    except Image.DecompressionBombError as err:  # a header declaring far more pixels than the file holds
        raise KernelvizError(
            f"cannot read image {path}: {err} (refused as a possible decompression bomb; for a genuine image "
            "this large, raise PIL.Image.MAX_IMAGE_PIXELS)"
        ) from err
    except KernelvizError:  # what is wrong with its pixels, said already
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as err:
        raise KernelvizError(f"cannot read image {path}: {err}") from err
    if size is not None and not isinstance(size, int):
        rgb = rgb.resize((size[1], size[0]), Image.Resampling.BICUBIC)
    arr = np.asarray(rgb, dtype=np.float32) / 255.0  # (H, W, 3)
    image = torch.from_numpy(arr).permute(2, 0, 1).contiguous()  # (3, H, W)
    return square(image, size) if isinstance(size, int) else image


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(width, height)`` of an image file, read from its header (``(0, 0)`` when it cannot be read)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return 0, 0


def load_images(paths: Sequence[str | os.PathLike], size: int) -> torch.Tensor:
    """Several image files, each as :func:`load_image` with an int ``size``: ``(B, 3, size, size)``."""
    return torch.stack([load_image(p, size) for p in paths])
