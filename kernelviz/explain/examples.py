"""Dataset examples: the natural images that excite a filter most, cropped where it fires."""

from __future__ import annotations

import heapq
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..core.capture import activations
from ..core.layers import list_layers
from ..core.models import model_device, model_meta
from ..core.names import resolve_layer
from ..errors import KernelvizError, out_of_range
from ..files.images import image_files, load_image

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
    row = next((r for r in list_layers(model, size, include=[layer]) if r.path == path), None)
    if row is None or row.receptive_field is None or row.stride is None or row.offset is None:
        raise KernelvizError(f"layer {layer!r} has no spatial receptive field to crop")
    rf, stride, offset = row.receptive_field, row.stride, row.offset

    def box(r: int, c: int) -> tuple[int, int, int, int]:
        cy, cx = offset + r * stride, offset + c * stride
        x0, y0 = max(0, round(cx - rf / 2)), max(0, round(cy - rf / 2))
        return x0, y0, min(size, round(cx + rf / 2)), min(size, round(cy + rf / 2))

    return box


def _batches(paths: Sequence[Path], size: int, batch: int, skipped: list) -> Iterator[tuple[list[Path], torch.Tensor]]:
    buf_paths, buf = [], []
    for path in paths:
        try:
            buf.append(load_image(path, size))
            buf_paths.append(path)
        except KernelvizError as err:
            skipped.append((path, str(err)))
            continue
        if len(buf) == batch:
            yield buf_paths, torch.stack(buf)
            buf_paths, buf = [], []
    if buf:
        yield buf_paths, torch.stack(buf)


def find_examples(
    model: nn.Module,
    layer: str,
    filters: Sequence[int],
    images: str | os.PathLike | Sequence[Path],
    *,
    k: int = 9,
    batch_size: int = 16,
    size: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> ExampleScan:
    """Stream a folder of images through ``model`` and keep, per filter, the ``k`` images whose
    maximum activation is largest, each cropped at the receptive field of its strongest position.

    One pass serves every filter in ``filters``. Unreadable files are skipped and reported.

    Args:
        model: the network.
        layer: a layer with a spatial output.
        filters: the filters to rank images for.
        images: a folder (searched recursively) or a list of files.
        k: examples per filter.
        batch_size: images per forward pass.
        size: input side; default: the model's.
        progress: called with the number of files consumed after each batch.

    Returns:
        An :class:`ExampleScan` with examples best first.
    """
    paths = image_files(images) if isinstance(images, str | os.PathLike) else list(images)
    if not paths:
        raise KernelvizError(f"no image files found in {images}")
    side = size or model_meta(model).input_size
    meta = model_meta(model)
    device = model_device(model)
    box = receptive_box(model, layer, side)
    heaps: dict[int, list[tuple[float, int, Path, tuple[int, int]]]] = {f: [] for f in filters}
    skipped: list[tuple[Path, str]] = []
    counter = 0
    index = torch.tensor(list(filters))
    for batch_paths, batch in _batches(paths, side, batch_size, skipped):
        act = activations(model, meta.normalize(batch.to(device)), layer)[layer].float().cpu()  # (B, C, H, W)
        if act.dim() != 4:
            raise KernelvizError(f"layer {layer!r} has no spatial output to find examples in")
        if int(index.max()) >= act.shape[1]:
            raise out_of_range("filter", int(index.max()), act.shape[1], f"layer {layer!r}")
        sel = act[:, index].flatten(2)  # (B, F, H*W)
        values, where = sel.max(2)  # (B, F)
        width = act.shape[-1]
        for b, path in enumerate(batch_paths):
            for j, f in enumerate(filters):
                item = (float(values[b, j]), -counter, path, divmod(int(where[b, j]), width))
                if len(heaps[f]) < k:
                    heapq.heappush(heaps[f], item)
                else:
                    heapq.heappushpop(heaps[f], item)
            counter += 1
        if progress is not None:
            progress(len(batch_paths))
    if counter == 0:
        named = "; ".join(f"{p.name} ({why.rpartition(': ')[2] or why})" for p, why in skipped[:3])
        more = f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""
        raise KernelvizError(f"none of the {len(skipped)} image file(s) in {images} could be read: {named}{more}")
    examples: dict[int, list[Example]] = {}
    for f, heap in heaps.items():
        found = []
        for value, _, path, pos in sorted(heap, reverse=True):
            x0, y0, x1, y1 = box(*pos)
            crop = load_image(path, side)[:, y0:y1, x0:x1]
            found.append(Example(path, value, pos, (x0, y0, x1, y1), crop))
        examples[f] = found
    return ExampleScan(examples=examples, scanned=counter, skipped=skipped)
