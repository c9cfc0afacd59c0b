"""Dataset examples: the natural images that excite a filter most, cropped where it fires."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..core.capture import StopForward
from ..core.layers import LayerInfo, check_filters, list_layers
from ..core.models import model_device, model_meta
from ..core.names import resolve_layer
from ..core.progress import OnProgress
from ..data.collection import ImagesArg
from ..errors import KernelvizError
from ..files.images import load_image
from .scan import scan_units

__all__ = [
    "Example",
    "ExampleScan",
    "effective_field",
    "find_examples",
    "ratio_to_natural",
    "receptive_box",
    "receptive_field",
]


@dataclass(frozen=True)
class Example:
    """One natural image that excites a filter.

    Attributes:
        path: the image file.
        value: the filter's maximum activation over positions.
        position: ``(row, col)`` of that maximum in the layer's grid.
        box: ``(x0, y0, x1, y1)`` crop of the input (at the model's input size) that the
            strongest position sees: its receptive field, clipped to the image.
        crop: ``(3, h, w)`` that crop in ``[0, 1]``.
        caption: how the image is captioned (its class's name in a collection with classes, else its file name).
    """

    path: Path
    value: float
    position: tuple[int, int]
    box: tuple[int, int, int, int]
    crop: torch.Tensor
    caption: str = ""


@dataclass
class ExampleScan:
    """The result of a scan: top examples per filter and the files that could not be read."""

    examples: dict[int, list[Example]]
    scanned: int
    skipped: list[tuple[Path, str]]


def ratio_to_natural(synthesized: float, natural: Sequence[float]) -> float:
    """The synthesized image's maximum activation over the best of the natural images' maxima (``nan``
    when there is no natural image, or the best one does not excite the filter at all)."""
    best = max(natural, default=0.0)
    return synthesized / best if best > 0 else math.nan


def _field_row(model: nn.Module, layer: str, size: int) -> LayerInfo:
    path = resolve_layer(model, layer)
    rows = list_layers(model, size, include=[layer])
    # a shared module (EfficientNet's one ReLU6) runs at several depths: the run asked, by name, first
    row = next((r for r in rows if r.name == layer), None) or next((r for r in rows if r.path == path), None)
    if row is None or row.receptive_field is None or row.stride is None or row.offset is None:
        raise KernelvizError(f"layer {layer!r} has no spatial receptive field to crop")
    return row


def receptive_field(model: nn.Module, layer: str, size: int) -> int:
    """The side in input pixels of ``layer``'s theoretical receptive field (it may exceed the input ``size``).

    Raises:
        KernelvizError: the layer has no spatial receptive field (a fully connected layer).
    """
    return int(_field_row(model, layer, size).receptive_field or 0)


def receptive_box(
    model: nn.Module, layer: str, size: int, side: int | None = None
) -> Callable[[int, int], tuple[int, int, int, int]]:
    """A function mapping a position ``(row, col)`` of ``layer``'s grid to its input box ``(x0, y0, x1, y1)``.

    Uses the layer's stride and offset from :func:`~kernelviz.list_layers`, and a square of its receptive field
    (or of ``side`` pixels: the effective field, :func:`effective_field`) around the position's center, clipped to
    the ``size`` x ``size`` input.
    """
    row = _field_row(model, layer, size)
    rf, stride, offset = side or row.receptive_field or size, row.stride or 1, row.offset or 0

    def box(r: int, c: int) -> tuple[int, int, int, int]:
        cy, cx = offset + r * stride, offset + c * stride
        x0, y0 = max(0, round(cx - rf / 2)), max(0, round(cy - rf / 2))
        return x0, y0, min(size, round(cx + rf / 2)), min(size, round(cy + rf / 2))

    return box


def find_examples(
    model: nn.Module,
    layer: str,
    filters: Sequence[int],
    images: ImagesArg,
    *,
    k: int = 9,
    batch_size: int | None = None,
    size: int | None = None,
    workers: int | None = None,
    progress: OnProgress | None = None,
) -> ExampleScan:
    """The ``k`` images of a collection whose maximum activation on each filter of one layer is largest, each
    cropped at the receptive field of its strongest position (:func:`~kernelviz.scan_units` for one layer; it
    scans many layers in one pass and ranks by mean and minimum too).

    Args:
        model: the network.
        layer: a layer with a spatial output.
        filters: the filters to rank images for.
        images: a folder (searched recursively), a text file listing images, or a list of files.
        k: examples per filter.
        batch_size: images per forward pass (default: 8 on a CPU, 64 on a GPU).
        size: input side; default: the model's.
        workers: data-loading processes (default: :func:`~kernelviz.units.scan.default_workers`).
        progress: reports stage ``"scan"``: the images read.

    Returns:
        An :class:`ExampleScan` with examples best first; unreadable files are skipped and reported.
    """
    side = size or model_meta(model).input_size
    box = receptive_box(model, layer, side)
    check_filters(model, layer, list(filters), side)
    scan = scan_units(model, images, [layer], k=k, batch_size=batch_size, size=side, workers=workers, progress=progress)
    examples = {}
    for f in filters:
        found = []
        for path, value, pos in scan.examples(layer, f):
            assert pos is not None
            x0, y0, x1, y1 = box(*pos)
            crop = load_image(path, side)[:, y0:y1, x0:x1]
            found.append(Example(path, value, pos, (x0, y0, x1, y1), crop, scan.caption(path)))
        examples[f] = found
    return ExampleScan(examples=examples, scanned=scan.scanned, skipped=scan.skipped)


def effective_field(model: nn.Module, layer: str, images: torch.Tensor, mass: float = 0.9) -> int:
    """The side in input pixels of the effective receptive field of ``layer``: the smallest square around the input
    point a central position of the layer sees most that holds ``mass`` of the input gradient of its activation
    (Luo et al. 2016, "Understanding the effective receptive field"), averaged over ``images``.

    The theoretical receptive field grows with every layer and soon exceeds the input (a crop at it is the whole
    image); the gradient falls off fast from its center, so this square is far smaller: it is where the position
    looks.

    Args:
        images: ``(B, 3, S, S)`` in ``[0, 1]``, natural images (the examples' own collection).
        mass: the share of the absolute gradient the square holds.

    Returns:
        The side, at most ``S``.
    """
    from ..core.capture import capture
    from ..core.guard import guarded

    meta = model_meta(model)
    side = images.shape[-1]
    x = meta.normalize(images.to(model_device(model))).requires_grad_(True)
    with guarded(model), torch.enable_grad(), capture(model, [layer], stop=True) as acts:
        with contextlib.suppress(StopForward):
            model(x)
        a = acts[layer]
        if a.dim() != 4:
            raise KernelvizError(f"layer {layer!r} has no spatial grid: it has no effective receptive field")
        h, w = a.shape[2:]
        (grad,) = torch.autograd.grad(a[:, :, h // 2, w // 2].sum(), x)
    heat = grad.abs().sum((0, 1)).double()  # (S, S)
    total = float(heat.sum())
    if total == 0:
        return side
    rows = list_layers(model, side, include=[layer])
    row = next((r for r in rows if r.name == layer), None) or rows[-1]
    stride, offset = row.stride or side / w, row.offset if row.offset is not None else side / 2
    cy, cx = offset + (h // 2) * stride, offset + (w // 2) * stride  # the position's center in the input
    for width in range(1, side + 1):  # the square of this side centered on the position (pixel i spans [i, i+1))
        y0, x0 = math.floor(cy - width / 2 + 0.5), math.floor(cx - width / 2 + 0.5)
        held = heat[max(0, y0) : max(0, y0 + width), max(0, x0) : max(0, x0 + width)]
        if float(held.sum()) >= mass * total:
            return min(width, row.receptive_field or width)
    return side
