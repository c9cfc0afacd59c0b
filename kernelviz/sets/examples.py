"""Dataset examples in the atlas layout: one scan of an image collection, written as ``<layer>/examples.json`` and
crops for every unit, resumable and shardable.

The running scan is checkpointed to ``<model>/examples-scan/shard-<i>-of-<n>.pt`` (one file per shard: ``0-of-1``
for a single process); once every shard's file is complete, whichever process finds it so merges them and
writes the layers' ``examples.json`` (under ``torchrun`` the ranks' scans are merged by ``torch.distributed``
and rank 0 writes). A layer's ``examples.json`` is written last, after its crops, and names the scan it comes
from, so a rerun skips what is written and rewrites only what is missing or stale.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ..core.distributed import Shard
from ..core.guard import check_model
from ..core.progress import OnProgress, report
from ..data.collection import ImagesArg
from ..errors import KernelvizError
from ..files.images import load_image
from ..files.write import save_jpeg, save_json
from ..units.examples import receptive_box
from ..units.scan import RANKINGS, UnitScan, load_scan, merge_scans, scan_id, scan_units, shard_file
from .folder import AtlasFolder

__all__ = ["CROP_SIDE", "ScanReport", "merge_shards", "scan_dir", "scan_to_atlas", "write_scan"]

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
    units: dict[str, Collection[int]] | None = None,
    progress: OnProgress | None = None,
) -> ScanReport:
    """Scan ``images`` once for every unit of ``layers`` (default: every convolution) and write each layer's
    ``examples.json`` and crops in the model's atlas folder ``root`` (see the module's description).

    Args:
        root: the model's atlas folder (``OUT/<model>``).
        shard: ``(i, n)`` for one of n independent processes; default: under ``torchrun``, this rank.
        every: images between checkpoints.
        units: per layer, the units to write (default: all; the scan ranks all of them anyway).
        progress: reports stage ``"scan"``: the images of this process's share.

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
    mine = scan_units(
        model,
        images,
        layers,
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
        written = write_scan(model, root, mine, units, progress=progress) if share.rank == 0 else []
        return ScanReport(root, mine.scanned, len(mine.skipped), 0, written, mine, rank=share.rank)
    merged, left = merge_shards(root, mine.key, share.world)
    if merged is None:
        return ScanReport(root, mine.scanned, len(mine.skipped), left, [], mine)
    written = write_scan(model, root, merged, units, progress=progress)
    return ScanReport(root, mine.scanned, len(mine.skipped), 0, written, merged)


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


def write_scan(
    model: nn.Module,
    root: str | os.PathLike,
    scan: UnitScan,
    units: dict[str, Collection[int]] | None = None,
    *,
    progress: OnProgress | None = None,
) -> list[str]:
    """Write each layer's ``examples.json`` and crops from a whole scan (layers already written from the same scan
    are skipped); returns the layers written.

    Per unit, ``examples.json`` holds ``filters`` (the top images by maximum: ``image``, ``value``, ``position``,
    ``box``, ``crop``), ``mean`` (by mean activation: ``image``, ``value``, ``crop`` of the whole image),
    ``bottom`` (by minimum, most negative first, cropped where it is lowest) and, for a class-labeled collection,
    ``classes`` (``mean``: the classes of highest mean activation, ``[name, value]``; ``top``: how many of the top
    images each class holds, ``[name, count]``); entries carry their ``class`` then.
    ``progress`` reports stage ``"write"``: the images whose crops are written.
    """
    folder = AtlasFolder(Path(root))
    made = scan_id(scan.key)
    todo = [name for name in scan.layers if (folder.examples(name) or {}).get("scan") != made]
    if not todo:
        return []
    crops: dict[int, list[tuple[Path, tuple[int, int, int, int] | None]]] = {}  # image -> (file, box or whole)
    pages = {}
    for name in todo:
        pages[name] = _layer_page(model, folder, scan, name, None if units is None else units.get(name), crops)
    _write_crops(scan, crops, progress)
    for name, page in pages.items():
        save_json({**page, "scan": made}, folder.examples_file(name))
    return todo


def _layer_page(
    model: nn.Module,
    folder: AtlasFolder,
    scan: UnitScan,
    name: str,
    chosen: Collection[int] | None,
    crops: dict[int, list[tuple[Path, tuple[int, int, int, int] | None]]],
) -> dict[str, Any]:
    """``examples.json`` of one layer; the crops it links to are added to ``crops``."""
    layer = scan.layers[name]
    side = scan.size
    try:
        box: Callable[[int, int], tuple[int, int, int, int]] = receptive_box(model, name, side)
    except KernelvizError:  # no receptive field (a layer without positions): the whole image
        box = lambda r, c: (0, 0, side, side)  # noqa: E731
    width = layer.grid[1]
    labels, classes = scan.labels, scan.classes
    page: dict[str, Any] = {
        "scanned": scan.scanned,
        "skipped": [str(p) for p, _ in scan.skipped],
        "k": scan.k,
        "size": side,
        **{key: {} for key in ("filters", "mean", "bottom")},
    }
    if classes is not None:
        page["classes"] = {}
    for n in range(layer.units) if chosen is None else sorted(chosen):
        for ranking, key in zip(RANKINGS, ("filters", "mean", "bottom"), strict=True):
            r = layer.ranking(ranking)
            entries = []
            for j, i in enumerate(r.images[n].tolist()):
                if i < 0:
                    break
                entry: dict[str, Any] = {"image": str(scan.files[i]), "value": float(r.values[n, j])}
                crop = folder.example_crop(name, n, j, ranking)
                if r.positions is not None:
                    row, col = divmod(int(r.positions[n, j]), width)
                    entry["position"] = [row, col]
                    where = box(row, col)
                    entry["box"] = list(where)
                    crops.setdefault(i, []).append((crop, where))
                else:
                    crops.setdefault(i, []).append((crop, None))
                entry["crop"] = crop.relative_to(folder.layer(name)).as_posix()
                if labels is not None and classes is not None:
                    entry["class"] = classes[int(labels[i])]
                entries.append(entry)
            page[key][str(n)] = entries
        if classes is not None:
            page["classes"][str(n)] = {
                "mean": [[c, v] for c, v in scan.top_classes(name, n, TOP_CLASSES)],
                "top": [[c, count] for c, count in scan.classes_in_top(name, n)],
            }
    return page


def _write_crops(
    scan: UnitScan,
    crops: dict[int, list[tuple[Path, tuple[int, int, int, int] | None]]],
    progress: OnProgress | None = None,
) -> None:
    """Decode each image once and write every crop cut from it (JPEG, longest side at most :data:`CROP_SIDE`)."""

    def one(item: tuple[int, list[tuple[Path, tuple[int, int, int, int] | None]]]) -> None:
        i, wanted = item
        image = load_image(scan.files[i], scan.size)  # (3, size, size)
        for path, box in wanted:
            x0, y0, x1, y1 = box or (0, 0, scan.size, scan.size)
            save_jpeg(image[:, y0:y1, x0:x1], path, CROP_SIDE)

    report(progress, "write", 0, len(crops))
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for done, _ in enumerate(pool.map(one, sorted(crops.items())), 1):
            report(progress, "write", done, len(crops))
