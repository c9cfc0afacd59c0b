"""The model atlas: every filter of chosen layers, on disk, resumable, browsable as a static site.

Layout under ``DIR/<model>/``::

    settings.json            the settings the atlas is made with (a rerun must match them)
    manifest.json            what is done: layers, shapes, filters, final activations
    index.html               layers in order with shapes and a contact sheet each
    <layer>/index.html       every filter: thumbnail -> full image, settings, activation, examples
    <layer>/NNNN.png .json   one filter's image and record (the .json is written last: it marks done)
    <layer>/sheet.png        the layer's contact sheet
    <layer>/examples.json    dataset examples per filter (with ``images=``), crops in examples/

Every file is written atomically (temporary file, then rename), so a killed run leaves no
truncated file; a rerun skips the filters whose record parses and whose PNG decodes, and redoes the
others (a file damaged after the fact, by a full disk or a copy, is found and replaced). Work is split into shards by
position in the full list of (layer, filter) pairs: ``shard=(i, n)`` for independent processes
(job arrays), or the rank and world size of ``torch.distributed`` under ``torchrun``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.guard import check_model
from ..core.layers import LayerInfo, list_layers
from ..core.models import model_device, model_meta, model_slug
from ..core.names import resolve_layer
from ..errors import KernelvizError
from ..explain.examples import find_examples
from ..explain.maps import feature_maps
from ..files.write import save_json, save_png, write_each
from ..optvis.batch import auto_batch_size, layer_grid
from ..optvis.settings import DEFAULTS, OptimSettings
from .site import layer_dir, write_index

__all__ = [
    "AtlasReport",
    "atlas",
    "check_settings",
    "distributed_shard",
    "filter_kept",
    "write_examples",
    "write_filters",
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


def distributed_shard() -> tuple[int, int] | None:
    """``(rank, world_size)`` when running under ``torchrun`` (initializing the process group), else ``None``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or "RANK" not in os.environ:
        return None
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size()


def _barrier() -> None:
    import torch.distributed as dist

    dist.barrier()


def _remove_stale_temporaries(root: Path) -> None:
    """Delete temporary files a killed run left behind (finished files are never temporaries)."""
    for tmp in root.rglob(".*.tmp*"):
        tmp.unlink(missing_ok=True)


def _done(root: Path, layer: str, n: int) -> bool:
    """Whether filter ``n``'s files are there (cheap: for the work of other processes, written atomically)."""
    d = layer_dir(root, layer)
    return (d / f"{n:04d}.json").exists() and (d / f"{n:04d}.png").exists()


def _valid_json(path: Path, types: dict[str, type | tuple[type, ...]] | None = None) -> bool:
    """Whether ``path`` parses as JSON and, given ``types``, is an object whose keys hold values of those types."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return False
    if types is None:
        return True
    return isinstance(data, dict) and all(
        key in data and isinstance(data[key], kind) and not (kind is not bool and isinstance(data[key], bool))
        for key, kind in types.items()
    )


#: What a filter's record must hold for the site and the explorer to read it (else the filter is redone).
_RECORD_TYPES: dict[str, type | tuple[type, ...]] = {
    "final_value": (int, float),
    "dead_unit": bool,
    "settings": dict,
}


def _examples_valid(path: Path) -> bool:
    """Whether an ``examples.json`` parses and each entry names its image and crop and holds a number."""
    if not _valid_json(path, {"scanned": int, "filters": dict}):
        return False
    entry: dict[str, type | tuple[type, ...]] = {"image": str, "crop": str, "value": (int, float)}
    filters = json.loads(path.read_text())["filters"]
    return all(
        isinstance(found, list)
        and all(isinstance(e, dict) and all(isinstance(e.get(k), t) for k, t in entry.items()) for e in found)
        for found in filters.values()
    )


def filter_kept(root: Path, layer: str, n: int) -> bool:
    """Whether filter ``n``'s files are whole: the record parses, the PNG decodes. Damaged ones are removed."""
    from PIL import Image

    d = layer_dir(root, layer)
    record, png = d / f"{n:04d}.json", d / f"{n:04d}.png"
    if not (record.exists() or png.exists()):
        return False
    try:
        with Image.open(png) as im:
            im.verify()
        whole = _valid_json(record, _RECORD_TYPES)
    except (OSError, SyntaxError):  # PIL raises SyntaxError for some broken files
        whole = False
    if not whole:
        record.unlink(missing_ok=True)  # the record first: it is what marks the filter done
        png.unlink(missing_ok=True)
    return whole


#: Settings added after atlases were first written, with the value those atlases were made with.
_IMPLICIT = {"decay": 1.0, "detail": 1.0}


def _same_setting(key: str, in_record: Any, asked: Any) -> bool:
    """Whether a picture's recorded setting is the atlas setting ``asked`` (a record keeps the size as [H, W] and
    the precision as resolved)."""
    if key == "size" and isinstance(in_record, list) and len(set(in_record)) == 1:
        in_record = in_record[0]
    if key == "precision" and asked == "auto":
        return True
    return bool(in_record == asked)


def check_settings(root: Path, settings: dict[str, Any]) -> None:
    """Refuse to resume an atlas made with other settings; write ``settings.json`` for a new one."""
    path = root / "settings.json"
    if not path.exists():
        made = next(
            (r for r in sorted(root.glob("*/[0-9][0-9][0-9][0-9].json")) if _valid_json(r, _RECORD_TYPES)), None
        )
        if made is not None:  # pictures without the settings file: compare with what a picture recorded
            recorded = json.loads(made.read_text())["settings"]
            differ = [k for k, v in settings.items() if k in recorded and not _same_setting(k, recorded[k], v)]
            if differ or not set(settings) & set(recorded):
                listed = "; ".join(f"{k} {recorded.get(k)!r} there, {settings[k]!r} now" for k in differ)
                raise KernelvizError(
                    f"{root} holds filter pictures but no settings.json, and {made.relative_to(root)} was made "
                    f"with other settings ({listed or 'unknown'}): use another output folder, or those settings"
                )
        save_json(settings, path)
        return
    try:
        before = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise KernelvizError(
            f"{path} is damaged ({err}), so the settings of the files already there are unknown: "
            "use another output folder, or delete that folder to start over"
        ) from err
    if isinstance(before, dict):
        before = {**_IMPLICIT, **before}  # settings older atlases were made with before they were recorded
    if before != settings:
        was = before if isinstance(before, dict) else {}
        changed = [f"{k} {was.get(k)!r} there, {v!r} now" for k, v in settings.items() if was.get(k) != v]
        raise KernelvizError(
            f"{root} holds an atlas made with other settings ({'; '.join(changed)}): "
            "use another output folder, or those settings to resume"
        )


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
    rows = list_layers(model, size, include=layers or ())
    names = list(layers) if layers else [r.name for r in rows if r.type.startswith("Conv")]
    if not names:
        raise KernelvizError(
            "the model has no convolution layer to make an atlas of: name the layers to show (layers=[...], "
            "--layers on the command line; kernelviz layers MODEL lists them)"
        )
    by_path = {r.path: r for r in rows}
    plan = []
    for name in names:
        row = by_path.get(resolve_layer(model, name))
        if row is None or len(row.shape) != 3:
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
    progress: Callable[[int, float], None] | None = None,
) -> tuple[int, bool]:
    """Optimize ``group``'s filters of ``layer`` in one batch and write each one's PNG and record (the record
    last: it marks the filter done) under the atlas root, atomically.

    The one place an atlas filter is made: :func:`atlas` and the live explorer both call it.

    Args:
        root: the model's atlas folder (``DIR/<model>``).
        settings: the atlas's settings (its ``batch_size`` is ignored: the group is one batch).
        skip: ``(layer, filter)`` pairs already written (an earlier run that died inside this batch).
        progress: ``progress(step, value)`` every few steps (see :func:`~kernelviz.visualize`).

    Returns:
        ``(filters written, interrupted)``; an interrupted batch writes nothing.
    """
    meta = model_meta(model)
    result = layer_grid(model, layer, list(group), settings.with_(batch_size=len(group)), progress=progress).results[0]
    if result.interrupted:
        return 0, True
    peak = feature_maps(model, result.images, layer).flatten(2).amax(2)  # (B, C): max over positions
    d = layer_dir(root, layer)
    written = 0
    for i, n in enumerate(group):
        if (layer, n) in skip:
            continue
        record = result.record(
            i, meta, layer=layer, filter=n, objective=f"channel({layer}:{n})", max_activation=float(peak[i, n])
        )
        # the record last: it marks the filter done
        write_each(
            partial(save_png, result.images[i], d / f"{n:04d}.png"), partial(save_json, record, d / f"{n:04d}.json")
        )
        written += 1
    return written, False


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
    progress: bool = True,
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
        progress: show progress bars (layers and filters, with rate and ETA).
        **changes: settings to change (``steps=128``, ``size=160``...).

    Returns:
        An :class:`AtlasReport`. The index (contact sheets, manifest, HTML) is written by the
        process that finds the whole atlas done: rank 0 after a barrier under torchrun, or
        whichever shard finishes last.
    """
    meta = model_meta(check_model(model))
    settings = (settings or DEFAULTS).with_(**changes).for_model(meta.input_size)
    size = int(settings.size or 0)
    root = Path(out) / model_slug(meta.name)
    dist_shard = distributed_shard() if shard is None else None
    rank, world = shard or dist_shard or (0, 1)
    if not 0 <= rank < world:
        raise KernelvizError(f"shard {rank}/{world} is not valid: use i/n with 0 <= i < n")
    plan = _plan(model, size, layers, filters)

    # batch composition changes pictures in detail (float rounding, amplified by Adam's first steps)
    chunk = settings.batch_size or auto_batch_size(
        model, plan[0][0], size, model_device(model), max(len(c) for _, _, c in plan)
    )
    settings = settings.with_(batch_size=chunk)
    recorded = {**settings.to_json(), "model": meta.name, "weights": meta.weights}
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise KernelvizError(f"cannot make the atlas folder {root}: {err.strerror or err}") from err
    check_settings(root, recorded)
    if rank == 0 and dist_shard is None and shard is None:
        _remove_stale_temporaries(root)

    # The work is cut into batches first and the batches are shared out, so a filter is optimized
    # in the same batch whatever the sharding: 1 or N processes make the same pictures.
    batches = [(name, chosen[i : i + chunk]) for name, _, chosen in plan for i in range(0, len(chosen), chunk)]
    mine = [b for i, b in enumerate(batches) if i % world == rank]
    kept = {(name, n) for name, group in mine for n in group if filter_kept(root, name, n)}
    todo = [(name, group) for name, group in mine if not all((name, n) in kept for n in group)]
    skipped = len(kept)
    computed, interrupted = 0, False
    bars = _bars(progress, len({name for name, _ in todo}), sum(len(g) for _, g in todo), rank)
    layers_left = {name: sum(n == name for n, _ in todo) for name, _ in todo}
    try:
        for name, group in todo:
            if bars:
                bars[0].set_description(f"[{rank}/{world}] {name}")
            done, stopped = write_filters(model, root, name, group, settings, skip=kept)
            computed += done
            if stopped:  # unfinished pictures are not written: a rerun redoes this batch
                interrupted = True
                break
            layers_left[name] -= 1
            if bars:
                bars[1].update(len(group))
                if layers_left[name] == 0:
                    bars[0].update(1)
        if images is not None and not interrupted:
            for j, (name, _, chosen) in enumerate(plan):
                if j % world == rank and not _examples_valid(layer_dir(root, name) / "examples.json"):
                    write_examples(model, root, name, chosen, images, k, size)
    finally:
        for bar in bars:
            bar.close()

    if dist_shard is not None:
        _barrier()
    remaining = sum(not _done(root, name, n) for name, _, chosen in plan for n in chosen)
    written = False
    if not interrupted and remaining == 0 and (dist_shard is None or rank == 0):
        write_index(root, plan, recorded)
        written = True
    if dist_shard is not None:
        _barrier()
    return AtlasReport(root, computed, skipped, remaining, written, interrupted)


def _bars(enabled: bool, layers: int, filters: int, rank: int) -> list[Any]:
    if not enabled or filters == 0:
        return []
    from tqdm.auto import tqdm

    return [
        tqdm(total=layers, desc="layers", unit="layer", position=2 * rank, leave=True),
        tqdm(total=filters, desc="filters", unit="filter", position=2 * rank + 1, leave=True),
    ]


def write_examples(
    model: nn.Module, root: Path, layer: str, filters: list[int], images: str | os.PathLike, k: int, size: int
) -> None:
    scan = find_examples(model, layer, filters, images, k=k, size=size)
    d = layer_dir(root, layer)
    out: dict[str, Any] = {"scanned": scan.scanned, "skipped": [str(p) for p, _ in scan.skipped], "filters": {}}
    for n, found in scan.examples.items():
        entries = []
        for j, ex in enumerate(found):
            crop = d / "examples" / f"{n:04d}_{j}.png"
            save_png(ex.crop, crop)
            entries.append(
                {"image": str(ex.path), "value": ex.value, "box": ex.box, "crop": crop.relative_to(d).as_posix()}
            )
        out["filters"][str(n)] = entries
    save_json(out, d / "examples.json")
