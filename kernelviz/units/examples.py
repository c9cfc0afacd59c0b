"""Dataset examples: the natural images that excite a filter most, cropped where it fires."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..core.layers import check_filters, list_layers
from ..core.models import model_meta
from ..core.names import resolve_layer
from ..core.progress import OnProgress
from ..data.collection import ImagesArg
from ..errors import KernelvizError
from ..files.images import load_image
from .scan import scan_units

__all__ = ["Example", "ExampleScan", "find_examples", "ratio_to_natural", "receptive_box"]


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
    """

    path: Path
    value: float
    position: tuple[int, int]
    box: tuple[int, int, int, int]
    crop: torch.Tensor


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


def receptive_box(model: nn.Module, layer: str, size: int) -> Callable[[int, int], tuple[int, int, int, int]]:
    """A function mapping a position ``(row, col)`` of ``layer``'s grid to its input box ``(x0, y0, x1, y1)``.

    Uses the layer's receptive field, stride and offset from :func:`~kernelviz.list_layers`,
    clipped to the ``size`` x ``size`` input.
    """
    path = resolve_layer(model, layer)
    rows = list_layers(model, size, include=[layer])
    # a shared module (EfficientNet's one ReLU6) runs at several depths: the run asked, by name, first
    row = next((r for r in rows if r.name == layer), None) or next((r for r in rows if r.path == path), None)
    if row is None or row.receptive_field is None or row.stride is None or row.offset is None:
        raise KernelvizError(f"layer {layer!r} has no spatial receptive field to crop")
    rf, stride, offset = row.receptive_field, row.stride, row.offset

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
            found.append(Example(path, value, pos, (x0, y0, x1, y1), crop))
        examples[f] = found
    return ExampleScan(examples=examples, scanned=scan.scanned, skipped=scan.skipped)
