"""Jobs that optimize images and write them: filter pictures, a layer's contact sheet, dataset examples.

Each job takes a loaded model and the user's choices, checks everything it can before computing
(names, indices, output folders), computes, writes its files with their JSON records, and returns a
report; it speaks only through its :class:`~kernelviz.jobs.outputs.Log`.
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

from ..core.layers import check_filters, choose_filters
from ..core.models import ModelMeta, model_meta, model_slug
from ..core.progress import OnProgress
from ..data.collection import ImagesArg, collection
from ..errors import KernelvizError
from ..explain.maps import feature_maps
from ..files.images import load_image
from ..files.records import provenance
from ..files.write import save_figure, save_json, write_each
from ..optvis.batch import GridResult, layer_grid
from ..optvis.render import VisResult
from ..optvis.settings import DEFAULTS, OptimSettings
from ..units.examples import find_examples, ratio_to_natural
from ..units.trust import PathCheck, collection_check
from .outputs import QUIET, Log, check_writable, output_paths

__all__ = ["ExamplesReport", "GridReport", "dataset_examples", "grid_sheet", "path_check", "synthesize_filters"]


def _filter_stem(model: nn.Module, layer: str, n: int, negative: bool = False) -> str:
    return f"{model_slug(model_meta(model).name)}_{layer}_{n:04d}{'_negative' if negative else ''}"


def _saver(result: VisResult, i: int, meta: ModelMeta, layer: str, n: int, **fields: Any) -> Callable[[Path], Path]:
    """Writes image ``i`` of ``result`` (filter ``n`` of ``layer``) and its record (with ``fields``) to a given
    path."""
    objective = f"{'-' if result.extra.get('negative') else ''}channel({layer}:{n})"

    def save(path: Path) -> Path:
        return result.save(path, i, meta, layer=layer, filter=n, objective=objective, **fields)

    return save


def _notices(log: Log, result: VisResult, i: int, layer: str, n: int) -> None:
    """What a user should know of filter ``n``'s picture: that the optimizer could not raise the unit from noise
    (its picture shows nothing; photos may still drive it), or that the picture sits at its activation's cap."""
    if bool(result.dead[i]):
        log.warn(
            f"warning: filter {n} of {layer}: the optimizer could not raise it from noise (its mean activation stayed "
            "0 at every step), so its picture shows no feature; natural images may still drive it (kernelviz "
            "examples)"
        )
    record = result.record(i)
    if record.get("at_cap"):
        log.info(
            f"note: filter {n} of {layer} reaches its activation's cap in the picture (mean "
            f"{record['final_value']:.4g}); it was climbed past the cap on its pre-activation (mean "
            f"{record['pre_activation']:.4g})"
        )


def path_check(
    model: nn.Module,
    layer: str,
    filters: Sequence[int],
    images: ImagesArg | None,
    *,
    progress: OnProgress | None = None,
    log: Log = QUIET,
    negative: bool = False,
) -> PathCheck | None:
    """The path check of ``filters``' pictures, calibrated on ``images`` (``None``: no check), with a line on how
    it was calibrated (:func:`~kernelviz.units.trust.collection_check`)."""
    if images is None:
        return None
    if negative:
        raise KernelvizError(
            "the path check compares a picture with the natural images that excite its unit most: a negative "
            "(minimized) picture has nothing to be compared with there; drop --check or --negative"
        )
    check = collection_check(model, layer, filters, images, progress=progress)
    cal = check.calibration
    assert cal is not None
    held = "" if cal.held_out_flagged is None else f", {cal.held_out_flagged:.0%} of {cal.held_out} held-out ones"
    log.info(
        f"path check of {layer}: flagged below {cal.threshold:.2f}, which catches {cal.flagged:.0%} of "
        f"{cal.controls} natural controls{held}; natural vs random images told apart with AUROC {cal.auroc:.2f}"
    )
    return check


def _checked(check: PathCheck | None, log: Log, n: int, picture: torch.Tensor) -> dict[str, Any]:
    """The record's ``"trust"`` entry of filter ``n``'s picture, its line on the terminal (a warning when flagged)."""
    if check is None:
        return {}
    trust = check.check(n, picture)
    (log.warn if trust.flagged else log.info)(f"{'warning: ' if trust.flagged else ''}{check.layer}: {trust.message()}")
    return {"trust": trust.to_json()}


@dataclass
class GridReport:
    """What :func:`synthesize_filters` or :func:`grid_sheet` wrote (``paths``) and computed (``grid``)."""

    paths: list[Path]
    grid: GridResult

    @property
    def interrupted(self) -> bool:
        """Whether Ctrl-C stopped the run (what was written holds the state reached)."""
        return self.grid.interrupted


def synthesize_filters(
    model: nn.Module,
    layer: str,
    filters: Sequence[int],
    settings: OptimSettings = DEFAULTS,
    *,
    output: Path | None = None,
    init: str | os.PathLike | None = None,
    progress: OnProgress | None = None,
    log: Log = QUIET,
    negative: bool = False,
    check: ImagesArg | None = None,
) -> GridReport:
    """The picture of each filter of ``layer``: a PNG and its JSON record per filter.

    Args:
        model: the network.
        layer: a layer name.
        filters: filter indices.
        settings: optimization settings.
        output: a ``.png`` file for one filter, or a folder; default: ``./MODEL_LAYER_NNNN.png``.
        init: an image file to start from instead of noise.
        progress: reports each batch's optimization (stage ``"optimize"``).
        log: where to report written files, units not raised from noise, and pictures at an activation's cap.
        negative: the picture each filter responds to least (default name ``..._NNNN_negative.png``; the record
            says ``"negative": true`` and its ``final_value`` is the mean activation reached).
        check: a collection of natural images: path-check each picture against its filter's natural examples
            there (:func:`path_check`), the record's ``"trust"``, a warning for a flagged picture.
    """
    meta = model_meta(model)
    settings = settings.for_model(meta.input_size)
    side = int(settings.size or 0)
    indices = list(filters)
    check_filters(model, layer, indices, side)  # a bad name or index fails before any work
    start = load_image(init, side) if init is not None else None
    paths = output_paths(output, [_filter_stem(model, layer, n, negative) for n in indices])
    check_writable(paths)
    where = dict(zip(indices, paths, strict=True))
    checker = path_check(model, layer, indices, check, progress=progress, log=log, negative=negative)

    def save(group: list[int], result: VisResult) -> None:
        for i, n in enumerate(group):
            trust = _checked(checker, log, n, result.images[i])
            _saver(result, i, meta, layer, n, **trust)(where[n])
            log.info(f"wrote {where[n]} (final mean activation {float(result.final[i]):.4g})")
            if not negative:
                _notices(log, result, i, layer, n)

    grid = layer_grid(model, layer, indices, settings, on_batch=save, init=start, progress=progress, negative=negative)
    return GridReport(paths, grid)


def grid_sheet(
    model: nn.Module,
    layer: str,
    filters: Sequence[int] | None = None,
    settings: OptimSettings = DEFAULTS,
    *,
    output: Path | None = None,
    individual: Path | None = None,
    cols: int | None = None,
    progress: OnProgress | None = None,
    log: Log = QUIET,
    negative: bool = False,
    check: ImagesArg | None = None,
) -> GridReport:
    """Every requested filter of ``layer`` (default: all) on one labelled contact sheet, with its JSON.

    Args:
        output: the sheet's PNG; default ``./MODEL_LAYER_grid.png`` (``_grid_negative.png`` with ``negative``).
        individual: also write each filter's PNG and JSON record into this folder.
        cols: tiles per row; default about square.
        negative: the pictures the filters respond to least (minimized; the sheet and records say so).
        check: a collection of natural images: path-check each picture (:func:`path_check`): the sheet's record
            gets ``"trust": {filter: ...}``, the individual records their ``"trust"``, a flagged tile its mark.
    """
    from ..plot.grid import plot_grid

    meta = model_meta(model)
    settings = settings.for_model(meta.input_size)
    side = int(settings.size or 0)
    indices = choose_filters(model, layer, filters, side)
    path = output_paths(output, [f"{model_slug(meta.name)}_{layer}_grid{'_negative' if negative else ''}"])[0]
    single = {n: f"{_filter_stem(model, layer, n, negative)}.png" for n in indices}
    singles = [individual / single[n] for n in indices] if individual else []
    check_writable([path, *singles])
    checker = path_check(model, layer, indices, check, progress=progress, log=log, negative=negative)
    trusts: dict[int, dict[str, Any]] = {}

    def save(group: list[int], result: VisResult) -> None:
        for i, n in enumerate(group):
            trust = _checked(checker, log, n, result.images[i])
            trusts.update({n: trust["trust"]} if trust else {})
            if individual is not None:
                _saver(result, i, meta, layer, n, **trust)(individual / single[n])
            if not negative:
                _notices(log, result, i, layer, n)

    grid = layer_grid(model, layer, indices, settings, on_batch=save, progress=progress, negative=negative)
    flagged = {n for n, t in trusts.items() if t["flagged"]}
    labels = [
        f"{n}{' (dead)' if d else ''}{' (flagged)' if n in flagged else ''}\n{float(v):.3g}"
        for n, v, d in zip(grid.filters, grid.final, grid.dead, strict=True)
    ]
    title = (
        f"{meta.name} ({meta.weights}) {layer}: "
        f"{'NEGATIVE (minimized) pictures; ' if negative else ''}mean activation under each filter; "
        f"{settings.param} image, {settings.steps} steps, lr {settings.lr}, {side} px, "
        f"transforms {settings.transforms or 'none'}, seed {settings.seed}"
    )
    record = provenance(
        meta,
        layer=layer,
        filters=grid.filters,
        final_values=grid.final.tolist(),
        dead_units=[n for n, d in zip(grid.filters, grid.dead, strict=True) if d],
        settings=grid.settings,
        interrupted=grid.interrupted,
        negative=negative,
        **({"trust": {str(n): t for n, t in trusts.items()}} if checker is not None else {}),
    )
    fig = plot_grid(grid.images, labels, title=title, cols=cols)
    write_each(partial(save_figure, fig, path), partial(save_json, record, path.with_suffix(".json")))
    log.info(f"wrote {path} ({len(grid.filters)} filters)")
    return GridReport([path], grid)


@dataclass
class ExamplesReport:
    """What :func:`dataset_examples` found and wrote."""

    path: Path
    scanned: int
    skipped: int
    synthesized_max: float
    best_natural: float
    ratio: float


def dataset_examples(
    model: nn.Module,
    layer: str,
    filter_index: int,
    images: str | os.PathLike,
    settings: OptimSettings = DEFAULTS,
    *,
    k: int = 9,
    output: Path | None = None,
    workers: int | None = None,
    progress: OnProgress | None = None,
    log: Log = QUIET,
) -> ExamplesReport:
    """The images in a folder that excite a filter most, cropped where it fires, beside its synthesized
    image; the sheet's JSON records the ratio of the synthesized maximum to the best natural one.

    Args:
        images: a folder, scanned recursively, or a text file listing images; unreadable files are skipped and
            counted.
        k: examples to keep.
        output: the sheet's PNG; default ``./MODEL_LAYER_NNNN_examples.png``.
        workers: data-loading processes (default: :func:`~kernelviz.units.scan.default_workers`).
        progress: reports the scan (stage ``"scan"``), then the optimization (``"optimize"``).
    """
    from ..plot.examples import plot_examples

    meta = model_meta(model)
    settings = settings.for_model(meta.input_size)
    side = int(settings.size or 0)
    check_filters(model, layer, [filter_index], side)
    path = output_paths(output, [f"{_filter_stem(model, layer, filter_index)}_examples"])[0]
    check_writable([path])
    files = collection(images)
    scan = find_examples(
        model,
        layer,
        [filter_index],
        files,
        k=k,
        size=side,
        batch_size=settings.batch_size,
        workers=workers,
        progress=progress,
    )
    found = scan.examples[filter_index]
    grid = layer_grid(model, layer, [filter_index], settings.with_(batch_size=1), progress=progress)
    synth_max = float(feature_maps(model, grid.images, layer)[0, filter_index].max())
    best = found[0].value if found else math.nan
    ratio = ratio_to_natural(synth_max, [e.value for e in found])
    title = (
        f"{meta.name} {layer}:{filter_index}: synthesized vs top {len(found)} of {scan.scanned} images "
        f"(ratio {ratio:.2f}x)"
    )
    save_figure(plot_examples(found, grid.images[0], synthesized_value=synth_max, title=title), path)
    save_json(
        provenance(
            meta,
            layer=layer,
            filter=filter_index,
            scanned=scan.scanned,
            skipped=[[str(p), why] for p, why in scan.skipped],
            synthesized_max=synth_max,
            ratio_to_best_natural=ratio,
            examples=[{"image": str(e.path), "max": e.value, "position": e.position, "box": e.box} for e in found],
            settings=grid.settings,
        ),
        path.with_suffix(".json"),
    )
    log.info(f"scanned {scan.scanned} images, skipped {len(scan.skipped)} unreadable")
    log.info(f"synthesized / best natural maximum activation: {synth_max:.4g} / {best:.4g} = {ratio:.2f}x")
    log.info(f"wrote {path}")
    return ExamplesReport(path, scan.scanned, len(scan.skipped), synth_max, best, ratio)
