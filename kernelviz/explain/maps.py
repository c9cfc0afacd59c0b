"""Feature maps: what each channel of a layer does with an image."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..core.capture import activations
from ..core.guard import check_finite, check_images, check_model
from ..core.models import model_device, model_meta
from ..errors import KernelvizError

__all__ = ["channel_stats", "feature_maps", "strongest_channels", "top_channels"]


def feature_maps(
    model: nn.Module,
    images: torch.Tensor,
    layer: str,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> torch.Tensor:
    """A layer's output for some images, computed only as far as that layer.

    Args:
        model: the network (unchanged by the call).
        images: ``(B, 3, H, W)`` or ``(3, H, W)`` RGB in ``[0, 1]``; the
            model's normalization is applied here.
        layer: layer name (``"conv1_2"``, ``"pool1"``, ``"features.4"``).
        mean, std: override the model's normalization.

    Returns:
        ``(B, C, H', W')`` (or ``(B, C)`` for a fully connected layer), detached, on the CPU.
    """
    check_model(model)
    images = check_images(images)
    if images.shape[1] != 3:
        raise KernelvizError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
    device = model_device(model)
    x = model_meta(model).with_normalization(mean, std).normalize(images.to(device, torch.float32))
    maps = activations(model, x, [layer])[layer].float().cpu()
    return check_finite(
        maps,
        f"the feature maps of {layer!r}",
        ": the model's output is not finite for these images (NaN or infinite weights?)",
    )


def channel_stats(maps: torch.Tensor) -> dict[str, list[float]]:
    """Per-channel mean, max and min of ``(C, H, W)`` maps."""
    flat = maps.flatten(1)  # (C, H*W)
    return {
        "mean": flat.mean(1).tolist(),
        "max": flat.amax(1).tolist(),
        "min": flat.amin(1).tolist(),
    }


def top_channels(maps: torch.Tensor, k: int) -> list[int]:
    """Indices of the ``k`` channels of ``(C, H, W)`` maps with the largest mean activation, best first."""
    means = maps.flatten(1).mean(1)
    return means.topk(min(k, len(means))).indices.tolist()


def strongest_channels(
    model: nn.Module, image: torch.Tensor, layers: Sequence[str], k: int = 6
) -> dict[str, list[tuple[int, float]]]:
    """Per layer, the ``k`` channels of largest mean activation on ``image`` ``(3, H, W)`` in ``[0, 1]``, strongest
    first: ``{layer: [(channel, mean), ...]}`` (one forward pass, stopped after the deepest layer)."""
    x = check_images(image)
    device = model_device(check_model(model))
    acts = activations(model, model_meta(model).normalize(x.to(device)), list(layers))
    found = {}
    for name in layers:
        means = acts[name][0].flatten(1).mean(1).float().cpu()  # (C,)
        top = means.topk(min(k, len(means)))
        found[name] = [(int(i), float(v)) for v, i in zip(top.values, top.indices, strict=True)]
    return found
