"""The model atlas: every filter of chosen layers, on disk, resumable, browsable as a static site.

The folder's layout is :class:`~kernelviz.sets.folder.AtlasFolder`'s (settings, manifest, site, per layer the
filters' pictures and records, the contact sheet, the dataset examples).

Every file is written atomically (temporary file, then rename), so a killed run leaves no
truncated file; a rerun skips the filters whose record parses and whose PNG decodes, and redoes the
others (a file damaged after the fact, by a full disk or a copy, is found and replaced). Work is split into shards by
position in the full list of (layer, filter) pairs: ``shard=(i, n)`` for independent processes
(job arrays), or the rank and world size of ``torch.distributed`` under ``torchrun``.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from ..core.distributed import Shard, barrier
from ..core.guard import check_model
from ..core.layers import LayerInfo, asked_layers
from ..core.models import model_device, model_meta, model_slug
from ..core.progress import OnProgress, report
from ..errors import KernelvizError
from ..explain.maps import feature_maps
from ..files.images import load_image
from ..files.write import save_json, save_png
from ..optvis.batch import auto_batch_size, layer_grid
from ..optvis.settings import DEFAULTS, OptimSettings
from ..units.scan import UnitScan
from ..units.trust import Trust, collection_check
from .examples import scan_to_atlas
from .folder import AtlasFolder, atlas_settings
from .site import write_index

__all__ = [
    "AtlasReport",
    "atlas",
    "check_settings",
    "filter_kept",
    "write_examples",
    "write_filters",
    "write_previews",
]


@dataclass
class AtlasReport:
    """What one atlas process did."""

    root: Path
    computed: int
    skipped: int
    remaining: int
    index_written: bool
    interrupted: bool = False
    #: with ``check``: one line per flagged picture (``LAYER: filter N's picture is processed unlike ...``)
    flagged: list[str] = field(default_factory=list)
    #: with ``check``: pictures path-checked
    checked: int = 0


def _remove_stale_temporaries(root: Path) -> None:
    """Delete temporary files a killed run left behind (finished files are never temporaries)."""
    for tmp in root.rglob(".*.tmp*"):
        tmp.unlink(missing_ok=True)


def filter_kept(root: Path, layer: str, n: int) -> bool:
    """Whether filter ``n``'s files are whole (see :meth:`AtlasFolder.kept`); damaged ones are removed."""
    return AtlasFolder(root).kept(layer, n)


def check_settings(root: Path, settings: dict[str, Any]) -> None:
    """Refuse to resume an atlas made with other settings (see :meth:`AtlasFolder.check_settings`)."""
    AtlasFolder(root).check_settings(settings)


def _plan(
    model: nn.Module, size: int, layers: Sequence[str] | None, filters: int | Sequence[int] | None
) -> list[tuple[str, LayerInfo, list[int]]]:
    """``(layer, row of the layer table, filters)`` for each layer of the atlas, in order."""
    if (isinstance(filters, int) and filters < 1) or (
        not isinstance(filters, int) and filters is not None and not filters
    ):
        raise KernelvizError(
            f"filters={filters!r} asks for no filters: give N >= 1, a list of indices, or None for all"
        )
    plan = []
    for name, row in asked_layers(model, size, layers, "make an atlas of"):
        if len(row.shape) != 3:
            raise KernelvizError(f"layer {name!r} has no spatial output: an atlas shows conv layers")
        if filters is None:
            chosen = list(range(row.channels))
        elif isinstance(filters, int):
            chosen = list(range(min(filters, row.channels)))
        else:
            chosen = [n for n in filters if n < row.channels]
        plan.append((name, row, chosen))
    return plan


def write_filters(
    model: nn.Module,
    root: Path,
    layer: str,
    group: Sequence[int],
    settings: OptimSettings,
    *,
    skip: Collection[tuple[str, int]] = (),
    progress: OnProgress | None = None,
    negative: bool = False,
) -> tuple[dict[int, dict[str, Any]], bool]:
    """Optimize ``group``'s filters of ``layer`` in one batch and write each one's PNG and record (the record
    last: it marks the filter done) under the atlas root, atomically.

    The one place an atlas filter is made: :func:`atlas` and the live explorer both call it.

    Args:
        root: the model's atlas folder (``DIR/<model>``).
        settings: the atlas's settings (its ``batch_size`` is ignored: the group is one batch).
        skip: ``(layer, filter)`` pairs already written (an earlier run that died inside this batch).
        progress: reports the optimization (stage ``"optimize"``, see :func:`~kernelviz.visualize`).
        negative: make the negative pictures instead (minimized, :func:`~kernelviz.optvis.batch.layer_grid`'s
            ``negative``), written as each filter's ``"negative"`` variant; their record holds the
            ``min_activation`` over positions where a positive one holds the ``max_activation``.

    Returns:
        ``({filter: its record} for the filters written, interrupted)``; an interrupted batch writes nothing.
    """
    meta = model_meta(model)
    batch = settings.with_(batch_size=len(group))
    result = layer_grid(model, layer, list(group), batch, progress=progress, negative=negative).results[0]
    if result.interrupted:
        return {}, True
    maps = feature_maps(model, result.images, layer).flatten(2)  # (B, C, positions)
    extreme = {"min_activation": maps.amin(2)} if negative else {"max_activation": maps.amax(2)}
    kind = _kind(negative)
    folder = AtlasFolder(root)
    written: dict[int, dict[str, Any]] = {}
    for i, n in enumerate(group):
        if (layer, n) in skip:
            continue
        objective = f"{'-' if negative else ''}channel({layer}:{n})"
        values = {key: float(v[i, n]) for key, v in extreme.items()}
        record = result.record(i, meta, layer=layer, filter=n, objective=objective, **values)
        folder.write_filter(layer, n, result.images[i], record, kind)  # the record last: it marks it done
        written[n] = record
    return written, False


def _kind(negative: bool) -> str | None:
    """The variant a filter's negative picture is kept as (``None``: its picture itself)."""
    return "negative" if negative else None


def write_previews(
    model: nn.Module,
    root: Path,
    layer: str,
    group: Sequence[int],
    settings: OptimSettings,
    *,
    progress: OnProgress | None = None,
) -> tuple[dict[int, Path], bool]:
    """Optimize ``group``'s filters of ``layer`` in one batch at ``settings`` (quick ones: see
    :func:`~kernelviz.optvis.settings.preview_settings`) and write each one's preview PNG, atomically.

    Returns:
        ``({filter: its preview's path}, interrupted)``; an interrupted batch writes nothing.
    """
    result = layer_grid(model, layer, list(group), settings.with_(batch_size=len(group)), progress=progress).results[0]
    if result.interrupted:
        return {}, True
    folder = AtlasFolder(root)
    return {n: save_png(result.images[i], folder.preview(layer, n)) for i, n in enumerate(group)}, False


def atlas(
    model: nn.Module,
    out: str | os.PathLike,
    settings: OptimSettings | None = None,
    *,
    layers: Sequence[str] | None = None,
    filters: int | Sequence[int] | None = None,
    images: str | os.PathLike | None = None,
    k: int = 9,
    shard: tuple[int, int] | None = None,
    progress: OnProgress | None = None,
    negative: bool = False,
    check: bool = False,
    **changes: Any,
) -> AtlasReport:
    """Write (or resume) an atlas of ``model`` under ``out/<model>/``.

    Args:
        model: the network (from :func:`~kernelviz.load_model` or any module with metadata).
        out: the output folder.
        settings: the optimization settings (default :data:`~kernelviz.optvis.settings.DEFAULTS`);
            ``batch_size`` is the number of filters per optimization (default:
            :func:`~kernelviz.optvis.batch.auto_batch_size`).
        layers: layer names in order; default: every convolution.
        filters: the first ``N`` filters of each layer (an int), explicit indices, or ``None`` for all.
        images: a folder of natural images: adds each filter's top-``k`` dataset examples.
        k: examples per filter.
        shard: ``(i, n)``: do only the ``i``-th of ``n`` disjoint shares of the work; default:
            the torch.distributed rank and world size under ``torchrun``, else everything.
        progress: reports stage ``"filters"`` (this process's filters whose pictures are written), then the scan of
            ``images`` (``"scan"``, ``"write"``).
        negative: also each filter's negative picture (what it responds to least, minimized in the same batch as
            its positive one), kept beside it: on the layer pages, in a second contact sheet, as the explorer's
            ``negative`` variant.
        check: path-check every picture against its filter's natural examples in ``images``
            (:func:`~kernelviz.units.trust.collection_check`, calibrated there): each record gets ``"trust"``, each
            card on the layer pages a badge and the numbers (progress stage ``"check"``: layers done).
        **changes: settings to change (``steps=128``, ``size=160``...).

    Returns:
        An :class:`AtlasReport`. The index (contact sheets, manifest, HTML) is written by the
        process that finds the whole atlas done: rank 0 after a barrier under torchrun, or
        whichever shard finishes last.
    """
    meta = model_meta(check_model(model))
    if check and images is None:
        raise KernelvizError("the path check needs images: give the natural images to check the pictures against")
    if check and shard is not None:
        raise KernelvizError(
            "the path check runs in one process (or under torchrun): make the shards without it, then run the atlas "
            "once more without --shard (everything made is reused) to check"
        )
    settings = (settings or DEFAULTS).with_(**changes).for_model(meta.input_size)
    size = int(settings.size or 0)
    root = Path(out) / model_slug(meta.name)
    share = Shard.of(shard)
    plan = _plan(model, size, layers, filters)

    # batch composition changes pictures in detail (float rounding, amplified by Adam's first steps)
    chunk = settings.batch_size or auto_batch_size(
        model, plan[0][0], size, model_device(model), max(len(c) for _, _, c in plan)
    )
    settings = settings.with_(batch_size=chunk)
    recorded = atlas_settings(settings, meta)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise KernelvizError(f"cannot make the atlas folder {root}: {err.strerror or err}") from err
    folder = AtlasFolder(root)
    folder.check_settings(recorded)
    if not share.distributed and shard is None:
        _remove_stale_temporaries(root)

    # The work is cut into batches first and the batches are shared out, so a filter is optimized
    # in the same batch whatever the sharding: 1 or N processes make the same pictures.
    batches = [(name, chosen[i : i + chunk]) for name, _, chosen in plan for i in range(0, len(chosen), chunk)]
    mine = share.mine(batches)
    # the pictures already whole, per kind (minimized or not)
    kept_of = {
        minimized: {(name, n) for name, group in mine for n in group if folder.kept(name, n, _kind(minimized))}
        for minimized in ((False, True) if negative else (False,))
    }
    kept, kinds = kept_of[False], tuple(kept_of)
    todo = [(name, group) for name, group in mine if not all((name, n) in kept_of[m] for n in group for m in kinds)]
    skipped = len(kept)
    computed, interrupted = 0, False
    checked, flagged = 0, list[str]()  # the path check's (with ``check``): pictures checked, lines of the flagged
    total, finished = sum(len(g) for _, g in todo), 0
    report(progress, "filters", 0, total)
    for name, group in todo:
        for minimized in kinds:
            skip = kept_of[minimized]
            if all((name, n) in skip for n in group):
                continue
            done, stopped = write_filters(model, root, name, group, settings, skip=skip, negative=minimized)
            computed += 0 if minimized else len(done)
            if stopped:  # unfinished pictures are not written: a rerun redoes this batch
                interrupted = True
                break
        if interrupted:
            break
        finished += len(group)
        report(progress, "filters", finished, total)
    if images is not None and not interrupted:  # one scan for every layer, shared out like the pictures
        # at the model's input size (not the pictures'), every unit of each layer; a matching scan is reused
        scanned = scan_to_atlas(model, root, images, [name for name, _, _ in plan], k=k, shard=shard, progress=progress)
        if check and (not share.distributed or share.rank == 0):
            checked, flagged = check_pictures(model, root, plan, scanned.scan, progress=progress)

    if share.distributed:
        barrier()
    remaining = sum(
        not folder.written(name, n, _kind(minimized)) for name, _, chosen in plan for n in chosen for minimized in kinds
    )
    written = False
    if not interrupted and remaining == 0 and (not share.distributed or share.rank == 0):
        write_index(root, plan, recorded)
        written = True
    if share.distributed:
        barrier()
    return AtlasReport(root, computed, skipped, remaining, written, interrupted, flagged, checked)


def check_pictures(
    model: nn.Module,
    root: Path,
    plan: Sequence[tuple[str, Any, list[int]]],
    scan: UnitScan,
    *,
    progress: OnProgress | None = None,
) -> tuple[int, list[str]]:
    """Path-check the pictures of ``plan`` written under the atlas ``root`` against their natural examples in
    ``scan`` (which kept its scores), and write each one's ``"trust"`` into its record.

    Returns:
        ``(pictures checked, one line per flagged picture)``.
    """
    folder = AtlasFolder(root)
    report(progress, "check", 0, len(plan))
    checked, flagged = 0, []
    for i, (name, _, chosen) in enumerate(plan):
        checker = collection_check(model, name, chosen, scan)
        for n in chosen:
            picture = load_image(folder.picture(name, n))  # at the size it was made
            trust = checker.check(n, picture)
            write_trust(root, name, n, trust)
            checked += 1
            flagged += [f"{name}: {trust.message()}"] if trust.flagged else []
        report(progress, "check", i + 1, len(plan))
    return checked, flagged


def write_trust(root: Path, layer: str, n: int, trust: Trust) -> None:
    """Write filter ``n``'s path check into its record (as ``"trust"``), atomically."""
    folder = AtlasFolder(root)
    record = folder.written_record(layer, n)
    record["trust"] = trust.to_json()
    save_json(record, folder.record_file(layer, n))


def write_examples(
    model: nn.Module, root: Path, layer: str, images: str | os.PathLike, k: int, *, progress: OnProgress | None = None
) -> UnitScan | None:
    """Scan ``images`` for one layer at the model's input size and write its ``examples.json`` (see
    :func:`~kernelviz.sets.examples.scan_to_atlas`: a scan already made of the same images is reused); returns
    the scan."""
    return scan_to_atlas(model, root, images, [layer], k=k, progress=progress).scan
