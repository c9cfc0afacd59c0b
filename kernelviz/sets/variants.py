"""A filter's variants in the atlas folder: its picture made another way (another seed, plain pixels, MACO, finer
detail, more steps, a diversity batch, the negative picture), kept under ``<layer>/variants/`` beside the atlas's
own pictures (:class:`~kernelviz.sets.folder.AtlasFolder`), each with its record.

The negative variant is the one an atlas made with ``negative=True`` writes too (:func:`~kernelviz.sets.atlas.atlas`):
an atlas's negative picture, made in its batch, is kept as it is, never replaced by a variant made alone.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ..core.capture import activations
from ..core.models import model_device, model_meta
from ..core.progress import OnProgress
from ..errors import NotFoundError
from ..files.write import save_figure, save_json, save_png
from ..optvis.objectives import channel, diversity
from ..optvis.render import visualize
from ..optvis.settings import OptimSettings
from .folder import AtlasFolder

__all__ = ["VARIANTS", "variant_settings", "write_variant"]

#: The variants of a filter's picture: name -> what it changes, in words.
VARIANTS = {
    "seed": "another random start (seed + 1)",
    "pixel": "the article's plain pixel image",
    "maco": "MACO (phase only, the spectrum of natural images)",
    "fine": "every pixel free (detail 1, decay 1: finer texture)",
    "steps": "twice the steps",
    "diversity": "a batch of 4 pushed apart (Gram-matrix diversity)",
    "negative": "the most inhibiting picture (minimized: what it responds to least)",
}


def variant_settings(kind: str, settings: OptimSettings) -> OptimSettings:
    """The settings variant ``kind`` is made with, from the atlas's ``settings``.

    Raises:
        NotFoundError: an unknown variant (with the variants there are).
    """
    if kind not in VARIANTS:
        raise NotFoundError(f"unknown variant {kind!r}: choose from {', '.join(VARIANTS)}")
    base = settings.with_(batch_size=None)
    return {
        "seed": base.with_(seed=base.seed + 1),
        "pixel": base.with_(param="pixel"),
        "maco": base.with_(param="maco"),
        "fine": base.with_(detail=1.0, decay=1.0),
        "steps": base.with_(steps=2 * base.steps),
    }.get(kind, base)


def write_variant(
    model: nn.Module,
    root: Path,
    layer: str,
    n: int,
    kind: str,
    settings: OptimSettings,
    *,
    progress: OnProgress | None = None,
) -> Path:
    """Make variant ``kind`` of filter ``n`` of ``layer`` and write its PNG and record (atomically, the record last)
    under the atlas folder ``root``; returns the PNG's path.

    ``diversity`` writes the batch of 4 as one sheet, its record holding each image's value; ``negative`` minimizes
    (its record's ``final_value`` is the mean activation reached), as :func:`~kernelviz.sets.atlas.write_filters`
    does for an atlas made with ``negative=True``.
    """
    from ..plot.grid import plot_grid

    changed = variant_settings(kind, settings)
    meta = model_meta(model)
    folder = AtlasFolder(Path(root))
    path = folder.variant(layer, n, kind)
    unit = channel(layer, n)
    if kind == "diversity":
        main = visualize(model, unit, **changed.visualize_kwargs())
        weight = 0.5 * abs(float(main.final[0])) or 1.0
        result = visualize(model, unit + weight * diversity(layer), batch=4, progress=progress,
                           **changed.visualize_kwargs())  # fmt: skip
        labels = [f"{float(v):.3g}" for v in result.final]
        save_figure(plot_grid(list(result.images), labels, title=f"{layer}:{n} diversity x{weight:.3g}"), path)
        record = result.record(0, meta, layer=layer, filter=n, variant=kind, diversity_weight=weight,
                               batch_final_values=[float(v) for v in result.final])  # fmt: skip
        save_json(record, path.with_suffix(".json"))
        return path
    result = visualize(model, -unit if kind == "negative" else unit, progress=progress, **changed.visualize_kwargs())
    extra: dict[str, float] = {}
    if kind == "negative":  # the record gives the activation reached and its minimum, as --negative does
        result = result.minimized()
        x = meta.normalize(result.images.to(model_device(model)))
        extra["min_activation"] = float(activations(model, x, [layer])[layer][0, n].amin())
    save_png(result.images[0], path)
    save_json(result.record(0, meta, layer=layer, filter=n, variant=kind, **extra), path.with_suffix(".json"))
    return path
