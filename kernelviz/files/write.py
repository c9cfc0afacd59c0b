"""Writing files: every output is written atomically (complete or absent, never truncated), and a write that fails
(a full disk, a file-size limit, a folder gone read-only) keeps the result elsewhere and says so in one line."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import KernelvizError

__all__ = [
    "atomic_write",
    "figure_png",
    "save_figure",
    "save_json",
    "save_npy",
    "save_png",
    "to_uint8",
    "write_bytes",
    "write_each",
]


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Write a file so that it is either complete or absent: temp file in the same folder, then rename.

    When that fails with an ``OSError`` (a full disk, a file-size limit, a read-only or missing folder), the same
    ``write`` is tried once more into a new folder under the system's temporary directory, so that a result that
    took an hour to compute is not lost, and a one-line error says where it went.

    Args:
        path: the final file.
        write: called with a temporary path; writes the whole file there.

    Raises:
        KernelvizError: the write failed; the message names the file, the reason and where the result was kept
            (or that it could not be kept anywhere else either).
    """
    path = Path(path)
    try:
        return _replace_with(path, write)
    except OSError as err:
        reason = err.strerror or str(err) or type(err).__name__
        kept: Path | None = None
        with contextlib.suppress(OSError):
            kept = _replace_with(_rescue_folder() / path.parent.name / path.name, write)
        where = f"the result is kept at {kept}" if kept else "it could not be kept anywhere else either"
        raise KernelvizError(f"could not write {path} ({reason}); {where}") from err


#: One rescue folder per process and temporary directory, so that the files of one result stay together.
_RESCUE: dict[str, Path] = {}


def _rescue_folder() -> Path:
    base = tempfile.gettempdir()
    if base not in _RESCUE or not _RESCUE[base].is_dir():
        _RESCUE[base] = Path(tempfile.mkdtemp(prefix="kernelviz-rescue-"))
    return _RESCUE[base]


def write_bytes(path: str | os.PathLike, encode: Callable[[io.BytesIO], object]) -> Path:
    """Write a file whose content ``encode`` puts into a buffer, atomically (:func:`atomic_write`).

    The content is made in memory first, then written by Python's own file object, which raises on a short write:
    an encoder that writes to the file itself may not (Pillow's JPEG encoder leaves a truncated file under a
    file-size limit, ``torch.save`` raises a ``RuntimeError`` from its C++ stream), and a truncated file must never
    take a finished one's name.
    """
    buffer = io.BytesIO()
    encode(buffer)
    data = buffer.getvalue()

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
        if tmp.stat().st_size != len(data):  # a limit that let the write stop short without an error
            raise OSError(errno.EFBIG, f"{len(data)} bytes to write, {tmp.stat().st_size} written")

    return atomic_write(path, write)


def write_each(*writes: Callable[[], object]) -> None:
    """Run every write even when one fails (each failed file was already kept in the rescue folder by
    :func:`atomic_write`), then raise the first failure: a PNG that could not be written keeps its JSON record."""
    failure: KernelvizError | None = None
    for write in writes:
        try:
            write()
        except KernelvizError as err:
            failure = failure or err
    if failure is not None:
        raise failure


def _replace_with(path: Path, write: Callable[[Path], object]) -> Path:
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
    return write_bytes(path, lambda buffer: pil.save(buffer, format="PNG"))


def save_jpeg(image: torch.Tensor, path: str | os.PathLike, longest: int | None = None) -> Path:
    """Write ``image`` ``(3, h, w)`` in ``[0, 1]`` as a JPEG atomically, shrunk (antialiased) when its longest side
    exceeds ``longest``; the folder is created."""
    from PIL import Image

    h, w = image.shape[1:]
    if longest is not None and max(h, w) > longest:
        scale = longest / max(h, w)
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        image = torch.nn.functional.interpolate(image[None], size=size, mode="bilinear", antialias=True)[0]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = to_uint8(image)
    return write_bytes(path, lambda buffer: Image.fromarray(pixels).save(buffer, format="JPEG", quality=90))


def save_json(data: dict[str, Any], path: str | os.PathLike, *, compact: bool = False) -> Path:
    """Save ``data`` as indented JSON (``compact``: on one line, no spaces: a large record), atomically."""
    if compact:
        text = json.dumps(data, separators=(",", ":"), default=_json_default)
    else:
        text = json.dumps(data, indent=2, default=_json_default)
    return write_bytes(path, lambda buffer: buffer.write((text + "\n").encode()))


def save_npy(array: np.ndarray | torch.Tensor, path: str | os.PathLike) -> Path:
    """Save an array as ``.npy``, atomically."""
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()

    return write_bytes(path, lambda buffer: np.save(buffer, array))


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
        return write_bytes(path, lambda buffer: fig.savefig(buffer, format=fmt, dpi=dpi, bbox_inches="tight"))
    finally:
        plt.close(fig)


def figure_png(fig: Any, dpi: int = 100) -> bytes:
    """A matplotlib figure as PNG bytes (for a page that shows it rather than a file), closed afterwards."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
    return buffer.getvalue()
