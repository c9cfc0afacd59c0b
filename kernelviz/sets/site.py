"""The atlas's static site: contact sheets, ``manifest.json``, ``index.html`` and one page per layer.

Every value that reaches HTML goes through one escaping helper per context (:mod:`kernelviz.files.escape`, which
the explorer's pages use too): ``text`` for element content, ``attr`` for attribute values, ``url`` for a relative
link to a file. Layer and module names come from the user's model and may hold any character.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core.layers import LayerInfo, field_text
from ..explain.examples import ratio_to_natural
from ..files.escape import attr, text, url
from ..files.images import load_image
from ..files.records import versions
from ..files.write import atomic_write, save_figure, save_json
from .folder import AtlasFolder, picture_name, record_name

__all__ = ["IMAGES_LOADED_SCRIPT", "attr", "examples_html", "text", "url", "write_index"]


#: Marks a page once its images are loaded: ``data-images-ok="loaded/total"`` and ``data-images-pending`` on the
#: body, and a console error for each image that failed (the browser tests read both). The static site and the
#: explorer's pages share it; the explorer's script calls ``kernelvizMarkImages()`` again as pictures arrive.
IMAGES_LOADED_SCRIPT = """window.kernelvizMarkImages = function () {
  var imgs = Array.prototype.slice.call(document.images);
  var bad = imgs.filter(function (im) { return !(im.complete && im.naturalWidth > 0); });
  document.body.setAttribute("data-images-ok", (imgs.length - bad.length) + "/" + imgs.length);
  document.body.setAttribute("data-images-pending", String(bad.length));
  return bad;
};
window.addEventListener("load", function () {
  window.kernelvizMarkImages().forEach(function (im) {
    console.error("image failed to load: " + im.getAttribute("src"));
  });
});"""

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; }} td, th {{ padding: 4px 10px; border-bottom: 1px solid #ddd; text-align: left; }}
.grid {{ display: flex; flex-wrap: wrap; gap: 12px; }}
.card {{ width: 180px; font-size: 12px; }} .card img {{ width: 180px; height: 180px; image-rendering: auto; }}
.card.both {{ width: 366px; }}
figure.ex {{ display: inline-block; margin: 1px; text-align: center; font-size: 10px; color: #555; }}
figure.ex img {{ width: 56px; height: 56px; display: block; }}
figure.ex figcaption {{ max-width: 56px; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }}
.dead {{ color: #b00; }} code {{ font-size: 12px; }}
</style></head>
<body data-images-ok="pending">
{body}
<script>
{script}
</script>
</body></html>
"""


def _write_text(path: Path, content: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(content, encoding="utf-8"))


def _shape(row: LayerInfo) -> str:
    return "x".join(map(str, row.shape))


def examples_html(layer: dict[str, Any], n: int, max_activation: float, src: Callable[[str], str] = url) -> str:
    """The dataset examples of filter ``n`` from a layer's ``examples.json``: the top crops with their image, class and
    value, the synthesized picture's maximum over the best natural one's, and, when the scan has them, the images of
    highest mean activation, the most negative ones, and the classes the filter responds to. The fragment the static
    site and the live explorer both show.

    Args:
        layer: the layer's ``examples.json`` content.
        src: a crop's path relative to its layer's folder → an attribute-escaped URL.
    """
    key = str(n)
    found = layer["filters"].get(key, [])
    ratio = ratio_to_natural(max_activation, [e["value"] for e in found])
    shown = f"{ratio:.2f}x" if ratio == ratio else "n/a"  # nan: no natural image excites the filter
    parts = [
        f'<div class="examples">{_crops(found, src) or "no image excites it"}</div>'
        f'<p class="small">synthesized / best natural max: {shown}</p>'
    ]
    for ranking, title in (("mean", "highest mean activation"), ("bottom", "most negative (lowest minimum)")):
        ranked = layer.get(ranking, {}).get(key)
        if ranked:
            parts.append(f'<p class="small">{title}</p><div class="examples {ranking}">{_crops(ranked, src)}</div>')
    classes = layer.get("classes", {}).get(key)
    if classes:
        means = ", ".join(f"{text(c)} {v:.3g}" for c, v in classes["mean"])
        tops = ", ".join(f"{text(c)} {count}" for c, count in classes["top"])
        parts.append(
            f'<p class="small classes">classes of highest mean activation: {means}<br>'
            f"classes of the top {len(found)} images: {tops}</p>"
        )
    return "".join(parts)


def _crops(found: list[dict[str, Any]], src: Callable[[str], str]) -> str:
    """Each crop with its activation (and class) under it; the image's file name on hover."""

    def caption(e: dict[str, Any]) -> str:
        return f"{e['value']:.3g}" + (f" ({e['class']})" if "class" in e else "")

    return "".join(
        f'<figure class="ex"><img src="{src(e["crop"])}" alt="example" title="{attr(Path(e["image"]).name)}: '
        f'{attr(caption(e))}"><figcaption>{text(caption(e))}</figcaption></figure>'
        for e in found
    )


def _card(
    n: int, rec: dict[str, Any], examples: dict[str, Any] | None, negative: tuple[str, dict[str, Any]] | None = None
) -> str:
    """One filter's card; ``negative``: its negative picture's link (relative to the layer page) and record."""
    extra = ""
    if examples is not None:
        extra = examples_html(examples, n, rec.get("max_activation", float("nan")))
    dead = ' <span class="dead">dead unit</span>' if rec["dead_unit"] else ""
    picture = url(picture_name(n))
    pictures = f'<a href="{picture}"><img src="{picture}" alt="filter {n}" title="positive: what excites it"></a>'
    values = f"mean activation {rec['final_value']:.4g}<br>max activation {rec.get('max_activation', float('nan')):.4g}"
    if negative is not None:
        link, low = negative
        pictures += (
            f' <a href="{link}"><img src="{link}" alt="filter {n} negative" title="negative: what inhibits it"></a>'
        )
        values = (
            f"positive: mean {rec['final_value']:.4g}, max {rec.get('max_activation', float('nan')):.4g}"
            f"<br>negative: mean {low['final_value']:.4g}, min {low.get('min_activation', float('nan')):.4g}"
        )
    both = " both" if negative is not None else ""
    return (
        f'<div class="card{both}" id="f{n}">{pictures}<br><b>filter {n}</b>{dead}<br>{values}'
        f'<br><a href="{url(record_name(n))}">settings and curve</a>{extra}</div>'
    )


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
        negatives = {
            n: folder.written_record(name, n, "negative") for n in chosen if folder.written(name, n, "negative")
        }
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
        cards = "".join(
            _card(
                n,
                records[n],
                examples,
                (url(folder.picture(name, n, "negative").relative_to(layer_dir).as_posix()), negatives[n])
                if n in negatives
                else None,
            )
            for n in chosen
        )
        sheets = f'<a href="{url(folder.sheet(name).name)}">contact sheet</a>'
        if negatives:
            sheets += f' &middot; <a href="{url(folder.sheet(name, "negative").name)}">negative contact sheet</a>'
            sheets += " &middot; each card: the positive picture, then the negative one (minimized)"
        body = (
            f'<p><a href="../index.html">&larr; all layers</a></p><h1>{text(model)} {text(name)}</h1>'
            f"<p>module <code>{text(row.path)}</code>, output {_shape(row)}, "
            f"receptive field {field_text(row.receptive_field, settings['size'])} px. "
            f"Settings: <code>{text(json.dumps(settings))}</code></p>"
            f'<p>{sheets}</p><div class="grid">{cards}</div>'
        )
        _write_text(
            folder.layer_index(name),
            _PAGE.format(title=text(f"{model} {name}"), body=body, script=IMAGES_LOADED_SCRIPT),
        )
        page, sheet = url(folder.relative(folder.layer_index(name))), url(folder.relative(folder.sheet(name)))
        layer_rows.append(
            f'<tr><td><a href="{page}">{text(name)}</a></td><td><code>{text(row.path)}</code></td>'
            f"<td>{_shape(row)}</td><td>{field_text(row.receptive_field, settings['size'])}</td><td>{len(chosen)}</td>"
            f'<td><a href="{page}"><img src="{sheet}" alt="{attr(name)} sheet" height="90"></a></td></tr>'
        )
    body = (
        f"<h1>{text(model)} atlas</h1><p>weights: {text(settings['weights'])}; "
        f"settings: <code>{text(json.dumps(settings))}</code></p>"
        "<table><tr><th>layer</th><th>module</th><th>output</th><th>RF</th><th>filters</th><th>sheet</th></tr>"
        + "".join(layer_rows)
        + "</table>"
    )
    index = _write_text(
        folder.index_file, _PAGE.format(title=text(f"{model} atlas"), body=body, script=IMAGES_LOADED_SCRIPT)
    )
    save_json(manifest, folder.manifest_file)
    return index
