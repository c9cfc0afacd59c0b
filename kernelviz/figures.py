"""Layer grids: every requested filter of a layer optimized in batches, on one contact sheet."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from .errors import KernelvizError
from .layers import check_filters, list_layers, resolve_layer
from .models import model_device, model_meta
from .objectives import channel
from .render import VisResult, filter_seed, visualize

__all__ = ["GridResult", "auto_batch_size", "layer_grid", "plot_grid"]


def auto_batch_size(model: nn.Module, layer: str, size: int, device: torch.device, count: int) -> int:
    """How many filters to optimize at once.

    CPU: 8 (per image-step this is as fast as any larger batch here, see
    ``benchmarks/README.md``, and keeps memory modest). GPU: as many as fit in
    60% of the free memory, estimating one image's need as three times the
    activations up to ``layer`` (forward tensors, their gradients, workspace).
    """
    if device.type != "cuda":
        return min(count, 8)
    path = resolve_layer(model, layer)
    rows = list_layers(model, size, device=device, include=[layer])
    per_image = 0
    for row in rows:
        per_image += int(np.prod(row.shape)) * 4
        if row.path == path:
            break
    free, _ = torch.cuda.mem_get_info(device)
    fits = int(0.6 * free // max(1, 3 * per_image))
    return max(1, min(count, fits, 256))


@dataclass
class GridResult:
    """A layer's filter images.

    Attributes:
        images: ``(N, 3, H, W)`` in ``[0, 1]``, one per filter, in the order asked.
        filters: the filter indices.
        final: ``(N,)`` final objective (mean activation) per filter.
        dead: ``(N,)`` filters that never activated.
        results: the :class:`~kernelviz.render.VisResult` of each batch, with ``(batch, index)`` per filter.
        settings: the optimization settings shared by all filters.
    """

    images: torch.Tensor
    filters: list[int]
    final: torch.Tensor
    dead: torch.Tensor
    results: list[VisResult] = field(repr=False, default_factory=list)
    where: list[tuple[int, int]] = field(repr=False, default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    interrupted: bool = False

    def record(self, i: int, **fields: Any) -> dict[str, Any]:
        """The JSON record of the ``i``-th filter (see :meth:`VisResult.record`)."""
        batch, index = self.where[i]
        return self.results[batch].record(index, **fields)


def layer_grid(
    model: nn.Module,
    layer: str,
    filters: Sequence[int] | None = None,
    *,
    batch_size: int | None = None,
    seed: int = 0,
    on_batch: Callable[[list[int], VisResult], None] | None = None,
    **kwargs: Any,
) -> GridResult:
    """Synthesize the image of each filter of ``layer``, several filters per optimization.

    Each filter's image starts from its own seed (:func:`~kernelviz.render.filter_seed`), so it
    does not depend on which filters share its batch.

    Args:
        model: the network.
        layer: a conv (or conv-activation) layer name.
        filters: indices; default: every filter of the layer.
        batch_size: filters per optimization; default: :func:`auto_batch_size`.
        seed: run seed (transforms and per-filter starts).
        on_batch: called after each batch with its filters and result (save as you go).
        **kwargs: passed to :func:`~kernelviz.render.visualize` (steps, size, lr, param, ...).

    Returns:
        A :class:`GridResult`. Ctrl-C stops after the current batch's partial result.
    """
    meta = model_meta(model)
    size = int(kwargs.get("size") or meta.input_size)
    if filters is None:
        from .layers import layer_channels

        filters = list(range(layer_channels(model, layer, size)))
    filters = list(filters)
    if not filters:
        raise KernelvizError("no filters to draw")
    check_filters(model, layer, filters, size)
    device = model_device(model)
    chunk = batch_size or auto_batch_size(model, layer, size, device, len(filters))
    images, finals, dead, results, where = [], [], [], [], []
    interrupted = False
    for start in range(0, len(filters), chunk):
        group = filters[start : start + chunk]
        result = visualize(
            model,
            channel(layer, group if len(group) > 1 else group[0]),
            batch=len(group),
            seed=seed,
            image_seeds=[filter_seed(seed, n) for n in group],
            **kwargs,
        )
        results.append(result)
        where.extend((len(results) - 1, i) for i in range(len(group)))
        images.append(result.images)
        finals.append(result.final)
        dead.append(result.dead)
        if on_batch is not None:
            on_batch(group, result)
        if result.interrupted:
            interrupted = True
            filters = filters[: start + len(group)]
            break
    settings = dict(results[0].settings)
    settings.pop("image_seeds", None)
    settings["batch"] = chunk
    return GridResult(
        images=torch.cat(images),
        filters=filters,
        final=torch.cat(finals),
        dead=torch.cat(dead),
        results=results,
        where=where,
        settings=settings,
        interrupted=interrupted,
    )


def plot_grid(
    images: torch.Tensor | Sequence[torch.Tensor],
    labels: Sequence[str],
    *,
    title: str | None = None,
    cols: int | None = None,
    tile_inches: float = 1.5,
    fig: Figure | None = None,
) -> Figure:
    """A contact sheet: one tile per image, its label underneath.

    Args:
        images: ``(N, 3, H, W)`` in ``[0, 1]`` (or a list of ``(3, H, W)``).
        labels: one label per tile (e.g. the filter index and its activation).
        title: figure title (model, layer, settings).
        cols: tiles per row; default: about square.
    """
    n = len(images)
    if n != len(labels):
        raise KernelvizError(f"{n} images but {len(labels)} labels")
    if n == 0:
        raise KernelvizError("nothing to draw: no images")
    cols = cols or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    lines = max(label.count("\n") + 1 for label in labels)
    label_inches = 0.15 * lines + 0.05
    fig = fig or plt.figure(figsize=(tile_inches * cols, (tile_inches + label_inches) * rows + (0.5 if title else 0)))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i in range(n):
        ax = axes[i // cols, i % cols]
        ax.imshow(images[i].permute(1, 2, 0).clamp(0, 1).cpu().numpy())
        ax.text(0.5, -0.03, labels[i], transform=ax.transAxes, ha="center", va="top", fontsize=7)
    if title:  # wrapped to the sheet's width (about 11 characters per inch at this size)
        fig.suptitle(textwrap.fill(title, max(40, int(11 * fig.get_figwidth()))), fontsize=9)
    fig.subplots_adjust(wspace=0.05, hspace=1.15 * label_inches / tile_inches)
    return fig
