"""Jobs that make pictures seeded by a photo (:mod:`kernelviz.optvis.photo`) and write them with their records."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.models import model_meta, model_slug
from ..core.progress import OnProgress, renamed
from ..errors import KernelvizError
from ..files.images import load_image
from ..optvis.photo import accentuate, caricature_of, dream, photo_activation
from ..optvis.render import VisResult
from ..optvis.settings import OptimSettings
from .outputs import QUIET, Log, check_writable, output_paths

__all__ = ["KINDS", "photo_figure", "photo_pictures", "photo_result", "photo_summary"]

#: The kinds of photo-seeded picture, each with what it shows.
KINDS = {
    "caricature": "what the layer keeps of the photo (from noise, matched to its activation)",
    "dream": "the photo with what the layer sees in it made stronger (DeepDream)",
    "accentuate": "the photo changed so that the filter responds more, kept close to it (feature accentuation)",
}


def photo_result(
    model: nn.Module,
    kind: str,
    layer: str,
    image: torch.Tensor,
    settings: OptimSettings,
    *,
    filters: Sequence[int] = (),
    power: float = 1.0,
    reg_layer: str | None = None,
    weight: float = 1.0,
    progress: OnProgress | None = None,
) -> tuple[VisResult, list[dict[str, Any]]]:
    """Make the picture(s) of ``kind`` (a key of :data:`KINDS`) of ``layer`` from ``image`` ``(3, S, S)`` at
    ``settings`` (their size is set to ``S``): one per filter for ``accentuate``.

    Returns:
        The result and, per picture, what its record says of it: ``kind``, ``layer``, ``rms_from_photo`` (pixels in
        [0, 1]), and ``cosine_to_photo`` (the layer's activation against the photo's) or, for an accentuation,
        ``filter``, ``activation`` and ``photo_activation`` (the filter's mean activation on the picture and the
        photo).
    """
    if kind not in KINDS:
        raise KernelvizError(f"unknown kind of photo picture {kind!r}: choose from {', '.join(KINDS)}")
    if kind == "accentuate" and not filters:
        raise KernelvizError("an accentuation needs at least one filter")
    settings = settings.with_(size=int(image.shape[-1]))
    result: VisResult
    if kind == "caricature":
        result = caricature_of(model, layer, image, power=power, settings=settings, progress=progress)
    elif kind == "dream":
        result = dream(model, layer, image, settings=settings, progress=progress)
    else:
        result = accentuate(model, layer, list(filters), image, reg_layer=reg_layer, weight=weight,
                            settings=settings, progress=progress)  # fmt: skip
    on_photo = photo_activation(model, layer, image)
    described = []
    for i, picture in enumerate(result.images):
        rms = float(((picture - image) ** 2).mean().sqrt())
        fields: dict[str, Any] = {"kind": kind, "layer": layer, "rms_from_photo": rms}
        reached = photo_activation(model, layer, picture)
        if kind == "accentuate":
            n = list(filters)[i]
            fields.update(filter=n, activation=float(reached[n].mean()), photo_activation=float(on_photo[n].mean()))
        else:
            cos = float((reached.flatten() @ on_photo.flatten()) / (reached.norm() * on_photo.norm()).clamp(min=1e-8))
            fields.update(cosine_to_photo=cos)
        described.append(fields)
    return result, described


def photo_pictures(
    model: nn.Module,
    kind: str,
    layer: str,
    photo: Path,
    settings: OptimSettings,
    *,
    filters: Sequence[int] = (),
    output: Path | None = None,
    power: float = 1.0,
    reg_layer: str | None = None,
    weight: float = 1.0,
    progress: OnProgress | None = None,
    log: Log = QUIET,
) -> list[Path]:
    """One picture of ``kind`` (a key of :data:`KINDS`) of ``layer`` seeded by ``photo`` (one per filter for
    ``accentuate``), each a PNG with its JSON record: the photo, the settings, and :func:`photo_result`'s fields.
    Returns the PNG paths."""
    if kind not in KINDS:
        raise KernelvizError(f"unknown kind of photo picture {kind!r}: choose from {', '.join(KINDS)}")
    meta = model_meta(model)
    side = int(settings.for_model(meta.input_size).size or meta.input_size)
    image = load_image(photo, side)  # (3, S, S), a clear error for an unreadable file
    stem = f"{model_slug(meta.name)}_{layer}_{photo.stem}_{kind}"
    names = [f"{stem}_{n:04d}" for n in filters] if kind == "accentuate" else [stem]
    paths = output_paths(output, names)
    check_writable(paths)
    result, described = photo_result(model, kind, layer, image, settings, filters=filters, power=power,
                                     reg_layer=reg_layer, weight=weight, progress=progress)  # fmt: skip
    for i, (path, fields) in enumerate(zip(paths, described, strict=True)):
        result.save(path, i, meta, **{**fields, "photo": str(photo)})
        log.info(f"wrote {path} ({photo_summary(fields)})")
    return paths


def photo_summary(fields: dict[str, Any]) -> str:
    """One line on a photo picture from :func:`photo_result`'s fields."""
    rms = f"{fields['rms_from_photo']:.3f} RMS from the photo"
    if "activation" in fields:
        reached, start = fields["activation"], fields["photo_activation"]
        return f"filter {fields['filter']}: mean activation {reached:.4g}, photo's {start:.4g}; {rms}"
    return f"cosine to the photo's activation {fields['cosine_to_photo']:.3f}; {rms}"


def photo_figure(
    model: nn.Module,
    kind: str,
    layers: Sequence[str],
    image: torch.Tensor,
    settings: OptimSettings,
    *,
    filter: int | None = None,
    title: str = "",
    progress: OnProgress | None = None,
) -> Any:
    """The picture(s) of ``kind`` made from ``image`` ``(3, S, S)`` beside it, each labelled with how it relates to
    it: one per layer of ``layers`` (a caricature or DeepDream at several depths, early to late), or filter
    ``filter`` of the one layer accentuated (the ratio of its mean activation to the photo's and the distance).

    Args:
        settings: the optimization settings (the size is the image's).
        progress: reports each picture's optimization, stage ``"part i/n"`` when there are several.
    """
    from ..plot.grid import plot_grid

    if kind == "accentuate" and (filter is None or len(layers) != 1):
        raise KernelvizError("an accentuation needs one layer and a filter")
    tiles, labels = [image], ["the image"]
    for i, name in enumerate(layers):
        stage = f"part {i + 1}/{len(layers)}" if len(layers) > 1 else "optimize"
        filters = [filter] if kind == "accentuate" and filter is not None else []
        result, (fields,) = photo_result(model, kind, name, image, settings, filters=filters,
                                         progress=renamed(progress, stage))  # fmt: skip
        tiles.append(result.images[0])
        if kind == "accentuate":
            ratio = fields["activation"] / fields["photo_activation"] if fields["photo_activation"] else 0.0
            labels[0] = f"the image\n{name}:{filter} mean {fields['photo_activation']:.3g}"
            labels.append(f"accentuated: mean {fields['activation']:.3g} (x{ratio:.2f})\n"
                          f"RMS {fields['rms_from_photo']:.3f} from the image")  # fmt: skip
        else:
            labels.append(f"{name}\ncosine {fields['cosine_to_photo']:.2f} to the image's")
    return plot_grid(tiles, labels, title=title, cols=len(tiles), tile_inches=2.2)
