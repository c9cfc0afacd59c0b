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
truncated file; a rerun skips filters whose record exists. Work is split into shards by
position in the full list of (layer, filter) pairs: ``shard=(i, n)`` for independent processes
(job arrays), or the rank and world size of ``torch.distributed`` under ``torchrun``.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import KernelvizError
from .io import atomic_write, load_image, save_figure, save_json, save_png, versions
from .layers import LayerInfo, list_layers, resolve_layer
from .maps import feature_maps
from .models import model_device, model_meta, model_slug

__all__ = ["AtlasReport", "atlas", "distributed_shard", "write_index"]

#: Settings that change the pictures: a rerun into the same folder must use the same ones.
_PICTURE_SETTINGS = ("steps", "size", "lr", "param", "transforms", "seed", "precision", "batch_size")


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


def _remove_stale_temporaries(root: Path) -> None:
    """Delete temporary files a killed run left behind (finished files are never temporaries)."""
    for tmp in root.rglob(".*.tmp*"):
        tmp.unlink(missing_ok=True)


def _default_layers(rows: list[LayerInfo]) -> list[str]:
    """Every convolution, by its preferred name."""
    return [r.name for r in rows if r.type.startswith("Conv")]


def _layer_dir(root: Path, layer: str) -> Path:
    return root / layer.replace("/", "_")


def _done(root: Path, layer: str, n: int) -> bool:
    d = _layer_dir(root, layer)
    return (d / f"{n:04d}.json").exists() and (d / f"{n:04d}.png").exists()


def _check_settings(root: Path, settings: dict[str, Any]) -> None:
    path = root / "settings.json"
    if path.exists():
        try:
            before = json.loads(path.read_text())
        except json.JSONDecodeError:
            before = None
        if before is not None and before != settings:
            changed = [k for k in settings if before.get(k) != settings.get(k)]
            raise KernelvizError(
                f"{root} holds an atlas made with other settings ({', '.join(changed)} differ): "
                "use another output folder, or the same settings to resume"
            )
    else:
        save_json(settings, path)


def atlas(
    model: nn.Module,
    out: str | os.PathLike,
    *,
    layers: Sequence[str] | None = None,
    filters: int | Sequence[int] | None = None,
    images: str | os.PathLike | None = None,
    k: int = 9,
    shard: tuple[int, int] | None = None,
    batch_size: int | None = None,
    progress: bool = True,
    **kwargs: Any,
) -> AtlasReport:
    """Write (or resume) an atlas of ``model`` under ``out/<model>/``.

    Args:
        model: the network (from :func:`~kernelviz.load_model` or any module with metadata).
        out: the output folder.
        layers: layer names in order; default: every convolution.
        filters: the first ``N`` filters of each layer (an int), explicit indices, or ``None`` for all.
        images: a folder of natural images: adds each filter's top-``k`` dataset examples.
        k: examples per filter.
        shard: ``(i, n)``: do only the ``i``-th of ``n`` disjoint shares of the work; default:
            the torch.distributed rank and world size under ``torchrun``, else everything.
        batch_size: filters per optimization (default: :func:`~kernelviz.figures.auto_batch_size`).
        progress: show progress bars (layers and filters, with rate and ETA).
        **kwargs: optimization settings for :func:`~kernelviz.visualize` (steps, size, lr, param,
            transforms, seed, precision).

    Returns:
        An :class:`AtlasReport`. The index (contact sheets, manifest, HTML) is written by the
        process that finds the whole atlas done: rank 0 after a barrier under torchrun, or
        whichever shard finishes last.
    """
    from .figures import layer_grid

    meta = model_meta(model)
    root = Path(out) / model_slug(meta.name)
    size = int(kwargs.get("size") or meta.input_size)
    kwargs["size"] = size
    dist_shard = distributed_shard() if shard is None else None
    rank, world = shard or dist_shard or (0, 1)
    if not 0 <= rank < world:
        raise KernelvizError(f"shard {rank}/{world} is not valid: use i/n with 0 <= i < n")
    device = model_device(model)

    rows = list_layers(model, size, include=layers or ())
    names = list(layers) if layers else _default_layers(rows)
    by_path = {r.path: r for r in rows}
    plan: list[tuple[str, LayerInfo, list[int]]] = []
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

    from .figures import auto_batch_size

    # batch composition changes pictures in detail (float rounding, amplified by Adam's first steps)
    chunk = batch_size or auto_batch_size(model, plan[0][0], size, device, max(len(c) for _, _, c in plan))
    settings = {key: kwargs.get(key) for key in _PICTURE_SETTINGS}
    settings["batch_size"] = chunk
    settings.update(model=meta.name, weights=meta.weights, steps=kwargs.get("steps", 256))
    for key, default in (
        ("lr", 0.05),
        ("param", "fourier"),
        ("seed", 0),
        ("precision", "fp32"),
    ):
        settings[key] = settings[key] if settings[key] is not None else default
    # transforms: absent means the default recipe, None (or "none") means no transforms at all
    given = kwargs.get("transforms", "standard")
    settings["transforms"] = "none" if given in (None, "none") else given
    kwargs.update({key: settings[key] for key in ("steps", "lr", "param", "seed", "precision")})
    kwargs["transforms"] = None if settings["transforms"] == "none" else settings["transforms"]
    root.mkdir(parents=True, exist_ok=True)
    _check_settings(root, settings)
    if rank == 0 and dist_shard is None and shard is None:
        _remove_stale_temporaries(root)

    # The work is cut into batches first and the batches are shared out, so a filter is optimized
    # in the same batch whatever the sharding: 1 or N processes make the same pictures.
    batches = [(name, chosen[i : i + chunk]) for name, _, chosen in plan for i in range(0, len(chosen), chunk)]
    mine = [b for i, b in enumerate(batches) if i % world == rank]
    todo = [(name, group) for name, group in mine if not all(_done(root, name, n) for n in group)]
    skipped = sum(_done(root, name, n) for name, group in mine for n in group)
    computed, interrupted = 0, False
    bars = _bars(progress, len({name for name, _ in todo}), sum(len(g) for _, g in todo), rank)
    layers_left = {name: sum(n == name for n, _ in todo) for name, _ in todo}
    try:
        for name, group in todo:
            if bars:
                bars[0].set_description(f"[{rank}/{world}] {name}")
            result = layer_grid(model, name, group, batch_size=len(group), **kwargs).results[0]
            if result.interrupted:  # unfinished pictures are not written: a rerun redoes this batch
                interrupted = True
                break
            peak = feature_maps(model, result.images, name).flatten(2).amax(2)  # (B, C): max over positions
            d = _layer_dir(root, name)
            for i, n in enumerate(group):
                if _done(root, name, n):
                    continue  # written by an earlier run that died inside this batch
                save_png(result.images[i], d / f"{n:04d}.png")
                record = result.record(
                    i,
                    model=meta.name,
                    weights=meta.weights,
                    layer=name,
                    filter=n,
                    objective=f"channel({name}:{n})",
                    max_activation=float(peak[i, n]),
                )
                save_json(record, d / f"{n:04d}.json")  # written last: marks the filter done
                computed += 1
            layers_left[name] -= 1
            if bars:
                bars[1].update(len(group))
                if layers_left[name] == 0:
                    bars[0].update(1)
        if images is not None and not interrupted:
            for j, (name, _, chosen) in enumerate(plan):
                if j % world == rank and not (_layer_dir(root, name) / "examples.json").exists():
                    _write_examples(model, root, name, chosen, images, k, size)
    finally:
        for bar in bars:
            bar.close()

    if dist_shard is not None:
        import torch.distributed as dist

        dist.barrier()
    remaining = sum(not _done(root, name, n) for name, _, chosen in plan for n in chosen)
    written = False
    if not interrupted and remaining == 0 and (dist_shard is None or rank == 0):
        write_index(root, plan, settings)
        written = True
    if dist_shard is not None:
        import torch.distributed as dist

        dist.barrier()
    return AtlasReport(root, computed, skipped, remaining, written, interrupted)


def _bars(enabled: bool, layers: int, filters: int, rank: int) -> list:
    if not enabled or filters == 0:
        return []
    from tqdm.auto import tqdm

    return [
        tqdm(total=layers, desc="layers", unit="layer", position=2 * rank, leave=True),
        tqdm(total=filters, desc="filters", unit="filter", position=2 * rank + 1, leave=True),
    ]


def _write_examples(
    model: nn.Module, root: Path, layer: str, filters: list[int], images: str | os.PathLike, k: int, size: int
) -> None:
    from .examples import find_examples

    scan = find_examples(model, layer, filters, images, k=k, size=size)
    d = _layer_dir(root, layer)
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


# -- the index: manifest, contact sheets, static HTML -------------------------------------------

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; }} td, th {{ padding: 4px 10px; border-bottom: 1px solid #ddd; text-align: left; }}
.grid {{ display: flex; flex-wrap: wrap; gap: 12px; }}
.card {{ width: 180px; font-size: 12px; }} .card img {{ width: 180px; height: 180px; image-rendering: auto; }}
.examples img {{ width: 56px; height: 56px; margin: 1px; }}
.dead {{ color: #b00; }} code {{ font-size: 12px; }}
</style></head>
<body data-images-ok="pending">
{body}
<script>
window.addEventListener("load", function () {{
  var imgs = Array.prototype.slice.call(document.images);
  var bad = imgs.filter(function (im) {{ return !(im.complete && im.naturalWidth > 0); }});
  document.body.setAttribute("data-images-ok", (imgs.length - bad.length) + "/" + imgs.length);
  bad.forEach(function (im) {{ console.error("image failed to load: " + im.getAttribute("src")); }});
}});
</script>
</body></html>
"""


def _write_text(path: Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _e(text: object) -> str:
    return html.escape(str(text))


def write_index(root: Path, plan: list[tuple[str, LayerInfo, list[int]]], settings: dict[str, Any]) -> Path:
    """Write contact sheets, ``manifest.json``, ``index.html`` and one page per layer under ``root``."""
    from .figures import plot_grid

    manifest: dict[str, Any] = {"settings": settings, "layers": [], "versions": versions()}
    layer_rows = []
    for name, row, chosen in plan:
        d = _layer_dir(root, name)
        records = {n: json.loads((d / f"{n:04d}.json").read_text()) for n in chosen}
        examples = json.loads((d / "examples.json").read_text()) if (d / "examples.json").exists() else None
        tiles = [load_image(d / f"{n:04d}.png") for n in chosen]
        labels = [f"{n}  ({records[n]['final_value']:.3g})" for n in chosen]
        title = (
            f"{settings['model']} {name}: {len(chosen)} filters, {settings['param']} image, "
            f"{settings['steps']} steps, lr {settings['lr']}, seed {settings['seed']}"
        )
        save_figure(plot_grid(tiles, labels, title=title), d / "sheet.png", dpi=110)
        manifest["layers"].append(
            {
                "name": name,
                "path": row.path,
                "shape": list(row.shape),
                "receptive_field": row.receptive_field,
                "filters": chosen,
                "final_values": [records[n]["final_value"] for n in chosen],
                "dead_units": [n for n in chosen if records[n]["dead_unit"]],
            }
        )
        cards = []
        for n in chosen:
            rec = records[n]
            ex_html = ""
            if examples is not None:
                found = examples["filters"].get(str(n), [])
                best = max((e["value"] for e in found), default=0.0)
                ratio = f"{rec['max_activation'] / best:.2f}x" if best > 0 else "n/a"
                ex_html = (
                    '<div class="examples">'
                    + "".join(
                        f'<img src="{_e(e["crop"])}" alt="example" '
                        f'title="{_e(Path(e["image"]).name)}: {e["value"]:.3g}">'
                        for e in found
                    )
                    + f"</div>synthesized / best natural max: {ratio}"
                )
            dead = ' <span class="dead">dead unit</span>' if rec["dead_unit"] else ""
            cards.append(
                f'<div class="card" id="f{n}"><a href="{n:04d}.png"><img src="{n:04d}.png" alt="filter {n}"></a>'
                f"<br><b>filter {n}</b>{dead}<br>mean activation {rec['final_value']:.4g}"
                f"<br>max activation {rec.get('max_activation', float('nan')):.4g}"
                f'<br><a href="{n:04d}.json">settings and curve</a>{ex_html}</div>'
            )
        body = (
            f'<p><a href="../index.html">&larr; all layers</a></p><h1>{_e(settings["model"])} {_e(name)}</h1>'
            f"<p>module <code>{_e(row.path)}</code>, output {'x'.join(map(str, row.shape))}, "
            f"receptive field {row.receptive_field} px. Settings: <code>{_e(json.dumps(settings))}</code></p>"
            f'<p><a href="sheet.png">contact sheet</a></p><div class="grid">{"".join(cards)}</div>'
        )
        _write_text(d / "index.html", _PAGE.format(title=_e(f"{settings['model']} {name}"), body=body))
        rel = d.relative_to(root).as_posix()
        layer_rows.append(
            f'<tr><td><a href="{rel}/index.html">{_e(name)}</a></td><td><code>{_e(row.path)}</code></td>'
            f"<td>{'x'.join(map(str, row.shape))}</td><td>{row.receptive_field}</td><td>{len(chosen)}</td>"
            f'<td><a href="{rel}/index.html"><img src="{rel}/sheet.png" alt="{_e(name)} sheet" height="90">'
            "</a></td></tr>"
        )
    body = (
        f"<h1>{_e(settings['model'])} atlas</h1><p>weights: {_e(settings['weights'])}; "
        f"settings: <code>{_e(json.dumps(settings))}</code></p>"
        "<table><tr><th>layer</th><th>module</th><th>output</th><th>RF</th><th>filters</th><th>sheet</th></tr>"
        + "".join(layer_rows)
        + "</table>"
    )
    index = _write_text(root / "index.html", _PAGE.format(title=_e(f"{settings['model']} atlas"), body=body))
    save_json(manifest, root / "manifest.json")
    return index
