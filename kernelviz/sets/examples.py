"""Dataset examples in the atlas layout: one scan of an image collection, written as ``<layer>/examples.json`` for
every unit, resumable, shardable and reused.

The running scan is checkpointed to ``<model>/examples-scan/<scan-id>-shard-<i>-of-<n>.pt`` (``0-of-1`` for a single
process); once every shard's file is complete, whichever process finds it so merges them and writes the layers'
``examples.json`` (under ``torchrun`` the ranks' scans are merged by ``torch.distributed`` and rank 0 writes). A
layer's ``examples.json`` is written last and names the scan it comes from, so a rerun skips what is written, restores
what it names that went missing, and rewrites only what is stale. A complete scan of the same images at the same
input size whose layers include those asked is reused instead of scanning again (``atlas --images`` after
``examples``).

Each image an example comes from is written once per atlas, at the model's input size, under
``<model>/examples-images/`` (an entry's ``crop`` names it, its ``box`` the square to show of it): not one copy per
unit and ranking. The box is the unit's *effective* receptive field around its strongest position (the square
holding half of its input gradient, :func:`~kernelviz.units.examples.effective_field`): where it looks, which the
theoretical field stops telling once it exceeds the input.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.distributed import Shard
from ..core.guard import check_model
from ..core.layers import asked_layers
from ..core.models import model_meta
from ..core.progress import OnProgress, report
from ..data.collection import Collection as CollectionOfImages
from ..data.collection import ImagesArg, collection
from ..data.labels import LabelSet, collection_labels
from ..errors import KernelvizError
from ..files.images import load_image
from ..files.write import save_jpeg, save_json
from ..units.examples import effective_field, receptive_box, receptive_field
from ..units.scan import (
    RANKINGS,
    UnitScan,
    collection_key,
    load_scan,
    merge_scans,
    scan_id,
    scan_units,
    shard_file,
)
from ..units.statistics import ALPHA, BEST, BINS, DENSE, LABEL_FLOOR, LABEL_IMAGES, QUANTILES, unit_statistics
from .folder import AtlasFolder

__all__ = [
    "CROP_SIDE",
    "ScanReport",
    "merge_shards",
    "reusable_scan",
    "scan_dir",
    "scan_to_atlas",
    "write_importance",
    "write_scan",
]

#: The longest side of a written crop (a larger receptive field is shrunk to it; the explorer shows them small).
CROP_SIDE = 128

#: How many of a unit's classes ``examples.json`` lists by mean activation.
TOP_CLASSES = 5


@dataclass
class ScanReport:
    """What one scanning process did.

    Attributes:
        root: the model's atlas folder.
        scanned: images read by this process now (0 when its share was scanned before; under ``torchrun``, by
            all ranks).
        skipped: unreadable files in its share (all ranks' under ``torchrun``).
        shards_left: shards of the whole scan not complete yet (0: the scan is whole).
        layers_written: layers whose ``examples.json`` this process wrote.
        scan: the merged scan when it is whole, else this process's share.
        rank: this process's rank under ``torchrun`` (rank 0 writes), else ``None``.
    """

    root: Path
    scanned: int
    skipped: int
    shards_left: int
    layers_written: list[str]
    scan: UnitScan
    rank: int | None = None


def scan_dir(root: str | os.PathLike) -> Path:
    """The folder of a model's scan checkpoints (``<model>/examples-scan``: not a layer name)."""
    return Path(root) / "examples-scan"


def scan_to_atlas(
    model: nn.Module,
    root: str | os.PathLike,
    images: ImagesArg,
    layers: Sequence[str] | None = None,
    *,
    k: int = 9,
    size: int | None = None,
    batch_size: int | None = None,
    workers: int | None = None,
    shard: tuple[int, int] | None = None,
    every: int = 1024,
    label_file: str | os.PathLike | None = None,
    progress: OnProgress | None = None,
) -> ScanReport:
    """Scan ``images`` once for every unit of ``layers`` (default: every convolution) and write each layer's
    ``examples.json`` and ``units.json`` in the model's atlas folder ``root`` (see the module's description); a
    complete scan of the same images at the same size there, with these layers and at least ``k`` images per unit,
    is used instead.

    Args:
        root: the model's atlas folder (``OUT/<model>``).
        size: the input side (default: the model's: a scan reads images as the network was trained on them).
        shard: ``(i, n)`` for one of n independent processes; default: under ``torchrun``, this rank.
        every: images between checkpoints.
        label_file: a CSV of image paths and their labels (:mod:`kernelviz.data.labels`), besides the collection's
            classes and their WordNet groups: the units are labelled by them too.
        progress: reports stage ``"scan"`` (the images of this process's share), then ``"write"``.

    Returns:
        A :class:`ScanReport`.
    """
    check_model(model)
    root = Path(root)
    share = Shard.of(shard)
    try:
        scan_dir(root).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise KernelvizError(f"cannot make the folder {scan_dir(root)}: {err.strerror or err}") from err
    found = collection(images)
    labels = collection_labels(found, label_file)  # a bad label file fails before any work
    asked = [name for name, _ in asked_layers(model, size or model_meta(model).input_size, layers, "scan")]
    if not share.distributed and shard is None:
        reused = reusable_scan(model, root, found, asked, k, size)
        if reused is not None:
            written = write_scan(model, root, reused, asked, labels=labels, progress=progress)
            return ScanReport(root, 0, len(reused.skipped), 0, written, reused)
    mine = scan_units(
        model,
        found,
        asked,
        k=k,
        size=size,
        batch_size=batch_size,
        workers=workers,
        shard=shard,
        checkpoint=scan_dir(root),
        every=every,
        progress=progress,
    )
    if share.distributed:  # the ranks' scans are merged already, on every rank
        written = write_scan(model, root, mine, labels=labels, progress=progress) if share.rank == 0 else []
        return ScanReport(root, mine.scanned, len(mine.skipped), 0, written, mine, rank=share.rank)
    merged, left = merge_shards(root, mine.key, share.world)
    if merged is None:
        return ScanReport(root, mine.scanned, len(mine.skipped), left, [], mine)
    written = write_scan(model, root, merged, labels=labels, progress=progress)
    return ScanReport(root, mine.scanned, len(mine.skipped), 0, written, merged)


def reusable_scan(
    model: nn.Module, root: str | os.PathLike, found: CollectionOfImages, layers: Sequence[str], k: int,
    size: int | None = None,
) -> UnitScan | None:  # fmt: skip
    """A complete scan in ``root``'s checkpoints of the same images through the same network at the same size
    (:func:`~kernelviz.units.scan.collection_key`) that holds every layer of ``layers`` and at least ``k`` images per
    unit, or ``None``."""
    wanted = collection_key(model, found, size or model_meta(model).input_size)
    groups: dict[tuple[str, int], list[Path]] = {}
    for path in sorted(scan_dir(root).glob("*-shard-*-of-*.pt")):
        made, _, rest = path.stem.partition("-shard-")
        groups.setdefault((made, int(rest.rpartition("-of-")[2])), []).append(path)
    for (_, shards), paths in groups.items():
        try:
            first = load_scan(paths[0])
        except KernelvizError:
            continue  # a damaged checkpoint is no scan to reuse
        key = first.key
        if any(key.get(name) != value for name, value in wanted.items()) or "readouts" in key:
            continue
        if not set(layers) <= set(key.get("layers", [])) or int(key.get("k", 0)) < k:
            continue
        merged, left = merge_shards(root, key, shards)
        if merged is not None and not left:
            return merged
    return None


def merge_shards(root: str | os.PathLike, key: dict[str, Any], shards: int) -> tuple[UnitScan | None, int]:
    """``(the merged scan, 0)`` when every one of the ``shards`` checkpoints of the scan made with ``key`` under
    ``root`` is complete, else ``(None, how many are not)``.

    Raises:
        KernelvizError: a checkpoint is damaged.
    """
    files = [shard_file(scan_dir(root), key, (i, shards)) for i in range(shards)]
    parts = [load_scan(f) for f in files if f.exists()]
    left = shards - sum(1 for p in parts if _shard_complete(p))
    if left:
        return None, left
    return merge_scans(parts), 0


def _shard_complete(scan: UnitScan) -> bool:
    rank, world = scan.shard
    return all(b in scan.done for b in range(len(scan.batches)) if b % world == rank)


#: The share of a position's input gradient its crop holds (:func:`~kernelviz.units.examples.effective_field`).
FIELD_MASS = 0.5
#: Natural images the effective field is measured on (the scan's first readable ones).
FIELD_IMAGES = 4


def write_scan(
    model: nn.Module,
    root: str | os.PathLike,
    scan: UnitScan,
    layers: Sequence[str] | None = None,
    *,
    labels: LabelSet | None = None,
    progress: OnProgress | None = None,
) -> list[str]:
    """Write each layer's ``examples.json`` and ``units.json`` (every unit) from a whole scan, and the images they
    show; returns the layers written. A layer already written from the same scan is kept, and the images its records
    name that went missing are written again.

    ``units.json`` holds each unit's statistics and labels (:func:`~kernelviz.units.statistics.unit_statistics`:
    frequency, mean, max, dead, dense, a histogram of its per-image scores, the images at several quantiles of them,
    its best labels with their AUC), its images shown like the examples'.

    Per unit, ``examples.json`` holds ``filters`` (the top images by maximum: ``image``, ``value``, ``position``,
    ``box``, ``crop``), ``mean`` (by mean activation: ``image``, ``value``, ``crop``), ``bottom`` (by minimum, most
    negative first) and, for a class-labeled collection, ``classes`` (``mean``: the classes of highest mean
    activation, ``[name, value]``; ``top``: how many of the top images each class holds, ``[name, count]``);
    entries carry their ``class`` then. ``crop`` is the image at the model's input size, shared by every entry that
    shows it (``../examples-images/<id>.jpg``); ``box`` the square of it to show: the unit's effective receptive
    field around its strongest position (``field``: its side, and the theoretical one). ``ranked_by`` says what
    ranks (``pre-activation`` at an activation flat past a cap: the entries then hold the ``score`` that ranked them
    beside the capped ``value``), ``ties`` the units whose last ranked images share one score (file order then).

    Args:
        layers: the layers to write (default: all of the scan's).
        labels: the labels of the collection's images (default: its classes and their WordNet groups).
        progress: reports stage ``"write"``: the images written.
    """
    folder = AtlasFolder(Path(root))
    made = scan_id(scan.key)
    names = list(layers or scan.layers)
    index = {str(f): i for i, f in enumerate(scan.files)}
    todo, wanted = [], set()
    labels = labels if labels is not None else _scan_labels(scan)
    labelled = _labels_key(labels)
    for name in names:
        before, units = folder.examples(name), folder.units(name)
        stale = units is None or units.get("scan") != made or units.get("labelled") != labelled
        if before is None or before.get("scan") != made or (stale and scan.scores is not None):
            todo.append(name)  # the scan, the labels or how units are labelled changed: written again
            continue
        named = [*_entries(before), *(_unit_entries(units) if units is not None else [])]
        for found in named:  # bring back the images they name that went missing
            if not (folder.layer(name) / found["crop"]).is_file() and found["image"] in index:
                wanted.add(index[found["image"]])
    statistics = {}
    for name in todo:  # every image a ranking or a quantile of these layers holds
        layer = scan.layers[name]
        for ranking in RANKINGS:
            held = layer.ranking(ranking).images
            wanted |= set(held[held >= 0].unique().tolist())
        if scan.scores is not None:
            statistics[name] = unit_statistics(scan, name, labels)
            wanted |= {i for u in statistics[name].units for _, found in u.quantiles for i, _ in found}
    _write_images(scan, folder, sorted(wanted), progress)
    skipped = {str(p) for p, _ in scan.skipped}
    sample = [f for f in scan.files if str(f) not in skipped][:FIELD_IMAGES]
    for name in todo:  # one page in memory at a time; each written after the images it shows
        page = _layer_page(model, folder, scan, name, sample)
        if name in statistics:  # the units' record first: examples.json names the scan that wrote both
            shown = _shown(folder, scan, name)
            record = {**statistics[name].to_json(shown), "size": scan.size, "scan": made, "labelled": labelled}
            save_json(record, folder.units_file(name), compact=True)
        save_json({**page, "scan": made}, folder.examples_file(name), compact=True)  # 27 entries a unit: large
    return todo


def _labels_key(labels: LabelSet) -> str:
    """A digest of ``labels`` and of the rules that label units by them (:mod:`~kernelviz.units.statistics`): a
    ``units.json`` made otherwise is written again."""
    rules = [LABEL_FLOOR, LABEL_IMAGES, ALPHA, BEST, DENSE, list(QUANTILES), BINS]
    text = json.dumps([labels.ids, labels.names, labels.kinds, labels.members, rules], separators=(",", ":"))
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _scan_labels(scan: UnitScan) -> LabelSet:
    """The labels of a scan's images: its classes and their WordNet groups."""
    return collection_labels(CollectionOfImages(scan.files, scan.labels, scan.classes))


def _shown(folder: AtlasFolder, scan: UnitScan, layer: str) -> Callable[[int], dict[str, Any]]:
    """How ``units.json`` shows an image: its path, the shared copy of it, its class."""
    layer_dir = folder.layer(layer)

    def shown(i: int) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "image": str(scan.files[i]),
            "crop": os.path.relpath(folder.example_image(scan.files[i]), layer_dir).replace(os.sep, "/"),
            "box": [0, 0, scan.size, scan.size],
        }
        if scan.labels is not None and scan.classes is not None:
            entry["class"] = scan.class_name(int(scan.labels[i]))
        return entry

    return shown


def _unit_entries(units: dict[str, Any]) -> list[dict[str, Any]]:
    """Every example image of a layer's ``units.json``."""
    return [e for u in units.get("units", []) for q in u.get("quantiles", []) for e in q.get("examples", [])]


def _entries(page: dict[str, Any]) -> list[dict[str, Any]]:
    """Every entry of a layer's ``examples.json``, of every ranking."""
    return [e for key in ("filters", "mean", "bottom") for found in page.get(key, {}).values() for e in found]


def _layer_page(model: nn.Module, folder: AtlasFolder, scan: UnitScan, name: str, sample: list[Path]) -> dict[str, Any]:
    """``examples.json`` of one layer (every unit)."""
    layer = scan.layers[name]
    side = scan.size
    page: dict[str, Any] = {
        "scanned": scan.scanned,
        "skipped": [str(p) for p, _ in scan.skipped],
        "k": scan.k,
        "size": side,
        "ranked_by": layer.ranked_by,
        "floor": layer.floor,
        "cap": layer.cap,
        **{key: {} for key in ("filters", "mean", "bottom")},
        "ties": {},
    }
    box: Callable[[int, int], tuple[int, int, int, int]] | None = None
    if layer.grid != (1, 1):
        try:
            field = receptive_field(model, name, side)
            images = torch.stack([load_image(f, side) for f in sample]) if sample else None
            effective = effective_field(model, name, images, FIELD_MASS) if images is not None else side
            page["field"] = {"theoretical": field, "effective": effective, "mass": FIELD_MASS}
            box = receptive_box(model, name, side, effective)
        except KernelvizError:  # no receptive field (a layer without positions): the whole image
            box = None
    width = layer.grid[1]
    labels, classes = scan.labels, scan.classes
    if classes is not None:
        page["classes"] = {}
    layer_dir = folder.layer(name)
    for n in range(layer.units):
        for ranking, key in zip(RANKINGS, ("filters", "mean", "bottom"), strict=True):
            r = layer.ranking(ranking)
            entries = []
            for j, i in enumerate(r.images[n].tolist()):
                if i < 0:
                    break
                source = folder.example_image(scan.files[i])
                entry: dict[str, Any] = {"image": str(scan.files[i]), "value": float(r.values[n, j])}
                if layer.ranked_by != "activation" and ranking != "mean":
                    entry["score"] = float(r.scores[n, j])
                if r.positions is not None:
                    row, col = divmod(int(r.positions[n, j]), width)
                    entry["position"] = [row, col]
                entry["box"] = list(box(*entry["position"])) if box is not None and "position" in entry else [
                    0, 0, side, side
                ]  # fmt: skip
                entry["crop"] = os.path.relpath(source, layer_dir).replace(os.sep, "/")
                if labels is not None and classes is not None:
                    entry["class"] = scan.class_name(int(labels[i]))
                entries.append(entry)
            page[key][str(n)] = entries
        ties = layer.top.ties(n)
        if ties > 1:
            page["ties"][str(n)] = ties
        if classes is not None:
            page["classes"][str(n)] = {
                "mean": [[c, v] for c, v in scan.top_classes(name, n, TOP_CLASSES)],
                "top": [[c, count] for c, count in scan.classes_in_top(name, n)],
            }
    return page


def _write_images(scan: UnitScan, folder: AtlasFolder, indices: list[int], progress: OnProgress | None) -> None:
    """Write each image an example shows, once, at the scan's input side (JPEG), decoding each file once."""

    def one(i: int) -> None:
        save_jpeg(load_image(scan.files[i], scan.size), folder.example_image(scan.files[i]))

    missing = [i for i in indices if not folder.example_image(scan.files[i]).is_file()]
    report(progress, "write", 0, len(missing))
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for done, _ in enumerate(pool.map(one, missing), 1):
            report(progress, "write", done, len(missing))


def write_importance(
    model: nn.Module,
    root: str | os.PathLike,
    layers: Sequence[str],
    images: ImagesArg,
    *,
    label_file: str | os.PathLike | None = None,
    batch_size: int | None = None,
    workers: int | None = None,
    progress: OnProgress | None = None,
) -> list[str]:
    """Add to each layer's ``units.json`` what each unit matters for: per unit ``"matters_for"`` (the classes,
    WordNet groups and labels whose probability it carries most, :func:`~kernelviz.units.importance.unit_importance`:
    a first-order estimate, which the record says), per layer ``"importance"`` (what the values are, how folders
    were matched to outputs). A layer whose ``units.json`` holds it for the same scan and labels is kept; one without
    ``units.json`` (no scan written yet) is skipped. Returns the layers written.

    Args:
        progress: reports stage ``"importance"`` (images done, per layer).
    """
    from ..units.importance import ESTIMATE, unit_importance

    folder = AtlasFolder(Path(root))
    written = []
    for name in layers:
        units = folder.units(name)
        if units is None:
            continue
        key = {"scan": units.get("scan"), "labelled": units.get("labelled")}
        if units.get("importance", {}).get("of") == key:
            continue
        found = unit_importance(model, name, images, label_file=None if label_file is None else str(label_file),
                                batch_size=batch_size, workers=workers, progress=progress)  # fmt: skip
        for u in units["units"]:
            u["matters_for"] = found.unit_json(u["unit"])
            carried = found.carried(u["unit"])
            u["carried"] = None if math.isnan(carried) else round(carried, 6)
        units["importance"] = {"estimate": ESTIMATE, "matching": found.matching, "of": key}
        save_json(units, folder.units_file(name), compact=True)
        written.append(name)
    return written
