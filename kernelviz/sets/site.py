"""The atlas's static site: contact sheets, ``manifest.json``, ``index.html`` and one page per layer.

The pages are templates (``sets/templates/``) filled with plain data by :func:`~kernelviz.files.html.render`, which
escapes every value: layer and module names come from the user's model and may hold any character, and links are
built here (each path segment percent-encoded) before the template escapes them as attribute values.
"""

from __future__ import annotations

import json
import math
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core.layers import LayerInfo, field_text
from ..files.html import render
from ..files.images import load_image
from ..files.records import versions
from ..files.write import save_figure, save_json, write_bytes
from ..units.examples import ratio_to_natural
from .folder import AtlasFolder, picture_name, record_name

__all__ = ["examples_view", "link", "trust_view", "unit_view", "write_index"]


def link(path: str) -> str:
    """A relative file path as a link: each segment percent-encoded (so ``#``, ``?``, ``:`` and quotes in a name
    cannot change what the link means); the template escapes it as an attribute value."""
    return urllib.parse.quote(path, safe="/")


def _write_text(path: Path, content: str) -> Path:
    return write_bytes(path, lambda buffer: buffer.write(content.encode("utf-8")))


def _shape(row: LayerInfo) -> str:
    return "x".join(map(str, row.shape))


def examples_view(
    layer: dict[str, Any], n: int, max_activation: float, src: Callable[[str], str] = link, thumb: int = 56
) -> dict[str, Any]:
    """The dataset examples of filter ``n`` from a layer's ``examples.json``, as the data of the ``examples`` macro
    (``files/templates/examples.html``) that the static site and the live explorer both show: the top crops with
    their image, class and value, the synthesized picture's maximum over the best natural one's, and, when the scan
    has them, the images of highest mean activation, the most negative ones, and the classes the filter responds to.

    Args:
        layer: the layer's ``examples.json`` content.
        src: a crop's path relative to its layer's folder → its URL.
        thumb: the side of a thumbnail on the page, in CSS pixels.
    """
    key = str(n)
    found = layer["filters"].get(key, [])
    side = layer.get("size") or 224
    ratio = ratio_to_natural(max_activation, [e["value"] for e in found])
    rankings = [
        {"name": name, "title": title, "found": _crops(layer.get(name, {}).get(key) or [], src, side, thumb)}
        for name, title in (("mean", "highest mean activation"), ("bottom", "most negative (lowest minimum)"))
        if layer.get(name, {}).get(key)
    ]
    classes = layer.get("classes", {}).get(key)
    return {
        "top": _crops(found, src, side, thumb),
        "notes": _ranking_notes(layer, key, found),
        "ratio": f"{ratio:.2f}x" if ratio == ratio else "n/a",  # nan: no natural image excites the filter
        "rankings": rankings,
        "classes": {
            "mean": ", ".join(f"{c} {v:.3g}" for c, v in classes["mean"]),
            "top": ", ".join(f"{c} {count}" for c, count in classes["top"]),
        }
        if classes
        else None,
    }


def unit_view(
    units: dict[str, Any], n: int, src: Callable[[str], str] = link, thumb: int = 56
) -> dict[str, Any] | None:
    """Unit ``n``'s statistics and labels from a layer's ``units.json`` (:func:`~kernelviz.sets.examples.write_scan`),
    as the data of the ``unit_stats`` macro: frequency, dead, dense, mean and max, its label and best labels, a
    histogram of its per-image maxima drawn as bars, the images around quantiles of them. ``None``: no such unit."""
    unit = next((u for u in units["units"] if u["unit"] == n), None)
    if unit is None:
        return None
    side = units.get("size") or 224
    labels = [
        {"name": label["name"], "kind": label["kind"], "auc": f"{label['auc']:.3f}", "images": label["images"],
         "p": f"{label['p']:.2g}" if isinstance(label.get("p"), (int, float)) and math.isfinite(label["p"]) else None}
        for label in unit["labels"]
    ]  # fmt: skip
    quantiles = [
        {"label": f"{round(100 * q['q'])}th percentile" if q["q"] < 1 else "maximum",
         "found": _crops(q["examples"], src, side, thumb)}
        for q in unit["quantiles"]
    ]  # fmt: skip
    return {
        "images": units["images"],
        "frequency": f"{100 * unit['frequency']:.1f}%",
        "dead": unit["dead"],
        "dense": unit["dense"],
        "dense_share": f"{100 * units.get('dense_threshold', 0.95):.0f}%",
        "mean": f"{unit['mean']:.3g}",
        "max": f"{unit['max']:.3g}",
        "label": labels[0] if labels else None,
        "labels": labels,
        "floor": units.get("label_floor"),
        "least": units.get("label_images"),
        "alpha": units.get("alpha"),
        "tested": units.get("labels_tested"),
        "histogram": _histogram_svg(unit["histogram"], units.get("ranked_by", "activation")),
        "quantiles": quantiles,
        "matters": _matters(unit.get("matters_for")),
    }


def _matters(found: Any) -> dict[str, Any] | None:
    """What the unit matters for (``units.json``'s ``"matters_for"``), as text per kind; ``None`` when absent or
    malformed."""
    if not isinstance(found, dict):
        return None
    out: dict[str, Any] = {"estimate": str(found.get("estimate", ""))}
    for kind in ("classes", "groups", "labels"):
        rows = found.get(kind)
        if not isinstance(rows, list) or not all(
            isinstance(r, dict) and isinstance(r.get("name"), str) and isinstance(r.get("drop"), int | float)
            for r in rows
        ):
            return None
        out[kind] = [{"name": r["name"], "drop": f"{r['drop']:+.3g}", "images": r.get("images")} for r in rows]
    return out


def _histogram_svg(histogram: dict[str, Any], ranked_by: str, width: int = 380, height: int = 80) -> dict[str, Any]:
    """A histogram's bars in SVG units (the template draws them): a bar per bin, its count on hover."""
    edges, counts = histogram["edges"], histogram["counts"]
    most = max(counts) if counts else 0
    step = width / max(1, len(counts))
    bars = [
        {"x": round(i * step, 1), "w": round(max(step - 1, 1), 1), "h": round(height * c / most, 1) if most else 0,
         "y": round(height - (height * c / most if most else 0), 1),
         "title": f"{c} image{'s' if c != 1 else ''} from {edges[i]:.3g} to {edges[i + 1]:.3g}"}
        for i, c in enumerate(counts)
    ]  # fmt: skip
    low, high = edges[0], edges[-1]
    zero = round(width * (0 - low) / (high - low), 1) if low < 0 < high else None
    what = "per-image maximum" + (" of the pre-activation" if ranked_by == "pre-activation" else "")
    shown = zero if zero is not None and 30 < zero < width - 40 else None  # its "0" not over the ends' values
    return {"width": width, "height": height, "bars": bars, "low": f"{low:.3g}", "high": f"{high:.3g}", "zero": zero,
            "zero_label": shown, "what": what, "most": most}  # fmt: skip


def _crops(found: list[dict[str, Any]], src: Callable[[str], str], side: int, thumb: int) -> list[dict[str, Any]]:
    """Each example with its activation (and class) under it, the image's file name on hover. An example showing a
    square of a shared image (``examples-images/``) is that square of it, scaled to the thumbnail (``frame``: the
    thumbnail's size; ``view``: the image's displayed size and shift)."""

    def caption(e: dict[str, Any]) -> str:
        return f"{e['value']:.3g}" + (f" ({e['class']})" if "class" in e else "")

    def title(e: dict[str, Any]) -> str:  # what ranked it, when it is not the value shown
        ranked = f", ranked by {e['score']:.4g} before the activation" if isinstance(e.get("score"), float) else ""
        return f"{Path(e['image']).name}: {caption(e)}{ranked}"

    shown = []
    for e in found:
        item: dict[str, Any] = {"src": src(e["crop"]), "caption": caption(e), "title": title(e), "frame": None,
                                "view": None}  # fmt: skip
        box = e.get("box")
        if "examples-images/" in e["crop"] and isinstance(box, list) and len(box) == 4:
            x0, y0, x1, y1 = (float(v) for v in box)
            scale = thumb / max(x1 - x0, y1 - y0, 1.0)
            item["frame"] = {"width": round((x1 - x0) * scale), "height": round((y1 - y0) * scale)}
            item["view"] = {"size": round(side * scale), "left": round(-x0 * scale), "top": round(-y0 * scale)}
        shown.append(item)
    return shown


def _ranking_notes(layer: dict[str, Any], key: str, found: list[dict[str, Any]]) -> list[str]:
    """What to know of how a unit's examples were ranked: by the pre-activation past a cap (how many sit at the cap),
    and ties (their order is file order)."""
    notes = []
    cap = layer.get("cap")
    if layer.get("ranked_by") == "pre-activation":
        at_cap = sum(1 for e in found if isinstance(cap, int | float) and e["value"] >= cap)
        capped = f" ({at_cap} of {len(found)} at the activation's cap {cap:g})" if at_cap else ""
        notes.append(f"ranked by the pre-activation, which the cap does not flatten{capped}")
    ties = layer.get("ties", {}).get(key)
    if isinstance(ties, int) and ties > 1 and found:
        notes.append(f"{ties} of {len(found)} tied at {found[-1].get('score', found[-1]['value']):.4g}: among them, "
                     "file order")  # fmt: skip
    return notes


def trust_view(trust: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the pages show of a picture's ``"trust"`` record (:meth:`~kernelviz.units.trust.Trust.to_json`):
    the badge, the numbers rounded, one row per layer below (mean rank correlations)."""
    if not trust:
        return None
    cal = trust.get("calibration") or {}

    def num(v: Any) -> str:
        return "n/a" if v is None else f"{v:.2f}"

    rate = cal.get("held_out_flagged", cal.get("flagged"))
    return {
        "scored": trust.get("scored", trust.get("overall") is not None),
        "flagged": bool(trust.get("flagged")),
        "worst": trust.get("worst"),
        "overall": num(trust.get("overall")),
        "threshold": num(trust.get("threshold")),
        "rate": None if rate is None else f"{rate:.0%}",
        "auroc": None if cal.get("auroc") is None else num(cal["auroc"]),
        "weak": not cal.get("tells_apart", True),
        "rows": [
            {"layer": name, "picture": num(p), "natural": num(n), "random": num(r)}
            for name, p, n, r in zip(trust["layers"], trust["picture"], trust["natural"], trust["random"], strict=True)
        ],
    }


def _card(
    n: int,
    rec: dict[str, Any],
    examples: dict[str, Any] | None,
    negative: tuple[str, dict[str, Any]] | None = None,
    units: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One filter's card; ``negative``: its negative picture's link (relative to the layer page) and record;
    ``units``: the layer's ``units.json``."""
    return {
        "n": n,
        "picture": link(picture_name(n)),
        "record": link(record_name(n)),
        "dead": rec["dead_unit"],
        "mean": rec["final_value"],
        "max": rec.get("max_activation", float("nan")),
        "negative": None
        if negative is None
        else {"picture": negative[0], "mean": negative[1]["final_value"], "min": negative[1].get("min_activation")},
        "examples": None if examples is None else examples_view(examples, n, rec.get("max_activation", float("nan"))),
        "stats": None if units is None else unit_view(units, n),
        "trust": trust_view(rec.get("trust")),
    }


def write_index(root: Path, plan: list[tuple[str, LayerInfo, list[int]]], settings: dict[str, Any]) -> Path:
    """Write contact sheets, ``manifest.json``, ``index.html`` and one page per layer under ``root``.

    Args:
        root: the atlas folder of one model (``DIR/<model>``).
        plan: ``(layer name, its row of the layer table, filters)`` per layer, in order.
        settings: the atlas's ``settings.json`` content (optimization settings, model, weights).

    Returns:
        The path of ``index.html``.
    """
    from ..plot.grid import plot_grid  # matplotlib only when a site is written

    manifest: dict[str, Any] = {"settings": settings, "layers": [], "versions": versions()}
    layer_rows = []
    model = settings["model"]
    folder = AtlasFolder(root)
    for name, row, chosen in plan:
        records = {n: folder.written_record(name, n) for n in chosen}
        examples = folder.examples(name)
        tiles = [load_image(folder.picture(name, n)) for n in chosen]
        labels = [f"{n}  ({records[n]['final_value']:.3g})" for n in chosen]
        title = (
            f"{model} {name}: {len(chosen)} filters, {settings['param']} image, "
            f"{settings['steps']} steps, lr {settings['lr']}, seed {settings['seed']}"
        )
        save_figure(plot_grid(tiles, labels, title=title), folder.sheet(name), dpi=110)
        # the negative pictures (an atlas made with negative=True) beside the positive ones, and on their own sheet
        # a damaged negative picture is removed (folder.record): the index goes without it, a rerun with
        # negative=True makes it again
        negatives = {n: r for n in chosen if (r := folder.record(name, n, "negative")) is not None}
        if negatives:
            low = [n for n in chosen if n in negatives]
            save_figure(
                plot_grid(
                    [load_image(folder.picture(name, n, "negative")) for n in low],
                    [f"{n}  ({negatives[n]['final_value']:.3g})" for n in low],
                    title=f"NEGATIVE (minimized) pictures: {title}",
                ),
                folder.sheet(name, "negative"),
                dpi=110,
            )
        manifest["layers"].append(
            {
                "name": name,
                "path": row.path,
                "shape": list(row.shape),
                "receptive_field": row.receptive_field,
                "filters": chosen,
                "final_values": [records[n]["final_value"] for n in chosen],
                "dead_units": [n for n in chosen if records[n]["dead_unit"]],
                **({"negative_values": {str(n): r["final_value"] for n, r in negatives.items()}} if negatives else {}),
            }
        )
        layer_dir = folder.layer(name)
        units = folder.units(name)
        cards = [
            _card(
                n,
                records[n],
                examples,
                (link(folder.picture(name, n, "negative").relative_to(layer_dir).as_posix()), negatives[n])
                if n in negatives
                else None,
                units,
            )
            for n in chosen
        ]
        page = render(
            "kernelviz.sets",
            "layer.html",
            title=f"{model} {name}",
            model=model,
            name=name,
            path=row.path,
            shape=_shape(row),
            field=field_text(row.receptive_field, settings["size"]),
            settings=json.dumps(settings),
            sheet=link(folder.sheet(name).name),
            negative_sheet=link(folder.sheet(name, "negative").name) if negatives else None,
            cards=cards,
        )
        _write_text(folder.layer_index(name), page)
        layer_rows.append(
            {
                "name": name,
                "path": row.path,
                "page": link(folder.relative(folder.layer_index(name))),
                "sheet": link(folder.relative(folder.sheet(name))),
                "shape": _shape(row),
                "field": field_text(row.receptive_field, settings["size"]),
                "filters": len(chosen),
            }
        )
    index = _write_text(
        folder.index_file,
        render(
            "kernelviz.sets",
            "index.html",
            title=f"{model} atlas",
            model=model,
            weights=settings["weights"],
            settings=json.dumps(settings),
            rows=layer_rows,
        ),
    )
    save_json(manifest, folder.manifest_file)
    return index
