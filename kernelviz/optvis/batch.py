"""Batches: every requested filter of a layer optimized several at a time, each from its own start."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core.activations import Bounds, bounds
from ..core.capture import activations
from ..core.layers import choose_filters, list_layers
from ..core.models import ModelMeta, model_device, model_meta
from ..core.names import INPUT_SUFFIX, get_module, resolve_layer
from ..errors import KernelvizError
from .objectives import channel
from .render import VisResult, filter_seed, visualize
from .settings import DEFAULTS, OptimSettings

__all__ = ["GridResult", "auto_batch_size", "capped", "layer_grid"]


def capped(model: nn.Module, layer: str) -> Bounds | None:
    """The bounds of ``layer`` when it is an activation with a cap it is flat past (ReLU6's 6, a Hardtanh's max):
    its units' pictures then climb its pre-activation (``LAYER:input``), which the cap does not stop; ``None``
    otherwise (a ReLU's floor is handled by the redirected gradient, :mod:`kernelviz.optvis.relu`)."""
    found = bounds(get_module(model, resolve_layer(model, layer)))
    return found if found.flat_high else None


def _past_the_cap(model: nn.Module, layer: str, group: Sequence[int], result: VisResult, cap: Bounds) -> VisResult:
    """A result that climbed a capped unit's pre-activation, told as the unit's: ``final`` is its mean activation
    (capped), each record also holds ``pre_activation`` (the mean reached by what was climbed) and ``at_cap``
    (whether the picture's largest activation sits at the cap), and says what was climbed."""
    x = model_meta(model).normalize(result.images.to(model_device(model)))
    maps = activations(model, x, [layer])[layer].float().cpu()  # (B, C, h, w) after the activation
    rows = torch.arange(len(group))
    unit = maps[rows, torch.tensor(list(group))].flatten(1)  # (B, h*w): each picture's own unit
    reached = unit.amax(1)
    return replace(
        result,
        final=unit.mean(1),
        per_image={**result.per_image, "pre_activation": result.final, "at_cap": (reached >= float(cap.high or 0))},
        extra={**result.extra, "climbed": f"the pre-activation ({layer}{INPUT_SUFFIX}): the cap {cap.high:g} of the "
               "activation stops no gradient there"},
    )  # fmt: skip


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
        dead: ``(N,)`` filters the optimizer could not raise from noise (the objective stayed 0 at every step).
        results: the :class:`~kernelviz.optvis.render.VisResult` of each batch, with ``(batch, index)`` per filter.
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

    def record(self, i: int, meta: ModelMeta | None = None, **fields: Any) -> dict[str, Any]:
        """The JSON record of the ``i``-th filter (see :meth:`VisResult.record`)."""
        batch, index = self.where[i]
        return self.results[batch].record(index, meta, **fields)


def layer_grid(
    model: nn.Module,
    layer: str,
    filters: Sequence[int] | None = None,
    settings: OptimSettings | None = None,
    *,
    on_batch: Callable[[list[int], VisResult], None] | None = None,
    negative: bool = False,
    **kwargs: Any,
) -> GridResult:
    """Synthesize the image of each filter of ``layer``, several filters per optimization.

    Each filter's image starts from its own seed (:func:`~kernelviz.optvis.render.filter_seed`), so it
    does not depend on which filters share its batch.

    Args:
        model: the network.
        layer: a conv (or conv-activation) layer name.
        filters: indices; default: every filter of the layer.
        settings: the optimization settings (default :data:`~kernelviz.optvis.settings.DEFAULTS`);
            ``batch_size`` is the number of filters per optimization (default: :func:`auto_batch_size`).
        on_batch: called after each batch with its filters and result (save as you go).
        negative: minimize instead: the picture each filter responds to least (most negative mean activation).
            ``final`` and ``history`` are then the mean activation itself (minus the objective maximized), and each
            result's record says ``"negative": true``.
        **kwargs: settings to change (``steps=64``, ``batch_size=4``...) and other arguments of
            :func:`~kernelviz.visualize` (``init``, ``progress``, ``mean``, ``std``...).

    Returns:
        A :class:`GridResult`. Ctrl-C stops after the current batch's partial result.
    """
    changes = {k: kwargs.pop(k) for k in OptimSettings.names() if k in kwargs}
    settings = (settings or DEFAULTS).with_(**changes).for_model(model_meta(model).input_size)
    size = int(settings.size or 0)
    filters = choose_filters(model, layer, filters, size)
    if not filters:
        raise KernelvizError("no filters to draw")
    device = model_device(model)
    chunk = settings.batch_size or auto_batch_size(model, layer, size, device, len(filters))
    images, finals, dead, results = [], [], [], []
    where: list[tuple[int, int]] = []
    interrupted = False
    cap = capped(model, layer)
    target = f"{layer}{INPUT_SUFFIX}" if cap is not None else layer  # past the cap: its pre-activation climbs
    for start in range(0, len(filters), chunk):
        group = filters[start : start + chunk]
        unit = channel(target, group if len(group) > 1 else group[0])
        result = visualize(
            model,
            -unit if negative else unit,
            batch=len(group),
            image_seeds=[filter_seed(settings.seed, n) for n in group],
            **settings.visualize_kwargs(),
            **kwargs,
        )
        if negative:  # report the activation reached, not the objective maximized
            result = result.minimized()
        if cap is not None:
            result = _past_the_cap(model, layer, group, result, cap)
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
    shared = dict(results[0].settings)
    shared.pop("image_seeds", None)
    shared["batch"] = chunk
    return GridResult(
        images=torch.cat(images),
        filters=filters,
        final=torch.cat(finals),
        dead=torch.cat(dead),
        results=results,
        where=where,
        settings=shared,
        interrupted=interrupted,
    )
