"""The explorer's HTML pages. Every name from the model or the disk goes through one escaping helper per
context (:func:`~kernelviz.sets.site.text`, :func:`~kernelviz.sets.site.attr`, :func:`_href`)."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..core.layers import LayerInfo, field_text, grid_text
from ..explain.heatmaps import METHODS
from ..files.escape import attr, text
from ..sets.site import IMAGES_LOADED_SCRIPT, examples_html
from .explorer import VARIANTS, Explorer
from .urls import API, PAGES, api_json, path

__all__ = ["PER_PAGE", "concepts_page", "filter_page", "image_page", "layer_page", "message_page", "model_page"]

#: Filters per layer page.
PER_PAGE = 48


def _kind_words(row: LayerInfo) -> str:
    """What a layer that is not a convolution is, in words: ``"a block output"``, ``"an activation"``,
    ``"a MaxPool2d layer"``."""
    if row.kind == "block":
        return "a block output"
    return "an activation" if row.kind == "activation" else f"a {row.type} layer"


def _link(pattern: str, query: Mapping[str, object] | None = None, **parts: object) -> str:
    """The attribute-escaped URL of one of the explorer's paths (:mod:`~kernelviz.serve.urls`) with a query."""
    q = urllib.parse.urlencode({k: v for k, v in (query or {}).items() if v is not None})
    return attr(path(pattern, **parts) + ("?" + q if q else ""))


def _file_href(ex: Explorer, file: Path) -> str:
    """The attribute-escaped URL of a file of the atlas (``/files/...``, each segment percent-encoded)."""
    return attr(ex.file_url(file))


def _page(ex: Explorer, title: str, body: str, data: dict[str, Any] | None = None, token: str = "") -> str:
    extra = "".join(f' data-{k}="{attr(v)}"' for k, v in (data or {}).items())
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{text(title)}</title>"
        f'<link rel="icon" href="data:,"><link rel="stylesheet" href="{attr(PAGES["static"])}/style.css"></head>'
        f'<body data-api="{attr(api_json())}" data-token="{attr(token)}" data-images-ok="pending"{extra}>'
        f'<header><b>kernelviz</b><a href="{attr(PAGES["model"])}">{text(ex.meta.name)}</a>'
        f'<a href="{attr(PAGES["image"])}">image</a>'
        f'<span class="small">weights: {text(ex.meta.weights)}</span></header>'
        f"<main>{body}</main><script>{IMAGES_LOADED_SCRIPT}</script>"
        f'<script src="{attr(PAGES["static"])}/app.js"></script></body></html>'
    )


def _photo_form(
    ex: Explorer, slot: str, fields: Mapping[str, object], kinds: Mapping[str, str], button: str, about: str,
    chosen: Mapping[str, str] | None = None, layers: str = "",
) -> str:  # fmt: skip
    """A form that makes a picture from a photo (``/api/photo.png``, shown in the element ``slot``): the photo
    chooser (``chosen`` first), ``kinds`` (value -> label; a choice when several), hidden ``fields``, an optional
    layer ``<select>``."""
    photos = ex.photos()
    if chosen and chosen not in [q for q, _ in photos]:
        photos.insert(0, (dict(chosen), "this page's photo"))
    if not photos:
        return (
            f"<p class=small>{text(about)}: upload a photo on the "
            f'<a href="{attr(PAGES["image"])}">image page</a> (or start the server with --images DIR)</p>'
        )
    options = "".join(
        f'<option value="{attr(urllib.parse.urlencode(q))}"{" selected" if q == chosen else ""}>{text(label)}</option>'
        for q, label in photos
    )
    hidden = "".join(f'<input type="hidden" name="{attr(k)}" value="{attr(v)}">' for k, v in fields.items())
    if len(kinds) > 1:
        kind = '<select name="kind">' + "".join(
            f'<option value="{attr(k)}">{text(v)}</option>' for k, v in kinds.items()
        )
        kind += "</select> "
    else:
        kind = f'<input type="hidden" name="kind" value="{attr(next(iter(kinds)))}">'
    return (
        f'<form class="photo-form" data-slot="{attr(slot)}">{hidden}{kind}{layers}'
        f'<select name="photo" aria-label="photo">{options}</select> <button type="submit">{text(button)}</button> '
        f'<span class=small>{text(about)}</span></form><div id="{attr(slot)}" class="photo-out"></div>'
    )


def message_page(ex: Explorer, title: str, message: str) -> str:
    """A page that says what went wrong, and links home."""
    return _page(
        ex,
        title,
        f'<h1>{text(title)}</h1><p class="error">{text(message)}</p><p><a href="{attr(PAGES["model"])}">model</a></p>',
    )


def model_page(ex: Explorer, token: str = "") -> str:
    """The layer table (shape, channels, receptive field) and the depth; convolutions, activations and block
    outputs link to their pages."""
    table = ex.table
    explorable = {r.name for r in ex.unit_layers()}
    paths = table.aliased  # a module column only where some name is not its path (VGG's conv3_2)
    conceptual = {r.name for r in ex.concept_layers()}
    rows = []
    for r in table.rows:
        name = (
            f'<a href="{_link(PAGES["layer"], layer=r.name)}">{text(r.name)}</a>'
            if r.name in explorable
            else text(r.name)
        )
        if r.name in conceptual:
            name += f' <a class="small" href="{_link(PAGES["concepts"], layer=r.name)}">concepts</a>'

        done = len(ex.done(r.name)) if r.name in explorable else None
        kind = " <span class=small>(block)</span>" if r.kind == "block" else ""
        rows.append(
            f"<tr><td>{name}</td>{f'<td><code>{text(r.path)}</code></td>' if paths else ''}"
            f"<td>{text(r.type)}{kind}</td>"
            f"<td>{'x'.join(map(str, r.output or r.shape))}</td><td>{r.channels}</td><td>{text(grid_text(r))}</td>"
            f"<td>{text(field_text(r.receptive_field, table.size))}</td>"
            f"<td>{'' if done is None else f'{done}/{r.channels}'}</td></tr>"
        )
    body = (
        f"<h1>{text(table.model)}</h1>"
        f"<p>input {table.size}x{table.size}; depth {table.depth} ({table.convs} conv + {table.fcs} fully connected; "
        "only "
        "layers with trainable weights count). RF = receptive field in input pixels. Filter pictures are kept in "
        f"<code>{text(ex.root)}</code> (an atlas folder).</p>"
        f"<table><tr><th>layer</th>{'<th>module</th>' if paths else ''}"
        "<th>type</th><th>output</th><th>units</th><th>grid</th><th>RF</th>"
        "<th>pictures</th></tr>" + "".join(rows) + "</table>"
    )
    return _page(ex, f"{table.model}: layers", body, {"page": "model"}, token)


def layer_page(ex: Explorer, layer: str, page: int = 0, token: str = "", photo: Mapping[str, str] | None = None) -> str:
    """The layer's filters, ``PER_PAGE`` at a time: pictures on disk at once (else a quick preview), the others
    computed and shown as they arrive; a caricature or DeepDream of a photo (``photo``: offered first)."""
    row = ex.row(layer)
    first, last = page * PER_PAGE, min(row.channels, (page + 1) * PER_PAGE)
    done = set(ex.done(layer))
    tiles, missing = [], []
    for n in range(first, last):
        link = _link(PAGES["filter"], layer=layer, n=n)
        if n in done:
            record = ex.folder.written_record(layer, n)
            value = f"mean {record['final_value']:.4g}" + (" (dead unit)" if record["dead_unit"] else "")
            picture = f'<img src="{_file_href(ex, ex.folder.picture(layer, n))}" alt="filter {n}">'
        elif ex.folder.preview(layer, n).exists():  # its quick preview until the picture is made
            missing.append(n)
            src = _file_href(ex, ex.folder.preview(layer, n))
            value = "preview"
            picture = (
                f'<img class="preview" src="{src}" alt="filter {n} (preview)" '
                'title="a quick preview: the full picture follows">'
            )
        else:
            missing.append(n)
            value, picture = "", '<div class="wait">queued</div>'
        tiles.append(
            f'<div class="tile" id="f{n}" data-done="{int(n in done)}"><a href="{link}">{picture}</a>'
            f'<a href="{link}">filter {n}</a> <span class="value">{text(value)}</span></div>'
        )
    pages = (row.channels + PER_PAGE - 1) // PER_PAGE
    nav = " ".join(
        f'<a href="{_link(PAGES["layer"], {"page": p}, layer=layer)}">'
        f"{p * PER_PAGE}-{min(row.channels, (p + 1) * PER_PAGE) - 1}</a>"
        if p != page
        else f"<b>{p * PER_PAGE}-{last - 1}</b>"
        for p in range(pages)
    )
    s = ex.optim
    source = ex.computed_from(layer)
    origin = (
        f"<p>{text(_kind_words(row))}: channel n is computed from filter n of "
        f'<a href="{_link(PAGES["layer"], {"page": page}, layer=source)}">{text(source)}</a></p>'
        if source is not None
        else ""
    )
    after = ex.activation_after(layer)
    concepts = (
        f'<p>concepts: <a href="{_link(PAGES["concepts"], layer=after)}">what {text(after)} (its activation) '
        "represents over the images</a></p>"
        if after is not None
        else ""
    )
    body = (
        f'<p><a href="{attr(PAGES["model"])}">&larr; layers</a></p><h1>{text(ex.meta.name)} {text(layer)}</h1>'
        f"<p>module <code>{text(row.path)}</code>, output {'x'.join(map(str, row.output or row.shape))}"
        f"{_read_as(row)}, receptive field "
        f"{text(field_text(row.receptive_field, ex.table.size))} px; {row.channels} filters. Settings: {text(s.param)} "
        f"image{_fourier_text(s.param, s.detail, s.decay)}, {s.steps} steps, lr {s.lr}, seed {s.seed}, "
        f"batches of {s.batch_size}.</p>"
        f"<p>filters: {nav}</p>{origin}{concepts}"
        f'<div class="bar"><div></div></div> <div class="status" id="status">'
        f"{len(missing)} of {last - first} filters on this page still to compute</div>"
        f'<div class="grid">{"".join(tiles)}</div>'
        "<h2>the layer on a photo</h2>"
        + _photo_form(
            ex,
            "photo-picture",
            {"layer": layer},
            {"caricature": "caricature", "dream": "DeepDream"},
            "make it",
            "caricature: a picture from noise whose activation here points the way of the photo's (what the layer "
            "keeps of it); DeepDream: the photo with what the layer sees in it made stronger",
            photo,
        )
    )
    data = {"page": "layer", "layer": layer, "missing": json.dumps(missing)}
    return _page(ex, f"{ex.meta.name} {layer}", body, data, token)


def _curve_svg(history: list[float]) -> str:
    """The objective per step as an inline SVG polyline (no plotting library in the page)."""
    if len(history) < 2:
        return ""
    lo, hi = min(history), max(history)
    span = (hi - lo) or 1.0
    w, h = 320, 120
    points = " ".join(f"{w * i / (len(history) - 1):.1f},{h - h * (v - lo) / span:.1f}" for i, v in enumerate(history))
    return (
        f'<svg width="{w}" height="{h + 20}" role="img" aria-label="objective per step">'
        f'<polyline fill="none" stroke="#00897b" stroke-width="1.5" points="{points}"/>'
        f'<text x="0" y="{h + 16}" font-size="11">step 0: {history[0]:.3g}</text>'
        f'<text x="{w}" y="{h + 16}" font-size="11" text-anchor="end">'
        f"step {len(history) - 1}: {history[-1]:.3g}</text></svg>"
    )


def _thumb(ex: Explorer, layer: str, n: int) -> str:
    """A neighbour's picture, small, when made; else a placeholder the page's script fills when it is made."""
    where = f'data-layer="{attr(layer)}" data-filter="{n}"'
    if ex.folder.picture(layer, n).exists():
        src = _file_href(ex, ex.folder.picture(layer, n))
        return f'<img class="thumb" {where} src="{src}" alt="{attr(layer)} {n}">'
    return f'<div class="thumb wait" {where} title="not made yet">?</div>'


def _neighbours(ex: Explorer, units: list[tuple[str, int, float | None]], what: str) -> str:
    """A list of linked units with thumbnails; a button makes the pictures not made yet (their atlas batches)."""
    if not units:
        return ""
    items = []
    for layer, c, norm in units:
        value = "" if norm is None else f" <span class=small>(weight norm {norm:.3g})</span>"
        items.append(
            f'<li><a href="{_link(PAGES["filter"], layer=layer, n=c)}">{_thumb(ex, layer, c)}'
            f"{text(layer)} filter {c}</a>{value}</li>"
        )
    missing = [(layer, c) for layer, c, _ in units if not ex.folder.picture(layer, c).exists()]
    button = ""
    if missing:
        todo = json.dumps([[layer, c] for layer, c in missing])
        button = (
            f'<button class="neighbours" data-units="{attr(todo)}">make the {len(missing)} missing '
            f"picture{'s' if len(missing) > 1 else ''}</button>"
        )
    return f'<h2>{text(what)}</h2><ul class="units">{"".join(items)}</ul>{button}'


def filter_page(ex: Explorer, layer: str, n: int, token: str = "", photo: Mapping[str, str] | None = None) -> str:
    """One filter: picture, curve, settings, kernel, the units feeding it and fed by it, examples, variants (the
    accentuation of a photo: ``photo`` offered first)."""
    row = ex.check_filter(layer, n)
    record = ex.record(layer, n)
    d = ex.folder.layer(layer)
    if record is None:
        preview = ex.folder.preview(layer, n)
        main = (
            f'<img class="big preview" id="preview" src="{_file_href(ex, preview)}" alt="filter {n} (preview)" '
            'title="a quick preview: the full picture follows">'
            if preview.exists()
            else '<div class="wait big" id="preview">being computed</div>'
        )
        facts = "<p>not computed yet: it is queued now and this page reloads when it is done.</p>"
    else:
        src = _file_href(ex, ex.folder.picture(layer, n))
        main = f'<img class="big" src="{src}" alt="filter {n}">'
        dead = '<p class="dead">dead unit: it never responded to any image tried</p>' if record.get("dead_unit") else ""
        history = record.get("curve") or []
        recorded = record.get("settings", {})
        keys = ("param", "detail", "decay", "steps", "lr", "seed", "size", "transforms")
        settings = {k: recorded[k] for k in keys if recorded.get(k) is not None}
        facts = (
            f"<p>mean activation {record['final_value']:.4g}; "
            f"max activation {record.get('max_activation', float('nan')):.4g}</p>"
            f"{dead}{_curve_svg([float(v) for v in history])}"
            f"<p class=small>settings: <code>{text(json.dumps(settings))}</code> &middot; "
            f'<a href="{_file_href(ex, ex.folder.record_file(layer, n))}">full record</a></p>'
        )
    if ex.is_conv(layer):
        fed = ex.feeders(layer, n)
        image_inputs = "".join(
            f"<li>input channel {'RGB'[c] if c < 3 else c} (weight norm {norm:.3g})</li>"
            for previous, c, norm in fed
            if previous is None
        )
        feeders = _neighbours(ex, [(p, c, v) for p, c, v in fed if p is not None], "fed most by")
        if image_inputs:
            feeders = f"<h2>fed most by</h2><ul>{image_inputs}</ul>"
        kernel = (
            f'<h2>kernel</h2><img src="{_link(API["kernel"], layer=layer, n=n)}" alt="kernel of filter {n}" '
            f'style="max-width:560px">'
        )
    else:
        source = ex.computed_from(layer)
        feeders = _neighbours(ex, [(source, n, None)] if source else [], "computed from")
        kernel = ""
    feeds = _neighbours(ex, [(d, c, v) for d, c, v in ex.feeds_into(layer, n)], "feeds most")
    examples = ex.examples(layer)
    if examples is not None:
        ex_html = examples_html(
            examples,
            n,
            record.get("max_activation", float("nan")) if record else float("nan"),
            src=lambda crop: _file_href(ex, d / crop),
        )
    elif ex.images is not None:
        ex_html = '<button id="examples-button">find the images of --images that excite it most</button>'
    else:
        ex_html = "<p class=small>start the server with --images DIR to see the real images that excite it</p>"
    made = ex.variants(layer, n)
    variants = []
    for kind, what in VARIANTS.items():
        pic = ""
        if kind in made:
            size = "" if kind == "diversity" else " class=big"
            pic = f'<img src="{_file_href(ex, made[kind])}" alt="{kind}" style="max-width:640px"{size}>'
            pic += f"<p class=small>{text(_variant_value(made[kind]))}</p>"
        variants.append(
            f'<div><button data-variant="{attr(kind)}">{text(what)}</button>'
            f'<div id="variant-{attr(kind)}">{pic}</div></div>'
        )
    nav = []
    if n > 0:
        nav.append(f'<a href="{_link(PAGES["filter"], layer=layer, n=n - 1)}">&larr; filter {n - 1}</a>')
    if n + 1 < row.channels:
        nav.append(f'<a href="{_link(PAGES["filter"], layer=layer, n=n + 1)}">filter {n + 1} &rarr;</a>')
    body = (
        f'<p><a href="{attr(PAGES["model"])}">layers</a> &middot; '
        f'<a href="{_link(PAGES["layer"], {"page": n // PER_PAGE}, layer=layer)}">{text(layer)}</a> '
        f"&middot; {' &middot; '.join(nav)}</p>"
        f"<h1>{text(ex.meta.name)} {text(layer)} filter {n}</h1>"
        f'<div class="status" id="status"></div>'
        f'<div class="pair"><div>{main}{facts}</div><div>{kernel}{feeders}{feeds}</div></div>'
        f"<h2>real images that excite it</h2>{ex_html}<h2>variants</h2>{''.join(variants)}"
        "<h2>accentuated on a photo</h2>"
        + _photo_form(
            ex,
            "photo-picture",
            {"layer": layer, "filter": n},
            {"accentuate": "accentuate"},
            "accentuate it",
            "the photo changed so that this filter responds more, kept close to it (feature accentuation): what in "
            "the photo drives it",
            photo,
        )
    )
    data = {"page": "filter", "layer": layer, "filter": n, "self-missing": "1" if record is None else "0"}
    return _page(ex, f"{ex.meta.name} {layer} filter {n}", body, data, token)


def _variant_value(picture: Path) -> str:
    """What a variant reached, from its record: ``mean activation 3.2`` (a diversity batch: each image's)."""
    try:
        record = json.loads(picture.with_suffix(".json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    values = record.get("batch_final_values") or [record.get("final_value")]
    shown = ", ".join(f"{float(v):.4g}" for v in values if v is not None)
    return f"mean activation {shown}" if shown else ""


def concepts_page(ex: Explorer, layer: str, class_name: str | None = None, token: str = "") -> str:
    """A layer's concepts over ``--images`` (or one class of it): each concept's picture, its strongest patches, its
    share of the reconstruction and its importance; a button finds them when they are not found yet."""
    row = ex.concept_row(layer)
    classes = ex.image_classes()
    data = ex.concepts(layer, class_name)
    d = ex.concepts_dir(layer, class_name)
    scope = [f'<a href="{_link(PAGES["concepts"], layer=layer)}">all images</a>' if class_name else "<b>all images</b>"]
    for c in classes:
        link = _link(PAGES["concepts"], {"class": c}, layer=layer)
        scope.append(f"<b>{text(c)}</b>" if c == class_name else f'<a href="{link}">{text(c)}</a>')
    k = len(data["concepts"]) if data else 8
    if ex.images is None:
        finder = "<p class=small>start the server with --images DIR to find the concepts of a layer over images</p>"
    else:
        again = "find them again" if data else "find the concepts"
        finder = (
            f'<p><label>concepts <input id="concepts-k" type="number" min="1" max="64" value="{k}" size="3"></label> '
            f'<button id="concepts-button">{again}</button> <span class="small">over {text(ex.images)}'
            f"{' (class ' + text(class_name) + ')' if class_name else ''}: NMF of the activation vectors, then a "
            "scan of the codes, the importance and a picture per concept</span></p>"
        )
    cards = []
    for c in data["concepts"] if data else []:
        picture = (
            f'<img class="big" src="{_file_href(ex, d / c["picture"])}" alt="concept {c["index"]}">'
            if c.get("picture")
            else '<div class="wait big">no picture (interrupted)</div>'
        )
        patches = "".join(
            f'<img src="{_file_href(ex, d / p["crop"])}" alt="patch" title="{attr(Path(p["image"]).name)}: code '
            f'{p["code"]:.3g}">'
            for p in c["patches"]
        )
        importance = "" if c.get("importance") is None else f", importance {c['importance']:+.3g}"
        ratio = c.get("picture_to_best_patch")
        beats = "" if ratio is None or ratio != ratio else f"; picture / best patch code {ratio:.2f}"
        top = "".join(f"<li>{text(name)} ({value:.3g})</li>" for name, value in c.get("classes", []))
        cards.append(
            f'<div class="concept" id="c{c["index"]}"><h2>concept {c["index"]}</h2><div class="pair"><div>{picture}'
            f"<p>share {100 * c['share']:.1f}%{importance}{beats}</p></div>"
            f'<div><p class=small>strongest patches</p><div class="examples">{patches}</div>'
            f"{'<p class=small>classes of highest mean code</p><ul>' + top + '</ul>' if top else ''}</div></div></div>"
        )
    about = ""
    if data:
        about = (
            f"<p>{data['k']} concepts from {data['samples']} positions of {data['images']} images "
            f"(reconstruction error {100 * data['reconstruction_error']:.1f}%); importance for the "
            f"{text(data['target'])}: {text(data['importance_method'])}. "
            f'<a href="{_file_href(ex, d / "concepts.json")}">concepts.json</a></p>'
        )
    body = (
        f'<p><a href="{attr(PAGES["model"])}">&larr; layers</a></p>'
        f"<h1>{text(ex.meta.name)} {text(layer)}: concepts</h1>"
        f"<p>output {'x'.join(map(str, row.shape))}; images: {' &middot; '.join(scope)}</p>{finder}{about}"
        f'<div class="bar"><div></div></div> <div class="status" id="status"></div>{"".join(cards)}'
    )
    extra = {"page": "concepts", "layer": layer, "class": class_name or ""}
    return _page(ex, f"{ex.meta.name} {layer} concepts", body, extra, token)


def image_page(ex: Explorer, analysis: dict[str, Any] | None, query: dict[str, str], token: str = "") -> str:
    """Upload or pick a photo; then its top-5, a heatmap, feature maps and the filters that fire most."""
    picks = ex.picks()
    options = "".join(f'<option value="{attr(p)}">{text(p)}</option>' for p in picks)
    chooser = (
        f'<form method="post" action="{attr(PAGES["image"])}" enctype="multipart/form-data">'
        '<input type="file" name="file" accept="image/*" required> <button type="submit">upload</button></form>'
    )
    if picks:
        chooser += (
            f'<form method="get" action="{attr(PAGES["image"])}">or pick one: <select name="pick">{options}</select> '
            '<button type="submit">open</button></form>'
        )
    body = f"<h1>an image through {text(ex.meta.name)}</h1>{chooser}"
    if analysis is not None:
        key = {k: v for k, v in query.items() if k in ("upload", "pick")}
        src = _link(API["image"], key)
        preds = "".join(
            f"<tr><td>{i}</td><td>{text(name or '(no name)')}</td><td>{p:.3f}</td></tr>"
            for i, name, p in analysis["predictions"]
        )
        method = query.get("method") if query.get("method") in METHODS else "gradcam"
        target, filter_ = attr(query.get("target", "")), attr(query.get("filter", ""))
        methods = "".join(f'<option value="{m}"{" selected" if m == method else ""}>{m}</option>' for m in METHODS)
        hidden = "".join(f'<input type="hidden" name="{attr(k)}" value="{attr(v)}">' for k, v in key.items())
        shown = query.get("layer")
        names = [r.name for r in ex.unit_layers()]
        layers = "".join(
            f'<option value="{attr(name)}"{" selected" if name == shown else ""}>{text(name)}</option>'
            for name in names
        )
        depths = "".join(f'<option value="{attr(name)}">{text(name)}</option>' for name in names)  # every depth first
        firing = "".join(
            f"<tr><td>{text(name)}</td><td><div class=firing>"
            + "".join(
                f'<a href="{_link(PAGES["filter"], key, layer=name, n=c)}">{_thumb(ex, name, c)}'
                f"<span>{c} <span class=small>({v:.3g})</span></span></a>"
                for c, v in top
            )
            + "</div></td></tr>"
            for name, top in analysis["firing"].items()
        )
        body += (
            f'<div class="status" id="status"></div>'
            f'<div class="pair"><div><img class="big" src="{src}" alt="the image"></div>'
            f"<div><h2>top-5</h2><table><tr><th>class</th><th>name</th><th>p</th></tr>{preds}</table></div></div>"
            f'<h2>heatmap</h2><form id="heatmap-form">{hidden}<select name="method">{methods}</select> '
            f'class (index or name, default top-1) <input name="target" size="14" value="{target}">'
            f' or filter <input name="filter" size="14" placeholder="layer:index" value="{filter_}">'
            ' <button type="submit">show</button></form>'
            '<img id="heatmap" alt="heatmap" style="max-width:720px">'
            f"{_concepts_form(ex, hidden, query.get('concepts'))}"
            f'<h2>feature maps</h2><form id="maps-form">{hidden}<select name="layer">{layers}</select> '
            '<button type="submit">show</button></form><img id="maps" alt="" style="max-width:900px">'
            "<h2>what a layer keeps of it</h2>"
            + _photo_form(
                ex,
                "caricature",
                {},
                {"caricature": "caricature", "dream": "DeepDream"},
                "make it",
                "caricature: a picture made from noise whose activation at the layer points the way of the image's "
                "(early layers keep colors and textures, late ones parts); DeepDream: the image with what the layer "
                "sees in it made stronger",
                key,
                f'<select name="layer" aria-label="layer"><option value="">every depth ('
                f"{text(', '.join(ex.depth_layers()))})</option>{depths}</select> ",
            )
            + f"<h2>filters that fire most on it (mean activation)</h2><table>{firing}</table>"
        )
    return _page(ex, f"{ex.meta.name}: image", body, {"page": "image"}, token)


def _concepts_form(ex: Explorer, hidden: str, chosen: str | None = None) -> str:
    """The image page's chooser of the concepts found so far (a layer, over all images or one class)."""
    found = ex.found_concepts()
    if not found:
        return (
            "<h2>concepts in it</h2><p class=small>no concepts found yet: open a layer's concepts page (from the "
            "layers table) to find them</p>"
        )
    values = [(urllib.parse.urlencode({"layer": layer, "class": c or ""}), layer, c) for layer, c in found]
    options = "".join(
        f'<option value="{attr(v)}"{" selected" if v == chosen else ""}>{text(layer)}'
        f"{' (' + text(c) + ')' if c else ''}</option>"
        for v, layer, c in values
    )
    return (
        f'<h2>concepts in it</h2><form id="concepts-form">{hidden}<select name="concepts">{options}</select> '
        '<button type="submit">show</button></form><img id="concept-maps" alt="" style="max-width:1200px">'
    )


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
