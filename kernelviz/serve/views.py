"""What each page of the explorer shows, as plain data (strings, numbers, lists, dicts): read from the explorer
(its layer table, the atlas folder, the records on disk), computed with no tensor. The templates
(:mod:`~kernelviz.serve.pages`) turn them into HTML; a script gets the same data as JSON (``?format=json`` on every
page, :mod:`~kernelviz.serve.app`).

URLs are built here (:func:`~kernelviz.serve.urls.path`: each segment percent-encoded); the templates escape them.
"""

from __future__ import annotations

import json
import math
import os
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..core.layers import LayerInfo, field_text, grid_text
from ..sets.site import examples_view, trust_view, unit_view
from ..sets.variants import VARIANTS
from ..units.concepts import error_reading
from ..units.trust import MIN_IMAGES
from .explorer import Explorer
from .urls import API, PAGES, path

__all__ = [
    "PER_PAGE",
    "concepts_view",
    "filter_view",
    "image_view",
    "layer_view",
    "message_view",
    "model_view",
    "units_view",
]

#: Filters per layer page.
PER_PAGE = 48


def link(pattern: str, query: Mapping[str, object] | None = None, **parts: object) -> str:
    """The URL of one of the explorer's paths (:mod:`~kernelviz.serve.urls`) with a query."""
    q = urllib.parse.urlencode({k: v for k, v in (query or {}).items() if v is not None})
    return path(pattern, **parts) + ("?" + q if q else "")


def _frame(ex: Explorer, title: str, page: str, **data: object) -> dict[str, Any]:
    """What every page carries: its title, the model, and the ``data-*`` attributes its script reads."""
    return {"title": title, "model": ex.meta.name, "weights": ex.meta.weights, "data": {"page": page, **data}}


def _shape(row: LayerInfo) -> str:
    return "x".join(map(str, row.output or row.shape))


def message_view(ex: Explorer, title: str, message: str) -> dict[str, Any]:
    """A page that says what went wrong."""
    return {**_frame(ex, title, "message"), "message": message}


def model_view(ex: Explorer) -> dict[str, Any]:
    """The layer table (shape, channels, receptive field) and the depth; each layer with a page linked."""
    table = ex.table
    explorable = {r.name for r in ex.unit_layers()}
    conceptual = {r.name for r in ex.concepts.layers()}
    rows = []
    for r in table.rows:
        page = r.name in explorable
        rows.append(
            {
                "name": r.name,
                "link": link(PAGES["layer"], layer=r.name) if page else None,
                "concepts": link(PAGES["concepts"], layer=r.name) if r.name in conceptual else None,
                "path": r.path,
                "type": r.type,
                "block": r.kind == "block",
                "output": _shape(r),
                "units": r.channels,
                "grid": grid_text(r),
                "field": field_text(r.receptive_field, table.size),
                "pictures": f"{len(ex.done(r.name))}/{r.channels}" if page else "",
            }
        )
    return {
        **_frame(ex, f"{table.model}: layers", "model"),
        "name": table.model,
        "size": table.size,
        "depth": table.depth,
        "convs": table.convs,
        "fcs": table.fcs,
        "root": str(ex.root),
        "aliased": table.aliased,  # a module column only where some name is not its path (VGG's conv3_2)
        "rows": rows,
        "labelled": bool(ex.folder.unit_layers()),  # units.json written: units can be searched by label
        "search": PAGES["units"],
    }


def units_view(ex: Explorer, label: str) -> dict[str, Any]:
    """The units labelled like ``label`` over every layer with a ``units.json``, best AUC first."""
    found = ex.folder.labelled(label) if label.strip() else []
    return {
        **_frame(ex, f"{ex.meta.name}: units labelled {label}", "units"),
        "label": label,
        "search": PAGES["units"],
        "found": [
            {"layer": f["layer"], "unit": f["unit"], "link": link(PAGES["filter"], layer=f["layer"], n=f["unit"]),
             "name": f["label"]["name"], "kind": f["label"]["kind"], "auc": f"{f['label']['auc']:.3f}",
             "images": f["label"]["images"], "frequency": f"{100 * f['frequency']:.0f}%"}
            for f in found
        ],
    }  # fmt: skip


def _carried(unit: dict[str, Any]) -> dict[str, Any]:
    """The class a unit carries most and the estimated drop of its probability (``units.json`` with importance)."""
    found = unit.get("matters_for")
    classes = found.get("classes") if isinstance(found, dict) else None
    best = classes[0] if isinstance(classes, list) and classes and isinstance(classes[0], dict) else None
    drop = best.get("drop") if best else None
    if best is None or not isinstance(drop, int | float) or not isinstance(best.get("name"), str):
        return {"matters": "", "carried": None}
    return {"matters": best["name"], "carried": float(drop)}


def _photo_form(
    ex: Explorer, slot: str, fields: Mapping[str, object], kinds: Mapping[str, str], button: str, about: str,
    chosen: Mapping[str, str] | None = None, layers: list[dict[str, str]] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """A form that makes a picture from a photo (``/api/photo.png``, shown in the element ``slot``): the photos
    offered (``chosen`` first), ``kinds`` (value -> label), hidden ``fields``, an optional layer chooser."""
    photos = ex.photos.offered()
    if chosen and chosen not in [q for q, _ in photos]:
        photos.insert(0, (dict(chosen), "this page's photo"))
    return {
        "slot": slot,
        "fields": {k: str(v) for k, v in fields.items()},
        "kinds": dict(kinds),
        "button": button,
        "about": about,
        "photos": [{"value": urllib.parse.urlencode(q), "label": label, "chosen": q == chosen} for q, label in photos],
        "layers": layers,
        "image_page": PAGES["image"],
    }


def layer_view(ex: Explorer, layer: str, page: int = 0, photo: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The layer's filters, ``PER_PAGE`` at a time: pictures on disk at once (else a quick preview), the others
    computed and shown as they arrive; a caricature or DeepDream of a photo (``photo``: offered first)."""
    row = ex.row(layer)
    first, last = page * PER_PAGE, min(row.channels, (page + 1) * PER_PAGE)
    done = set(ex.done(layer))
    tiles, missing = [], []
    for n in range(first, last):
        tile: dict[str, Any] = {"n": n, "link": link(PAGES["filter"], layer=layer, n=n), "done": n in done}
        if n in done:
            record = ex.folder.written_record(layer, n)
            tile["value"] = f"mean {record['final_value']:.4g}" + (
                " (not raised from noise)" if record["dead_unit"] else ""
            )
            tile["src"] = ex.file_url(ex.folder.picture(layer, n))
        else:
            missing.append(n)
            preview = ex.folder.preview(layer, n)
            tile["preview"] = ex.file_url(preview) if preview.exists() else None
            tile["value"] = "preview" if preview.exists() else ""
        tiles.append(tile)
    pages = [
        {
            "label": f"{p * PER_PAGE}-{min(row.channels, (p + 1) * PER_PAGE) - 1}",
            "link": None if p == page else link(PAGES["layer"], {"page": p}, layer=layer),
        }
        for p in range((row.channels + PER_PAGE - 1) // PER_PAGE)
    ]
    units = ex.folder.units(layer)
    unit_rows = []
    for u in [] if units is None else units["units"]:
        best = u["labels"][0] if u["labels"] else None
        unit_rows.append(
            {"n": u["unit"], "link": link(PAGES["filter"], layer=layer, n=u["unit"]), "frequency": u["frequency"],
             "mean": u["mean"], "max": u["max"], "state": "dead" if u["dead"] else "dense" if u["dense"] else "",
             "label": best["name"] if best else "", "auc": best["auc"] if best else None,
             "labels": " ".join(x["name"] for x in u["labels"]), **_carried(u)}
        )  # fmt: skip
    if any(u["carried"] is not None for u in unit_rows):  # what each unit matters for: the units that carry most first
        unit_rows.sort(key=lambda u: -u["carried"] if u["carried"] is not None else math.inf)
    source = ex.wiring.computed_from(layer)
    origin = None if source is None else {"name": source, "link": link(PAGES["layer"], {"page": page}, layer=source)}
    after = ex.concepts.after(layer)
    s = ex.optim
    return {
        **_frame(ex, f"{ex.meta.name} {layer}", "layer", layer=layer, missing=json.dumps(missing)),
        "layer": layer,
        "path": row.path,
        "output": _shape(row),
        "read_as": _read_as(row),
        "field": field_text(row.receptive_field, ex.table.size),
        "channels": row.channels,
        "settings": f"{s.param} image{_fourier_text(s.param, s.detail, s.decay)}, {s.steps} steps, lr {s.lr}, "
        f"seed {s.seed}, batches of {s.batch_size}",
        "pages": pages,
        "kind": _kind_words(row),
        "source": origin,
        "concepts": None if after is None else {"name": after, "link": link(PAGES["concepts"], layer=after)},
        "missing": len(missing),
        "shown": last - first,
        "tiles": tiles,
        "units": unit_rows,
        "units_images": None if units is None else units["images"],
        "units_matter": any(u["carried"] is not None for u in unit_rows),
        "can_estimate": ex.images is not None,
        "photo_picker": _photo_form(
            ex,
            "photo-picture",
            {"layer": layer},
            {"caricature": "caricature", "dream": "DeepDream"},
            "make it",
            "caricature: a picture from noise whose activation here points the way of the photo's (what the layer "
            "keeps of it); DeepDream: the photo with what the layer sees in it made stronger",
            photo,
        ),
    }


def _thumb(ex: Explorer, layer: str, n: int) -> dict[str, Any]:
    """A neighbour's picture, small, when made; else a placeholder the page's script fills when it is made."""
    picture = ex.folder.picture(layer, n)
    return {"layer": layer, "filter": n, "src": ex.file_url(picture) if picture.exists() else None}


def _neighbours(ex: Explorer, units: list[tuple[str, int, float | None]], what: str) -> dict[str, Any] | None:
    """Linked units with thumbnails; the units whose pictures are not made yet (a button makes them)."""
    if not units:
        return None
    items = [
        {"link": link(PAGES["filter"], layer=layer, n=c), "thumb": _thumb(ex, layer, c), "layer": layer, "filter": c,
         "weight": None if norm is None else f"{norm:.3g}"}
        for layer, c, norm in units
    ]  # fmt: skip
    missing = [[layer, c] for layer, c, _ in units if not ex.folder.picture(layer, c).exists()]
    return {"title": what, "items": items, "missing": json.dumps(missing) if missing else None, "count": len(missing)}


def filter_view(ex: Explorer, layer: str, n: int, photo: Mapping[str, str] | None = None) -> dict[str, Any]:
    """One filter: picture, curve, settings, kernel, the units feeding it and fed by it, examples, variants, the
    accentuation of a photo (``photo`` offered first)."""
    row = ex.check_filter(layer, n)
    record = ex.folder.record(layer, n)
    d = ex.folder.layer(layer)
    missing = {"self-missing": "1" if record is None else "0"}
    view: dict[str, Any] = {
        **_frame(ex, f"{ex.meta.name} {layer} filter {n}", "filter", layer=layer, filter=n, **missing),
        "layer": layer,
        "n": n,
        "layer_link": link(PAGES["layer"], {"page": n // PER_PAGE}, layer=layer),
        "previous": link(PAGES["filter"], layer=layer, n=n - 1) if n > 0 else None,
        "next": link(PAGES["filter"], layer=layer, n=n + 1) if n + 1 < row.channels else None,
    }
    if record is None:
        preview = ex.folder.preview(layer, n)
        view["picture"] = None
        view["preview"] = ex.file_url(preview) if preview.exists() else None
    else:
        recorded = record.get("settings", {})
        keys = ("param", "detail", "decay", "steps", "lr", "seed", "size", "transforms")
        view["picture"] = {
            "src": ex.file_url(ex.folder.picture(layer, n)),
            "mean": record["final_value"],
            "max": record.get("max_activation", float("nan")),
            "dead": bool(record.get("dead_unit")),
            "pre": _past_cap(record),
            "curve": _curve([float(v) for v in record.get("curve") or []]),
            "settings": json.dumps({k: recorded[k] for k in keys if recorded.get(k) is not None}),
            "record": ex.file_url(ex.folder.record_file(layer, n)),
        }
    if ex.is_conv(layer):
        fed = ex.wiring.feeders(layer, n)
        view["image_inputs"] = [
            {"channel": "RGB"[u.unit] if u.unit < 3 else str(u.unit), "weight": f"{u.weight:.3g}"}
            for u in fed
            if u.layer is None
        ]
        view["feeders"] = _neighbours(ex, [(u.layer, u.unit, u.weight) for u in fed if u.layer], "fed most by")
        view["kernel"] = link(API["kernel"], layer=layer, n=n)
    else:
        source = ex.wiring.computed_from(layer)
        view["image_inputs"] = []
        view["feeders"] = _neighbours(ex, [(source, n, None)] if source else [], "computed from")
        view["kernel"] = None
    view["feeds"] = _neighbours(ex, [(u.layer or "", u.unit, u.weight) for u in ex.wiring.feeds_into(layer, n)],
                                "feeds most")  # fmt: skip
    examples = ex.examples(layer)
    most = record.get("max_activation", float("nan")) if record else float("nan")
    view["examples"] = (
        None
        if examples is None
        else examples_view(examples, n, most, src=lambda crop: ex.file_url(Path(os.path.normpath(d / crop))), thumb=112)
    )
    units = ex.folder.units(layer)
    view["stats"] = (
        None
        if units is None
        else unit_view(units, n, src=lambda crop: ex.file_url(Path(os.path.normpath(d / crop))), thumb=112)
    )
    view["can_scan"] = ex.images is not None
    # the path check, always on with --images: a picture not checked yet is checked when its page opens
    view["trust"] = trust_view(record.get("trust")) if record else None
    unchecked = ex.images is not None and record is not None and "trust" not in record
    view["check_pending"] = unchecked and ex.photos.count() >= MIN_IMAGES
    view["check_note"] = unchecked and not view["check_pending"]
    view["ablations"] = _ablations(ex, layer, n)
    made = ex.variants(layer, n)
    view["variants"] = [
        {"kind": kind, "what": what, "src": ex.file_url(made[kind]) if kind in made else None,
         "value": _variant_value(made[kind]) if kind in made else ""}
        for kind, what in VARIANTS.items()
    ]  # fmt: skip
    view["photo_picker"] = _photo_form(
        ex,
        "photo-picture",
        {"layer": layer, "filter": n},
        {"accentuate": "accentuate"},
        "accentuate it",
        "the photo changed so that this filter responds more, kept close to it (feature accentuation): what in the "
        "photo drives it",
        photo,
    )
    return view


def _past_cap(record: dict[str, Any]) -> str | None:
    """What a picture of a capped unit climbed (its pre-activation, the cap stopping no gradient there)."""
    pre = record.get("pre_activation")
    if not isinstance(pre, int | float):
        return None
    at_cap = " (the picture reaches the cap)" if record.get("at_cap") else ""
    return f"climbed on its pre-activation, past the activation's cap: mean pre-activation {pre:.4g}{at_cap}"


def _curve(history: list[float]) -> dict[str, Any] | None:
    """The objective per step as the points of an inline SVG polyline (no plotting library in the page)."""
    if len(history) < 2:
        return None
    lo, hi = min(history), max(history)
    span = (hi - lo) or 1.0
    w, h = 320, 120
    points = " ".join(f"{w * i / (len(history) - 1):.1f},{h - h * (v - lo) / span:.1f}" for i, v in enumerate(history))
    return {"width": w, "height": h, "points": points, "first": f"{history[0]:.3g}", "last": f"{history[-1]:.3g}",
            "steps": len(history) - 1}  # fmt: skip


def _variant_value(picture: Path) -> str:
    """What a variant reached, from its record: ``mean activation 3.2`` (a diversity batch: each image's)."""
    try:
        record = json.loads(picture.with_suffix(".json").read_text(encoding="utf-8"))
        values = record.get("batch_final_values") or [record.get("final_value")]
        shown = ", ".join(f"{float(v):.4g}" for v in values if v is not None)
    except (OSError, ValueError, TypeError, AttributeError):
        return ""
    return f"mean activation {shown}" if shown else ""


def concepts_view(ex: Explorer, layer: str, class_name: str | None = None) -> dict[str, Any]:
    """A layer's concepts over ``--images`` (or one class of it): each concept's picture, its strongest patches, its
    share of the reconstruction and its importance; a button finds them when they are not found yet."""
    row = ex.concepts.row(layer)
    data = ex.concepts.found(layer, class_name)
    d = ex.concepts.folder(layer, class_name)
    classes = ex.concepts.classes()
    cards = []
    for c in data["concepts"] if data else []:
        ratio = c.get("picture_to_best_patch")
        cards.append(
            {
                "index": c["index"],
                "picture": ex.file_url(d / c["picture"]) if c.get("picture") else None,
                "share": f"{100 * c['share']:.1f}%",
                "importance": None if c.get("importance") is None else f"{c['importance']:+.3g}",
                "ratio": None if ratio is None or ratio != ratio else f"{ratio:.2f}",
                "patches": [
                    {"src": ex.file_url(d / p["crop"]), "title": f"{Path(p['image']).name}: code {p['code']:.3g}"}
                    for p in c["patches"]
                ],
                "classes": [{"name": name, "value": f"{value:.3g}"} for name, value in c.get("classes", [])],
            }
        )
    about = None
    if data:
        about = {
            "k": data["k"],
            "samples": data["samples"],
            "images": data["images"],
            "error": error_reading(float(data["reconstruction_error"]), int(data["k"]), bool(classes)),
            "target": data["target"],
            "method": data["importance_method"],
            "file": ex.file_url(d / "concepts.json"),
        }
    return {
        **_frame(ex, f"{ex.meta.name} {layer} concepts", "concepts", layer=layer, **{"class": class_name or ""}),
        "layer": layer,
        "output": "x".join(map(str, row.shape)),
        "all_link": link(PAGES["concepts"], layer=layer) if class_name else None,
        "classes": [{"name": c, "label": label} for c, label in zip(classes, ex.concepts.names(), strict=True)],
        "class_name": class_name,
        "images": None if ex.images is None else str(ex.images),
        "k": len(data["concepts"]) if data else 8,
        "found": data is not None,
        "about": about,
        "cards": cards,
    }


def image_view(
    ex: Explorer, analysis: dict[str, Any] | None, query: Mapping[str, str], scaled: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Upload or pick a photo; then its top-5, a heatmap, feature maps, the filters that fire most, and its
    prediction as a chosen unit is scaled from 0 to 4x (``scaled``: :func:`~kernelviz.units.ablation.scaling_curve`,
    or ``{"error": ...}``)."""
    view: dict[str, Any] = {
        **_frame(ex, f"{ex.meta.name}: image", "image"),
        "picks": ex.photos.picks(),
        "analysis": None,
    }
    if analysis is None:
        return view
    key = {k: v for k, v in query.items() if k in ("upload", "pick")}
    methods = ex.photos.methods()
    names = [r.name for r in ex.unit_layers()]
    depths = ex.depth_layers()
    firing = [
        {
            "layer": name,
            "units": [
                {"link": link(PAGES["filter"], key, layer=name, n=c), "thumb": _thumb(ex, name, c), "filter": c,
                 "value": f"{v:.3g}", "scale": link(PAGES["image"], {**key, "scale_layer": name, "scale_unit": c})}
                for c, v in top
            ],
        }
        for name, top in analysis["firing"].items()
    ]  # fmt: skip
    found = ex.concepts.everything()
    chosen_concepts = query.get("concepts")
    view["analysis"] = {
        "key": key,
        "src": link(API["image"], key),
        "predictions": [
            {"index": i, "name": name or "(no name)", "p": f"{p:.3f}"} for i, name, p in analysis["predictions"]
        ],
        "methods": [{"name": m, "chosen": m == (query.get("method") if query.get("method") in methods else "gradcam")}
                    for m in methods],
        "target": query.get("target", ""),
        "filter": query.get("filter", ""),
        "layers": [{"name": name, "chosen": name == query.get("layer")} for name in names],
        "concepts": [
            {"value": v, "label": f"{layer}" + (f" ({c})" if c else ""), "chosen": v == chosen_concepts}
            for layer, c in found
            for v in [urllib.parse.urlencode({"layer": layer, "class": c or ""})]
        ],
        "firing": firing,
        "scale_layer": query.get("scale_layer", ""),
        "scale_unit": query.get("scale_unit", ""),
        "scaled": _scaled(scaled),
        "photo_picker": _photo_form(
            ex,
            "caricature",
            {},
            {"caricature": "caricature", "dream": "DeepDream"},
            "make it",
            "caricature: a picture made from noise whose activation at the layer points the way of the image's (early "
            "layers keep colors and textures, late ones parts); DeepDream: the image with what the layer sees in it "
            "made stronger",
            key,
            [{"value": "", "label": f"every depth ({', '.join(depths)})"}] + [{"value": n, "label": n} for n in names],
        ),
    }  # fmt: skip
    return view


def _scaled(found: dict[str, Any] | None) -> dict[str, Any] | None:
    """A scaling curve as a table: one row per class, one column per factor, each cell a probability (and a bar)."""
    if found is None:
        return None
    if "error" in found:
        return {"error": found["error"]}
    return {
        "layer": found["layer"],
        "unit": found["unit"],
        "factors": [f"{f:g}x" for f in found["factors"]],
        "rows": [
            {"name": c["name"], "index": c["index"],
             "cells": [{"p": f"{p:.3f}", "width": round(60 * p)} for p in c["p"]]}
            for c in found["classes"]
        ],
    }  # fmt: skip


def _ablations(ex: Explorer, layer: str, n: int) -> list[dict[str, Any]]:
    """Filter ``n``'s ablations over ``--images`` (switched off, amplified 4x), as the page shows them."""
    words = {"zero": "switched off", "x4": "amplified 4x"}
    shown = []
    for kind, data in ex.ablations(layer, n).items():
        try:
            by_name = {c["name"]: c for c in data["classes"].values()}  # "hurt" and "helped" name them
            shown.append(
                {
                    "kind": kind,
                    "what": words.get(kind, kind),
                    "images": data["images"],
                    "accuracy": [f"{100 * a:.1f}%" for a in data["accuracy"]],
                    "changed": data["changed"],
                    "matching": data["matching"],
                    "hurt": [_moved(name, by_name[name]) for name in data["hurt"][:5]],
                    "helped": [_moved(name, by_name[name]) for name in data["helped"][:5]],
                    "groups": _moved_groups(data.get("groups") or {}),
                }
            )
        except (KeyError, TypeError, IndexError, ValueError):  # a damaged record: not shown, made again on request
            continue
    return shown


def _moved_groups(groups: dict[str, Any], n: int = 5) -> list[dict[str, Any]]:
    """The WordNet groups whose probability moved most (either way) in an ablation record, most first."""
    rows = [
        (abs(g["probability"][1] - g["probability"][0]), name, g)
        for name, g in groups.items()
        if isinstance(g, dict) and all(isinstance(p, int | float) for p in g.get("probability") or [None])
    ]
    return [_moved(name, g) for _, name, g in sorted(rows, key=lambda r: -r[0])[:n]]


def _moved(name: str, outcome: dict[str, Any]) -> dict[str, Any]:
    """One class's or group's row of an ablation record: its mean probability before and after, its images."""
    before, after = outcome["probability"]
    return {"name": name, "before": f"{before:.3f}", "after": f"{after:.3f}", "images": outcome["images"]}


def _kind_words(row: LayerInfo) -> str:
    """What a layer that is not a convolution is, in words: ``"a block output"``, ``"an activation"``,
    ``"a MaxPool2d layer"``."""
    if row.kind == "block":
        return "a block output"
    return "an activation" if row.kind == "activation" else f"a {row.type} layer"


def _read_as(row: LayerInfo) -> str:
    """How a token or channels-last output is read: ``" (read as 3072 units on the 14x14 patch grid, 1 prefix token
    left out)"``; nothing for a map."""
    if row.layout == "tokens":
        left = f", {row.prefix} prefix token{'s' if row.prefix != 1 else ''} left out" if row.prefix else ""
        return f" (read as {row.channels} units on the {row.shape[1]}x{row.shape[2]} patch grid{left})"
    if row.layout == "channels_last":
        return f" (channels-last: read as {row.channels} units on its {row.shape[1]}x{row.shape[2]} grid)"
    return ""


def _fourier_text(param: object, detail: float, decay: float) -> str:
    """`` (detail 0.57, decay 1.25)`` for the Fourier image, whose pictures those two shape; nothing otherwise."""
    return f" (detail {detail:g}, decay {decay:g})" if param == "fourier" else ""
