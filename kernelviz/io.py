"""Files: atomic writes, PNG and JSON output, image input."""

from __future__ import annotations

import json
import os
import platform
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import KernelvizError

__all__ = ["atomic_write", "load_image", "save_json", "save_npy", "save_png", "versions"]


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Write a file so that it is either complete or absent: temp file in the same folder, then rename.

    Args:
        path: the final file.
        write: called with the temporary path; writes the whole file there.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; outputs get the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """``(3, H, W)`` float in ``[0, 1]`` → ``(H, W, 3)`` uint8."""
    arr = image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
    return (arr * 255 + 0.5).astype(np.uint8)


def save_png(image: torch.Tensor, path: str | os.PathLike) -> Path:
    """Save one ``(3, H, W)`` image in ``[0, 1]`` as an RGB PNG, atomically."""
    from PIL import Image

    pil = Image.fromarray(to_uint8(image))
    return atomic_write(path, lambda tmp: pil.save(tmp, format="PNG"))


def save_json(data: dict[str, Any], path: str | os.PathLike) -> Path:
    """Save ``data`` as indented JSON, atomically."""
    text = json.dumps(data, indent=2, default=_json_default)
    return atomic_write(path, lambda tmp: tmp.write_text(text + "\n"))


def save_npy(array: np.ndarray | torch.Tensor, path: str | os.PathLike) -> Path:
    """Save an array as ``.npy``, atomically."""
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, array)

    return atomic_write(path, write)


def _json_default(obj: object) -> object:
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, np.ndarray | np.generic):
        return obj.tolist()
    if isinstance(obj, Path | torch.device | torch.dtype):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 150) -> Path:
    """Save a matplotlib figure (format from the suffix), atomically, and close it."""
    import matplotlib.pyplot as plt

    fmt = Path(path).suffix.lstrip(".") or "png"
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight"))
    finally:
        plt.close(fig)


def versions() -> dict[str, str]:
    """Versions of Python and the libraries that shape a result."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("kernelviz", "torch", "torchvision", "captum"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


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
        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                im = im.convert("RGBA")
                background = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(background, im)
            rgb = im.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise KernelvizError(f"cannot read image {path}: {err}") from err
    if size is not None and not isinstance(size, int):
        rgb = rgb.resize((size[1], size[0]), Image.BICUBIC)
    arr = np.asarray(rgb, dtype=np.float32) / 255.0  # (H, W, 3)
    image = torch.from_numpy(arr).permute(2, 0, 1).contiguous()  # (3, H, W)
    return square(image, size) if isinstance(size, int) else image
