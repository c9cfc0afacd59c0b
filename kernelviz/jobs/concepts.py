"""Jobs for a layer's concepts: find them and write their folder; draw where they are in new images.

A concepts folder holds ``concepts.json`` (per concept its direction, share, importance, patches and picture), per
concept ``concept_KK.png`` (the synthesized picture beside its strongest patches) and ``concept_KK_picture.png``
with the picture's own JSON record (as a filter picture has), the patches as JPEG crops under ``patches/``, and
the contact sheet ``concepts.png``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.models import model_meta
from ..core.progress import OnProgress, renamed
from ..errors import KernelvizError
from ..files.images import load_image
from ..files.records import provenance
from ..files.write import save_figure, save_jpeg, save_json, save_npy, write_each
from ..optvis.objectives import direction
from ..optvis.render import VisResult, filter_seed, visualize
from ..optvis.settings import DEFAULTS, OptimSettings
from ..sets.concepts import concepts_file, read_concepts
from ..sets.examples import CROP_SIDE
from ..units.concepts import Concepts, concept_maps, describe, error_reading, find_concepts
from ..units.examples import receptive_box
from .outputs import QUIET, Log, check_folder, check_writable, unique_stems

__all__ = [
    "ConceptsReport",
    "SavedConcepts",
    "concept_maps_figure",
    "export_concept_maps",
    "export_concepts",
    "load_concepts",
    "patch_crops",
    "render_concepts",
]

#: The pictures maximize dot x cos^2 along each direction (:func:`~kernelviz.objectives.direction`): on
#: EfficientNet-Lite0's head, the other concepts' codes in a picture drop from 22% of its own to 10% (plain dot
#: product), its projection on its direction staying 1.4x the best natural patch's (median of 8).
COSINE_POWER = 2.0

#: Patches drawn per concept on the sheets (``concepts.json`` lists all that were kept).
SHEET_PATCHES = 5


@dataclass
class ConceptsReport:
    """What :func:`export_concepts` found and wrote."""

    folder: Path
    concepts: Concepts
    pictures: torch.Tensor
    picture_codes: torch.Tensor
    interrupted: bool


def render_concepts(
    model: nn.Module,
    concepts: Concepts,
    settings: OptimSettings = DEFAULTS,
    *,
    progress: OnProgress | None = None,
    on_batch: Callable[[list[int], VisResult], None] | None = None,
) -> tuple[torch.Tensor, list[VisResult], bool]:
    """The synthesized picture of each concept's direction (the optimizer's defaults, as a filter picture; image
    ``k`` starts from the seed of filter ``k``).

    Returns:
        ``(pictures (K, 3, H, W), results, interrupted)``.
    """
    settings = settings.for_model(model_meta(model).input_size)
    chunk = settings.batch_size or 8
    pictures, results = [], []
    for start in range(0, concepts.k, chunk):
        group = list(range(start, min(start + chunk, concepts.k)))
        result = visualize(
            model,
            direction(concepts.layer, concepts.directions[group], cosine_power=COSINE_POWER),
            batch=len(group),
            image_seeds=[filter_seed(settings.seed, j) for j in group],
            progress=progress,
            **settings.visualize_kwargs(),
        )
        results.append(result)
        pictures.append(result.images)
        if on_batch is not None:
            on_batch(group, result)
        if result.interrupted:
            return torch.cat(pictures), results, True
    return torch.cat(pictures), results, False


def _code_box(heat: torch.Tensor, at: tuple[int, int], grid: tuple[int, int]) -> tuple[int, int, int, int]:
    """The box ``(x0, y0, x1, y1)`` of the region of ``heat`` ``(S, S)`` (a concept's code map upsampled to the
    input) holding the patch's position ``at`` of the layer's ``grid`` where the map is at least half its value
    there: where the concept is, which a deep layer's receptive field (often the whole image) does not say."""
    from scipy import ndimage

    side = heat.shape[-1]
    y = min(side - 1, int((at[0] + 0.5) * side / grid[0]))
    x = min(side - 1, int((at[1] + 0.5) * side / grid[1]))
    labels, _ = ndimage.label((heat >= 0.5 * heat[y, x]).numpy())
    ys, xs = (labels == labels[y, x]).nonzero()
    if labels[y, x] == 0 or not len(ys):
        return 0, 0, side, side
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def patch_crops(
    model: nn.Module, concepts: Concepts, batch_size: int = 8
) -> list[list[tuple[torch.Tensor, tuple[int, int, int, int]]]]:
    """Per concept, each patch's crop ``(3, h, w)`` and its box: the receptive field of its position, narrowed to
    the region where the concept's code is at least half its value there (:func:`_code_box`)."""
    side = concepts.size
    box = receptive_box(model, concepts.layer, side) if concepts.grid != (1, 1) else None
    files = list(dict.fromkeys(p.path for found in concepts.patches for p in found))
    images = {path: load_image(path, side) for path in files}
    heat: dict[Path, torch.Tensor] = {}
    for start in range(0, len(files), batch_size):
        chunk = files[start : start + batch_size]
        maps = concept_maps(model, concepts.layer, concepts.directions, torch.stack([images[f] for f in chunk]))
        heat.update(zip(chunk, maps, strict=True))  # (K, side, side) each
    crops = []
    for j, found in enumerate(concepts.patches):
        row = []
        for patch in found:
            x0, y0, x1, y1 = box(*patch.position) if box is not None else (0, 0, side, side)
            if box is not None:
                a0, b0, a1, b1 = _code_box(heat[patch.path][j], patch.position, concepts.grid)
                if min(a1, x1) - max(a0, x0) >= 8 and min(b1, y1) - max(b0, y0) >= 8:
                    x0, y0, x1, y1 = max(a0, x0), max(b0, y0), min(a1, x1), min(b1, y1)
            row.append((images[patch.path][:, y0:y1, x0:x1], (x0, y0, x1, y1)))
        crops.append(row)
    return crops


def _label(concepts: Concepts, j: int) -> str:
    importance = "" if concepts.importance is None else f"\nimportance {float(concepts.importance[j]):+.3g}"
    return f"concept {j}: {100 * float(concepts.share[j]):.1f}%{importance}"


def export_concepts(
    model: nn.Module,
    layer: str,
    images: str | os.PathLike,
    k: int,
    output: Path,
    settings: OptimSettings = DEFAULTS,
    *,
    class_name: str | None = None,
    target: int | str | None = None,
    samples: int = 16384,
    top: int = 9,
    workers: int | None = None,
    progress: OnProgress | None = None,
    log: Log = QUIET,
) -> ConceptsReport:
    """Find ``k`` concepts of ``layer`` over ``images`` (:func:`~kernelviz.units.concepts.find_concepts`) and
    write the concepts folder ``output`` (see the module's description).

    Args:
        settings: the pictures' optimization settings (their ``seed`` also seeds the sampling and the fit).
        progress: reports the stages of finding the concepts (``"sampling"``, ``"coding"``, ``"importance"``),
            then stage ``"pictures"`` (optimizer steps) while synthesizing their pictures.
    """
    from ..plot.concepts import plot_concepts

    meta = model_meta(model)
    settings = settings.for_model(meta.input_size)
    side = int(settings.size or meta.input_size)
    check_folder(output)
    concepts = find_concepts(
        model, layer, images, k, class_name=class_name, target=target, samples=samples, seed=settings.seed,
        top=top, batch_size=None, workers=workers, size=side, progress=progress,
    )  # fmt: skip
    reading = error_reading(concepts.error, concepts.k, class_name is None and concepts.scan is not None
                            and concepts.scan.classes is not None)  # fmt: skip
    log.info(f"{concepts.k} concepts of {layer} from {concepts.samples} positions of {len(concepts.files)} images")
    log.info(reading)
    stems = [f"concept_{j:02d}" for j in range(concepts.k)]

    def save_pictures(group: list[int], result: VisResult) -> None:
        for i, j in enumerate(group):
            result.save(output / f"{stems[j]}_picture.png", i, meta, layer=layer, concept=j,
                        objective=f"direction({layer}: concept {j}, cos^{COSINE_POWER:g})")  # fmt: skip

    pictures, results, interrupted = render_concepts(
        model, concepts, settings, progress=renamed(progress, "pictures"), on_batch=save_pictures
    )
    shown = len(pictures)
    picture_codes = concept_maps(model, layer, concepts.directions, pictures, upsample=False).amax((2, 3))
    crops = patch_crops(model, concepts)
    entries = []
    for j in range(concepts.k):
        best = concepts.patches[j][0].value if concepts.patches[j] else math.nan
        code = float(picture_codes[j, j]) if j < shown else math.nan
        patch_entries = []
        for p, (patch, (crop, box)) in enumerate(zip(concepts.patches[j], crops[j], strict=True)):
            name = f"patches/{j:02d}_{p}.jpg"
            save_jpeg(crop, output / name, CROP_SIDE)
            patch_entries.append(
                {"image": str(patch.path), "code": patch.value, "position": list(patch.position), "box": list(box),
                 "crop": name}
            )  # fmt: skip
        entry: dict[str, Any] = {
            "index": j,
            "direction": [round(float(v), 7) for v in concepts.directions[j]],
            "share": float(concepts.share[j]),
            "importance": None if concepts.importance is None else float(concepts.importance[j]),
            "picture": f"{stems[j]}_picture.png" if j < shown else None,
            "figure": f"{stems[j]}.png" if j < shown else None,
            "picture_code": code,
            "best_patch_code": best,
            "picture_to_best_patch": code / best if best > 0 else math.nan,
            "patches": patch_entries,
        }
        if concepts.scan is not None and concepts.scan.classes is not None:
            entry["classes"] = [[c, v] for c, v in concepts.scan.top_classes(layer, j, 5)]
        entries.append(entry)
    title_head = f"{meta.name} ({meta.weights}) {layer}"
    images_note = f"{len(concepts.files)} images" + (f" of class {class_name}" if class_name else "")
    for j in range(shown):
        labels = [f"{(p.caption or p.path.name)[:18]}\ncode {p.value:.3g}" for p in concepts.patches[j]]
        fig = plot_concepts(pictures[j : j + 1], [[c for c, _ in crops[j]]], [_label(concepts, j)], [labels],
                            title=f"{title_head} concept {j} of {concepts.k}: picture, strongest patches",
                            per_row=min(SHEET_PATCHES, max(1, len(labels))))  # fmt: skip
        save_figure(fig, output / f"{stems[j]}.png")
    sheet = output / "concepts.png"
    patch_labels = [
        [f"{(p.caption or p.path.name)[:18]}\n{p.value:.3g}" for p in concepts.patches[j]] for j in range(shown)
    ]
    fig = plot_concepts(
        pictures,
        [[c for c, _ in crops[j]][:SHEET_PATCHES] for j in range(shown)],
        [_label(concepts, j) for j in range(shown)],
        [labels[:SHEET_PATCHES] for labels in patch_labels],
        title=f"{title_head}: {concepts.k} concepts (NMF) over {images_note}, each with its share of the "
        f"reconstruction and importance for the {concepts.target_name}\n{reading}",
        per_row=SHEET_PATCHES,
    )
    record = provenance(
        meta,
        layer=layer,
        **describe(concepts),
        size=side,
        grid=list(concepts.grid),
        source=str(images),
        class_name=class_name,
        skipped=[[str(p), why] for p, why in (concepts.scan.skipped if concepts.scan else [])],
        concepts=entries,
        settings=results[0].record(0)["settings"] if results else {},
        interrupted=interrupted,
    )
    write_each(partial(save_figure, fig, sheet), partial(save_json, record, output / "concepts.json"))
    log.info(f"wrote {output / 'concepts.json'}, {sheet} and {shown} concept pictures")
    if interrupted:
        log.warn(f"interrupted: {shown} of {concepts.k} pictures drawn; concepts.json has every concept")
    return ConceptsReport(output, concepts, pictures, picture_codes, interrupted)


@dataclass(frozen=True)
class SavedConcepts:
    """What a ``concepts.json`` says: enough to find its concepts in new images."""

    model: str
    layer: str
    size: int
    directions: torch.Tensor
    labels: list[str]
    path: Path

    @classmethod
    def from_record(cls, data: dict[str, Any], path: Path) -> SavedConcepts:
        """From a ``concepts.json``'s content already checked (:func:`~kernelviz.sets.concepts.read_concepts`)."""
        entries = data["concepts"]
        directions = torch.tensor([e["direction"] for e in entries], dtype=torch.float32)  # (K, C)
        labels = [f"concept {e['index']} ({100 * e['share']:.0f}%)" for e in entries]
        return cls(data["model"], data["layer"], data["size"], directions, labels, path)


def load_concepts(path: str | os.PathLike) -> SavedConcepts:
    """Read a ``concepts.json`` written by :func:`export_concepts` (or its folder).

    Raises:
        NotFoundError: no such file.
        KernelvizError: not JSON, or a field missing, of the wrong type or out of range
            (:func:`~kernelviz.sets.concepts.read_concepts`).
    """
    return SavedConcepts.from_record(read_concepts(path), concepts_file(path))  # every field checked


def concept_maps_figure(
    model: nn.Module, saved: SavedConcepts, image: torch.Tensor, name: str, *, alpha: float = 0.5
) -> tuple[Any, torch.Tensor]:
    """Where each of ``saved``'s concepts is in ``image`` ``(3, S, S)`` (named ``name`` in the title): the image,
    then one overlay per concept on one color scale (the codes are in the same units).

    Returns:
        ``(figure, codes (K, h, w))``.
    """
    from ..plot.heatmaps import plot_heatmap

    side = image.shape[-1]
    codes = concept_maps(model, saved.layer, saved.directions, image[None], upsample=False)[0]  # (K, h, w)
    heat = torch.nn.functional.interpolate(codes[None], size=(side, side), mode="bilinear")[0]
    fig = plot_heatmap(image[None], [heat[j][None] for j in range(len(heat))], titles=saved.labels,
                       scale="shared", alpha=alpha, groups=["concept code"] * len(heat),
                       title=f"{model_meta(model).name} {saved.layer}: where each concept is in {name}")  # fmt: skip
    return fig, codes


def export_concept_maps(
    model: nn.Module,
    images: Sequence[Path],
    concepts_file: str | os.PathLike,
    *,
    output: Path = Path("."),
    alpha: float = 0.5,
    size: int | None = None,
    log: Log = QUIET,
) -> list[Path]:
    """Where each concept of ``concepts_file`` is in each image: per image ``STEM_concepts.png`` (the image, then
    one overlay per concept, on one color scale: the codes are in the same units), the codes ``(K, h, w)`` as
    ``.npy`` and a JSON sidecar with each concept's largest and mean code.
    """
    saved = load_concepts(concepts_file)
    meta = model_meta(model)
    if saved.model != meta.name:
        log.warn(f"warning: {saved.path} was made with {saved.model}, not {meta.name}")
    side = size or saved.size
    paths = [output / f"{stem}_concepts.png" for stem in unique_stems(list(images))]
    check_writable(paths)
    for image_path, path in zip(images, paths, strict=True):
        fig, codes = concept_maps_figure(model, saved, load_image(image_path, side), image_path.name, alpha=alpha)
        record = provenance(
            meta,
            image=str(image_path),
            layer=saved.layer,
            concepts=str(saved.path),
            size=side,
            max_code=[float(v) for v in codes.amax((1, 2))],
            mean_code=[float(v) for v in codes.mean((1, 2))],
        )
        write_each(
            partial(save_figure, fig, path),
            partial(save_npy, codes, path.with_suffix(".npy")),
            partial(save_json, record, path.with_suffix(".json")),
        )
        strongest = int(codes.amax((1, 2)).argmax())
        log.info(f"wrote {path} (strongest: {saved.labels[strongest]})")
    if not paths:
        raise KernelvizError("no images given")
    return paths
