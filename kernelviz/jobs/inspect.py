"""Jobs that look at a network without optimizing: its layer table, feature maps, heatmaps, kernels."""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.layers import LayerInfo, field_text, grid_text, list_layers
from ..core.models import ModelMeta, model_meta, model_slug
from ..errors import KernelvizError, NotFoundError
from ..explain.faithfulness import Faithfulness
from ..explain.heatmaps import (
    DEFAULT_BASELINES,
    IG_TOLERANCE,
    Attribution,
    attribute,
    check_methods,
    get_method,
    method_family,
    predict,
)
from ..explain.kernels import kernel_weights
from ..explain.maps import channel_stats, feature_maps, strongest_channels, top_channels
from ..explain.wiring import Wiring
from ..files.images import image_size, load_images
from ..files.records import provenance
from ..files.write import save_figure, save_json, save_npy, write_each
from .outputs import QUIET, Log, check_folder, check_writable, output_paths, unique_stems

__all__ = [
    "UNIT_SORTS",
    "LayerTable",
    "export_heatmaps",
    "export_kernels",
    "export_maps",
    "heatmap_figure",
    "image_summary",
    "kernel_figure",
    "layer_table",
    "maps_figure",
    "units_table",
]


@dataclass
class LayerTable:
    """The layer table of a model at one input size, with its classic depth count."""

    model: str
    size: int
    rows: list[LayerInfo]
    depth: int
    total: int = 0  # rows before filtering (0: not filtered)
    convs: int = 0  # trainable convolutions and fully connected layers of the whole model
    fcs: int = 0

    @property
    def aliased(self) -> bool:
        """Whether some layer has a name other than its module path (VGG's ``conv3_2`` for ``features.12``); a
        ``#2`` for a module's second run does not count."""
        return any(r.name.split("#")[0] != r.path for r in self.rows)

    def lines(self) -> list[str]:
        """The table as aligned text lines, then a blank line and the depth footer. The path column is shown
        only when some name differs from its path."""
        paths = self.aliased
        header = ("name", *(["path"] if paths else []), "type", "output", "units", "grid", "RF")
        table = [header] + [
            (
                r.name,
                *([r.path] if paths else []),
                r.type + (" (block)" if r.kind == "block" else ""),
                "x".join(map(str, r.output or r.shape)),
                str(r.channels),
                grid_text(r),
                field_text(r.receptive_field, self.size),
            )
            for r in self.rows
        ]
        widths = [max(len(row[i]) for row in table) for i in range(len(header))]
        out = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in table]
        if self.total:
            out.append(f"({len(self.rows)} of {self.total} layers shown)")
        out.append(
            f"\n{self.model}: input {self.size}x{self.size}; depth {self.depth} "
            f"({self.convs} conv + {self.fcs} fully connected; only layers with trainable weights count, "
            "batch norm excluded). RF = receptive field in input pixels."
        )
        if any(r.layout == "tokens" for r in self.rows):
            out.append(
                "Token layers are read as units x grid: the patch tokens make the grid, the tokens before them "
                "(class, distillation, registers: '+N tokens') are left out; a token's RF is its patch (attention "
                "also reaches every other patch)."
            )
        return out


#: ``--type`` words that name a kind of layer rather than a part of a type name.
KINDS = {"block": "block", "act": "activation", "activation": "activation"}


def _matches(row: LayerInfo, wanted: str) -> bool:
    kind = KINDS.get(wanted)
    return row.kind == kind if kind else wanted in row.type.lower()


def layer_table(
    model: nn.Module,
    size: int | None = None,
    *,
    types: Sequence[str] = (),
    grep: str | None = None,
    blocks: bool = False,
) -> LayerTable:
    """Every layer of ``model`` at input side ``size`` (default: the model's) and its depth.

    Args:
        types: keep only layers whose type contains one of these (case-insensitive): ``"conv"``,
            ``"linear"``, ``"pool"``, ``"norm"``, ``"relu"``..., or of one of the kinds ``"block"`` (the
            outputs of modules with children, such as ``layer3.0``) and ``"act"`` (activations).
        grep: keep only layers whose name or module path matches this regular expression.
        blocks: list block outputs too (``types`` naming ``"block"`` implies it).
    """
    meta = model_meta(model)
    if size is not None and size < 1:
        raise KernelvizError(f"size must be a positive number of pixels, got {size}")
    side = size or meta.input_size
    wanted = [t.lower() for t in types]
    rows = list_layers(model, side, blocks=blocks or "block" in wanted)
    # the depth of what runs in eval mode: auxiliary heads (GoogLeNet, Inception-v3) do not count, and a
    # module called several times counts once
    convs = len({r.path for r in rows if r.trainable and r.type.startswith("Conv")})
    fcs = len({r.path for r in rows if r.trainable and r.type == "Linear"})
    table = LayerTable(meta.name, side, rows, convs + fcs, convs=convs, fcs=fcs)
    if types or grep:
        try:
            pattern = re.compile(grep or "", re.IGNORECASE)
        except re.error as err:
            raise KernelvizError(f"cannot read --grep {grep!r} as a regular expression: {err}") from err
        present = sorted({r.type for r in rows if r.kind != "block"})
        for t in wanted:
            if not any(_matches(r, t) for r in rows):
                raise NotFoundError(
                    f"no layer of {meta.name} has a type containing {t!r}: its types are {', '.join(present)} "
                    "(--type matches a part of one, e.g. conv, linear, pool, norm; or names a kind: block, act)"
                )
        table.rows = [
            r
            for r in rows
            if (not wanted or any(_matches(r, t) for t in wanted))
            and (pattern.search(r.name) or pattern.search(r.path))
        ]
        table.total = len(rows)
    return table


def _warn_small(images: Sequence[Path], side: int, log: Log) -> None:
    """Say so when an image is much smaller than the network's input: what it shows is mostly upscaling."""
    for path in images:
        w, h = image_size(path)
        if 0 < min(w, h) < side / 2:
            log.warn(f"warning: {path.name} is {w}x{h} px, upscaled to {side} px: the map shows the upscaling too")


def _warn_ig(res: Any, i: int, name: str, log: Log) -> None:
    """Completeness check of integrated gradients and DeepLift: the map should add up to the score's change
    from the baseline."""
    if res.delta is None:
        return
    delta = float(res.delta[i])
    change = float(res.maps[i].sum()) - delta  # sum of attributions = change + delta
    if change and abs(delta / change) > IG_TOLERANCE:
        miss = f"{100 * abs(delta / change):.0f}% (the map does not add up to the score's change)"
        if getattr(res, "method", "integrated_gradients") == "deeplift":
            log.warn(
                f"warning: deeplift of {name} misses completeness by {miss}: max pooling and gates pass the gradient"
            )
        else:
            log.warn(f"warning: integrated gradients of {name} miss completeness by {miss}: raise --ig-steps")


def export_maps(
    model: nn.Module,
    layer: str,
    images: Sequence[Path],
    *,
    output: Path | None = None,
    k: int = 16,
    channels: Sequence[int] | None = None,
    scale: str = "channel",
    cmap: str = "viridis",
    raw: bool = False,
    size: int | None = None,
    log: Log = QUIET,
) -> list[Path]:
    """Feature maps of ``layer`` for each image: a labelled grid PNG (top-``k`` channels by mean
    activation, or ``channels``), a JSON record with the channels' statistics, and with ``raw`` every
    channel as ``.npy``. Returns the PNG paths."""
    from ..plot.colors import check_cmap
    from ..plot.maps import plot_feature_maps

    check_cmap(cmap)
    meta = model_meta(model)
    side = size or meta.input_size
    paths = output_paths(output, [f"{s}_{layer}_maps" for s in unique_stems(images)])
    batch = load_images(images, side)
    _warn_small(images, side, log)
    check_writable(paths)
    acts = feature_maps(model, batch, layer)  # (B, C, H', W')
    if acts.dim() != 4:
        raise KernelvizError(
            f"layer {layer!r} has no spatial maps (output {tuple(acts.shape[1:])}): pick a conv or pool layer"
        )
    for i, path in enumerate(paths):
        shown = list(channels) if channels else top_channels(acts[i], k)
        how = f"top {len(shown)} channels by mean activation" if not channels else "chosen channels"
        title = f"{meta.name} {layer} on {images[i].name}: {how}"
        fig = plot_feature_maps(acts[i], image=batch[i], channels=shown, scale=scale, cmap=cmap, title=title)
        record = provenance(
            meta,
            layer=layer,
            image=str(images[i]),
            input_size=side,
            shape=list(acts.shape[1:]),
            channels=shown,
            selection="top-k by mean activation" if not channels else "user",
            scale=scale,
            stats=channel_stats(acts[i][shown]),
        )
        if raw:
            record["raw"] = path.with_suffix(".npy").name
        write_each(
            partial(save_figure, fig, path),
            *([partial(save_npy, acts[i], path.with_suffix(".npy"))] if raw else []),
            partial(save_json, record, path.with_suffix(".json")),
        )
        log.info(f"wrote {path}")
    return paths


#: Display blur of per-pixel maps, as a fraction of the image side (2 px at 224): raw per-pixel
#: gradients read as speckle; the .npy keeps the raw map.
DISPLAY_BLUR = 1 / 112


def _score_lines(name: str, results: Sequence[Attribution], scores: dict[str, Faithfulness], i: int) -> list[str]:
    """The faithfulness table of image ``i``: one line per method, then the reference maps."""
    first = next(iter(scores.values()))
    width = max(len(k) for k in scores)
    lines = [
        f"{name}, target {results[0].what(i)}: {first.score}, {first.settings['steps']} steps; deletion and "
        "insertion fade into the blurred image, ROAD removes by imputation (MoRF: most relevant first, "
        "LeRF: least relevant first)",
        f"  {'method'.ljust(width)}  deletion (lower is better) / insertion (higher) / "
        "ROAD MoRF (lower) / LeRF (higher)",
    ]
    for key, f in scores.items():
        row = f"  {key.ljust(width)}  {float(f.deletion[i]):.3f} / {float(f.insertion[i]):.3f}"
        if f.road_morf is not None and f.road_lerf is not None:
            row += f" / {float(f.road_morf[i]):.3f} / {float(f.road_lerf[i]):.3f}"
        lines.append(row)
    return lines + [f"  {line}" for line in _verdicts(scores, i)]


#: The faithfulness scores, and whether lower is better for each.
_MEASURES = (("deletion", True), ("insertion", False), ("road_morf", True), ("road_lerf", False))


def _verdicts(scores: dict[str, Faithfulness], i: int) -> list[str]:
    """Per method of image ``i``: the scores on which it does worse than a reference map (random, blob), or that
    it beats both on every score."""
    references = [k for k in scores if k.endswith(" map")]
    out = []
    for method, f in scores.items():
        if method in references:
            continue
        losses = []
        for name, lower in _MEASURES:
            mine = getattr(f, name)
            if mine is None:
                continue
            for ref in references:
                theirs = getattr(scores[ref], name)
                if theirs is None:
                    continue
                a, b = round(float(mine[i]), 3), round(float(theirs[i]), 3)  # as the table shows them
                if a > b if lower else a < b:
                    label = name.replace("road_", "ROAD ").replace("morf", "MoRF").replace("lerf", "LeRF")
                    losses.append(f"{label} ({a:.3f} vs the {ref}'s {b:.3f})")
        if losses:
            out.append(f"{method}: WORSE than a reference map on {', '.join(losses)}: do not trust it here")
        else:
            named = " and the ".join(r.removesuffix(" map") for r in references)
            out.append(f"{method}: beats the {named} map on every score")
    return out


def export_heatmaps(
    model: nn.Module,
    images: Sequence[Path],
    methods: Sequence[str] = ("gradcam",),
    *,
    targets: Sequence[int | str] = (),
    filter: str | None = None,
    layer: str | None = None,
    output: Path = Path("."),
    cmap: str | None = None,
    alpha: float = 0.5,
    scale: str = "per-map",
    size: int | None = None,
    ig_steps: int | None = None,
    baseline: str | None = None,
    eigen_smooth: bool = False,
    aug_smooth: bool = False,
    score: bool = False,
    sanity: bool = False,
    log: Log = QUIET,
) -> list[Path]:
    """Heatmaps of each image for each method: an overlay PNG, the raw map as ``.npy`` and a JSON
    record per (image, method); with several methods, also ``IMAGE_methods.png`` side by side.

    Args:
        targets: class indices or names, one for all images or one per image; default top-1 (the top-5
            predictions are logged).
        filter: ``"layer:index"`` to explain a filter instead of a class.
        layer: the layer of the layer methods.
        scale: ``"per-map"`` or ``"shared"`` (one color range per family of methods on the sheet).
        ig_steps, baseline, eigen_smooth, aug_smooth: see :func:`~kernelviz.explain.heatmaps.attribute`.
        score: add deletion and insertion AUCs of each map, and of a random and a centred-blob map, to the
            records and the log (and the sheet's titles).
        sanity: add the cascading randomization check of each method to the records and the log.

    Returns:
        The PNG paths written.
    """
    from ..plot.colors import check_cmap
    from ..plot.heatmaps import plot_heatmap

    check_cmap(cmap)
    chosen = check_methods(methods)
    if filter and targets:
        raise KernelvizError("give either --target (a class) or --filter (a filter), not both")
    if targets and len(targets) not in (1, len(images)):
        raise KernelvizError(f"{len(targets)} targets for {len(images)} images: give one, or one per image")
    meta = model_meta(model)
    side = size or meta.input_size
    stems = unique_stems(images)
    batch = load_images(images, side)
    _warn_small(images, side, log)
    check_folder(output)
    target = list(targets) * (len(images) if len(targets) == 1 else 1) if targets else None
    if not filter:
        for path, preds in zip(images, predict(model, batch, 5), strict=True):
            shown = ", ".join(f"{name or idx} {p:.3f}" for idx, name, p in preds)
            log.info(f"{path.name}: top-5 {shown}")
    if baseline is not None and not set(chosen) & set(DEFAULT_BASELINES):
        log.warn(f"warning: --baseline applies to {', '.join(DEFAULT_BASELINES)}; none of them was asked for")
    if (eigen_smooth or aug_smooth) and not any(get_method(m).cam for m in chosen):
        log.warn("warning: --eigen-smooth and --aug-smooth apply to the CAM methods; none of them was asked for")
    smoothing = {"eigen_smooth": eigen_smooth, "aug_smooth": aug_smooth}
    results = _attribute_each(model, batch, chosen, target, filter, layer, ig_steps, baseline, smoothing, sanity, log)
    scores = _faithfulness(model, batch, results, filter) if score else {}
    # per-pixel maps are blurred for display only
    blurs = {r.method: side * DISPLAY_BLUR if get_method(r.method).per_pixel else 0.0 for r in results}
    written = []
    for res in results:
        for i, stem in enumerate(stems):
            overlay = {"cmap": cmap, "alpha": alpha, "display_blur_px": round(blurs[res.method], 2)}
            record = _map_record(meta, images[i], side, res, i, overlay, scores)
            fig = plot_heatmap(
                batch[i : i + 1],
                [res.maps[i : i + 1]],
                cmap=cmap,
                alpha=alpha,
                smooth=[blurs[res.method]],
                titles=[f"{res.label}: {res.what(i)}"],
            )
            written.append(_write_map(fig, res, i, record, output / f"{stem}_{res.method}"))
            log.info(f"wrote {written[-1]}")
            _warn_ig(res, i, images[i].name, log)
            if bool(res.zero[i]):
                log.warn(
                    f"warning: the {res.method} map of {images[i].name} is all zero (nothing drives {res.what(i)} "
                    "there); the overlay is empty"
                )
    _log_checks(images, results, scores, sanity, log)
    if len(chosen) > 1:
        for i, stem in enumerate(stems):
            titles = [
                r.label
                + (
                    f"\ndel {float(scores[r.method].deletion[i]):.2f} / ins {float(scores[r.method].insertion[i]):.2f}"
                    if scores
                    else ""
                )
                for r in results
            ]
            fig = plot_heatmap(
                batch[i : i + 1],
                [r.maps[i : i + 1] for r in results],
                titles=titles,
                scale=scale,
                groups=[method_family(r.method) for r in results],
                smooth=[blurs[r.method] for r in results],
                cmap=cmap,
                alpha=alpha,
                title=f"{meta.name} on {images[i].name}: {results[0].what(i)}",
            )
            path = output / f"{stem}_methods.png"
            save_figure(fig, path)
            written.append(path)
            log.info(f"wrote {path}")
    return written


def _map_record(
    meta: ModelMeta,
    image: Path,
    side: int,
    res: Attribution,
    i: int,
    overlay: dict[str, Any],
    scores: dict[str, Faithfulness],
) -> dict[str, Any]:
    """The JSON record of map ``i`` of ``res``: the provenance, the map's own record, how it is drawn, and its
    sanity check and faithfulness scores when they were asked for."""
    record = provenance(meta, image=str(image), input_size=side, **res.record(i), overlay=overlay)
    if "sanity" in res.settings:
        record["settings"] = {k: v for k, v in res.settings.items() if k != "sanity"}
        record["sanity"] = res.settings["sanity"][i]
    if scores:
        record["faithfulness"] = {
            **scores[res.method].record(i),
            "random_map": scores["random map"].record(i),
            "blob_map": scores["blob map"].record(i),
        }
    return record


def _attribute_each(
    model: nn.Module,
    batch: Any,
    methods: list[str],
    target: list[int | str] | None,
    filter: str | None,
    layer: str | None,
    ig_steps: int | None,
    baseline: str | None,
    smoothing: dict[str, bool],
    sanity: bool,
    log: Log,
) -> list[Attribution]:
    """One :class:`Attribution` per method (each with the options that apply to it), and with ``sanity`` its
    cascading randomization in ``settings["sanity"]``, one record per image."""
    from ..explain.faithfulness import sanity_check

    results: list[Attribution] = []
    for method in methods:
        extra: dict[str, Any] = {"ig_steps": ig_steps}
        if any(smoothing.values()) and get_method(method).cam:
            extra.update(smoothing)
        if baseline is not None and method in DEFAULT_BASELINES:
            extra["baseline"] = baseline
        results.append(attribute(model, batch, method, target=target, filter=filter, layer=layer, **extra))
        if sanity:
            log.info(f"{method}: randomizing the network's layers, top first, on a copy...")
            checks = sanity_check(model, batch, results[-1], **{k: v for k, v in extra.items() if k != "ig_steps"})
            results[-1].settings["sanity"] = [checks.record(i) for i in range(batch.shape[0])]
    return results


def _faithfulness(
    model: nn.Module, batch: Any, results: list[Attribution], filter: str | None
) -> dict[str, Faithfulness]:
    """Deletion/insertion (and ROAD) scores per method, then of a random and a centred-blob map."""
    from ..explain.faithfulness import faithfulness, reference_map

    first = results[0]
    scores = {r.method: faithfulness(model, batch, r.maps, targets=first.targets, filter=filter) for r in results}
    for kind in ("random", "blob"):
        reference = reference_map(first.maps.shape, kind)
        scores[f"{kind} map"] = faithfulness(model, batch, reference, targets=first.targets, filter=filter)
    return scores


def _write_map(fig: Any, res: Attribution, i: int, record: dict[str, Any], base: Path) -> Path:
    """Map ``i`` of ``res``: its overlay (``fig``), the raw map as ``.npy`` and its record, each kept elsewhere
    if its write fails."""
    write_each(
        partial(save_figure, fig, base.with_suffix(".png")),
        partial(save_npy, res.maps[i], base.with_suffix(".npy")),
        partial(save_json, record, base.with_suffix(".json")),
    )
    return base.with_suffix(".png")


def _log_checks(
    images: Sequence[Path], results: list[Attribution], scores: dict[str, Faithfulness], sanity: bool, log: Log
) -> None:
    """Per image: the faithfulness table, and each method's sanity check with its verdict."""
    for i, path in enumerate(images):
        if scores:
            for line in _score_lines(path.name, results, scores, i):
                log.info(line)
        if sanity:
            for res in results:
                check = res.settings["sanity"][i]
                steps = ", ".join(f"{s['layers_randomized']}: {s['rank_corr']:+.2f}" for s in check["steps"])
                verdict = (
                    "FLAGGED: the map survives randomizing half the network"
                    if check["insensitive"]
                    else "ok: the map changes as the network is randomized"
                )
                log.info(f"{path.name} {res.method} sanity, rank correlation by layers randomized ({steps}): {verdict}")


def export_kernels(
    model: nn.Module,
    layer: str,
    *,
    output: Path | None = None,
    filters: Sequence[int] | None = None,
    inputs: Sequence[int] | None = None,
    log: Log = QUIET,
) -> Path:
    """The kernels of convolution ``layer`` drawn on one symmetric scale, and the JSON record beside the PNG (the
    model, its weights, the kernel's shape, the filters and inputs drawn, the scale, each filter's weight norm);
    returns the PNG path."""
    from ..plot.kernels import plot_kernels

    meta = model_meta(model)
    w = kernel_weights(model, layer)  # (C_out, C_in / groups, kH, kW)
    path = output_paths(output, [f"{model_slug(meta.name)}_{layer}_kernels"])[0]
    record_path = path.with_suffix(".json")
    check_writable([path, record_path])
    fig = plot_kernels(
        w,
        filters=filters or None,
        inputs=inputs or None,
        title=f"{meta.name} {layer} kernels {tuple(w.shape)} ({meta.weights} weights)",
    )
    record = provenance(
        meta,
        layer=layer,
        kernel_shape=list(w.shape),
        filters=list(filters) if filters else "the first 16 (every filter of a first RGB layer, 64 of a depthwise one)",
        inputs=list(inputs) if inputs else "the first 16 (RGB for a first layer)",
        scale=float(w.abs().max()),  # the color scale is symmetric: -scale .. +scale
        filter_norms=[float(v) for v in w.flatten(1).norm(dim=1)],
    )
    write_each(lambda: save_figure(fig, path), lambda: save_json(record, record_path))
    log.info(f"wrote {path} and {record_path.name}")
    return path


# --- one picture each, for a front-end that shows rather than writes (the explorer) ----------------------------
def kernel_figure(model: nn.Module, layer: str, n: int, wiring: Wiring, k: int = 16) -> Any:
    """Filter ``n``'s kernel on its ``k`` strongest input channels (largest weight norm first), one tile each,
    numbered as the previous layer numbers its channels (an RGB first layer: one color tile)."""
    from ..plot.kernels import plot_kernels

    strongest = wiring.strongest_inputs(layer, n, k)  # checks the layer is a convolution and n a filter of it
    w = kernel_weights(model, layer)  # (C_out, C_in / groups, kh, kw)
    if w.shape[1] in (1, 3):  # the image's RGB as one color tile; a depthwise filter's one input
        return plot_kernels(w, filters=[n])
    first = wiring.first_input(layer, n)
    fig = plot_kernels(w, filters=[n], inputs=[c - first for c in strongest], input_labels=strongest)
    fig.suptitle(f"filter {n}: its {len(strongest)} strongest of {w.shape[1]} inputs (by weight norm)", fontsize=9)
    return fig


def heatmap_figure(
    model: nn.Module, image: torch.Tensor, method: str, target: str | None = None, filter: str | None = None
) -> Any:
    """One heatmap method's overlay on ``image`` ``(3, S, S)``, for a class (``target``: index or name; default the
    top-1) or a filter (``filter``: ``LAYER:N``), titled with the method, the layer and the target."""
    from ..plot.heatmaps import plot_heatmap

    check_methods(method)
    x = image[None]
    res = attribute(model, x, method, target=target if not filter else None, filter=filter or None)
    return plot_heatmap(x, [res.maps], titles=[f"{res.label}: {res.what(0)}"])


def maps_figure(model: nn.Module, image: torch.Tensor, layer: str, k: int = 16) -> Any:
    """The feature maps of ``layer`` on ``image`` ``(3, S, S)``: its ``k`` strongest channels beside the image."""
    from ..plot.maps import plot_feature_maps

    acts = feature_maps(model, image[None], layer)[0]
    return plot_feature_maps(acts, image=image, k=k, title=f"{model_meta(model).name} {layer}: top {k} channels")


def image_summary(model: nn.Module, image: torch.Tensor, layers: Sequence[str], k: int = 6) -> dict[str, Any]:
    """What a network does with one image ``(3, S, S)``: its top-5 predictions ``[(index, name, p)]`` and, per
    layer of ``layers``, the ``k`` channels of largest mean activation ``[(channel, mean)]``."""
    preds = predict(model, image[None], 5)[0]
    means = strongest_channels(model, image, layers, k)
    return {"predictions": preds, "firing": means}


#: How ``kernelviz units`` sorts a layer's units: the key of each choice, on a unit's record.
UNIT_SORTS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "unit": lambda u: u["unit"],
    "frequency": lambda u: (-u["frequency"], u["unit"]),
    "auc": lambda u: (-(u["labels"][0]["auc"] if u["labels"] else 0.0), u["unit"]),
    "label": lambda u: (u["labels"][0]["name"].lower() if u["labels"] else "\uffff", u["unit"]),
    "mean": lambda u: (-u["mean"], u["unit"]),
    "max": lambda u: (-u["max"], u["unit"]),
    "carried": lambda u: (-(u["carried"] if isinstance(u.get("carried"), int | float) else -math.inf), u["unit"]),
}


def units_table(
    root: str | os.PathLike,
    layers: Sequence[str] | None = None,
    *,
    sort: str = "unit",
    label: str | None = None,
    top: int | None = None,
) -> list[str]:
    """The units of an atlas folder's layers as text lines (what ``kernelviz units`` prints): per layer a table of
    unit, frequency, mean, max, dead or dense, and its best label with its AUC, sorted by ``sort`` (a key of
    :data:`UNIT_SORTS`), the first ``top`` rows; with ``label``, the units labelled so across the layers instead.

    Raises:
        NotFoundError: no ``units.json`` in the folder (or not for a layer asked), an unknown sort.
    """
    folder = _units_folder(Path(root))
    if sort not in UNIT_SORTS:
        raise NotFoundError(f"unknown sort {sort!r}: choose from {', '.join(UNIT_SORTS)}")
    have = folder.unit_layers()
    chosen = [layer.replace("/", "_") for layer in layers] if layers else have
    missing = [layer for layer in chosen if layer not in have]
    if missing:
        raise NotFoundError(
            f"no units.json for {', '.join(missing)} in {folder.root}: it has {', '.join(have)} "
            "(kernelviz examples MODEL --images DIR -o OUT writes them)"
        )
    lines: list[str] = []
    if label is not None:
        found = folder.labelled(label, chosen)[:top]
        if not found:
            return [f"no unit is labelled like {label!r}{_near_labels(folder, label, chosen)}"]
        lines.append(f"{len(found)} unit(s) labelled like {label!r}:")
        lines += [
            f"  {f['layer']}:{f['unit']}  {f['label']['name']} ({f['label']['kind']}, AUC {f['label']['auc']:.3f}, "
            f"{f['label']['images']} images)  fires on {100 * f['frequency']:.0f}%"
            for f in found
        ]
        return lines
    for layer in chosen:
        data = folder.units(layer)
        assert data is not None
        rows = sorted(data["units"], key=UNIT_SORTS[sort])[:top]
        lines.append(f"{data['layer']}: {len(data['units'])} units over {data['images']} images")
        matter = "importance" in data  # examples --importance: what each unit matters for, first-order
        header = f"  {'unit':>5}  {'fires':>6}  {'mean':>8}  {'max':>8}  {'':5}  label (AUC, images)"
        lines.append(header + ("  |  matters most for (estimated probability drop)" if matter else ""))
        for u in rows:
            state = "dead" if u["dead"] else "dense" if u["dense"] else ""
            best = u["labels"][0] if u["labels"] else None
            named = f"{best['name']} ({best['auc']:.3f}, {best['images']})" if best else "-"
            numbers = f"{100 * u['frequency']:>5.1f}%  {u['mean']:>8.3g}  {u['max']:>8.3g}"
            carried = (u.get("matters_for") or {}).get("classes") or []
            most = f"  |  {carried[0]['name']} ({carried[0]['drop']:+.3g})" if matter and carried else ""
            lines.append(f"  {u['unit']:>5}  {numbers}  {state:5}  {named}{most}")
    return lines


def ablation_lines(found: Any, top: int = 5) -> list[str]:  # found: kernelviz.units.ablation.Ablation
    """What ``kernelviz ablate`` prints of an :class:`~kernelviz.units.ablation.Ablation`: what was done, the
    accuracy before and after, the images that changed their top-1, and tables of the ``top`` classes most hurt and
    most helped and of the groups and labels that moved most."""
    from .specs import format_filters

    what = f"unit{'s' if len(found.units) > 1 else ''} {format_filters(found.units)} of {found.layer}"
    if found.mode == "scale":
        head = f"{what} times {found.factor:g} over {found.images} images"
    else:
        head = f"{'zeroed' if found.mode == 'zero' else 'held at their means:'} {what} over {found.images} images"
    lines = [
        head + (f" ({len(found.skipped)} unreadable skipped)" if found.skipped else ""),
        f"classes: {found.matching}",
        f"accuracy {100 * found.accuracy[0]:.1f}% -> {100 * found.accuracy[1]:.1f}%; "
        f"{found.changed} images changed their top-1",
    ]

    def table(title: str, rows: list[Any]) -> None:
        if not rows:
            return
        lines.append(f"{title}:")
        lines.append(f"  {'':28}  {'images':>6}  {'accuracy':>15}  {'probability':>15}")
        for o in rows:
            acc = f"{100 * o.accuracy[0]:.0f}% -> {100 * o.accuracy[1]:.0f}%"
            prob = f"{o.probability[0]:.3f} -> {o.probability[1]:.3f}"
            lines.append(f"  {o.name[:28]:28}  {o.images:>6}  {acc:>15}  {prob:>15}")

    table("most hurt", found.hurt(top))
    table("most helped", found.helped(top))
    moved = [o for o in found.groups if o.images and o.change]
    table("groups that moved most", sorted(moved, key=lambda o: -abs(o.change))[:top])
    table("labels", sorted([o for o in found.labels if o.images], key=lambda o: o.change)[:top])
    return lines


def ablate_units(net: nn.Module, layer: str, units: Sequence[int], images: str | os.PathLike, **options: Any) -> Any:
    """``kernelviz ablate``'s computation: :func:`~kernelviz.units.ablation.ablate` (the options are its own)."""
    from ..units.ablation import ablate

    return ablate(net, layer, units, images, **options)


def save_ablation(found: Any, model: str, output: str | os.PathLike) -> Path:
    """Write an :class:`~kernelviz.units.ablation.Ablation`'s record (``model``: how the model was named) as JSON."""
    return save_json({"model": model, **found.to_json()}, output)


def _near_labels(folder: Any, text: str, layers: Sequence[str]) -> str:
    """The labels of ``layers``' units closest to ``text`` as a hint (``"; its units have labels like ..."``), or
    why none can match."""
    names = {
        x["name"] for layer in layers for u in (folder.units(layer) or {"units": []})["units"] for x in u["labels"]
    }
    if not names:
        return (" (no unit of these layers has a label: the collection has no classes, WordNet groups or --labels "
                "FILE labels that a unit tells apart with an AUC of 0.9 or more)")  # fmt: skip
    close = difflib.get_close_matches(text, sorted(names), n=5, cutoff=0.5) or sorted(names)[:5]
    return f"; labels of these units include: {', '.join(close)}"


def _units_folder(root: Path) -> Any:  # -> AtlasFolder
    """The atlas folder of one model: ``root`` itself, or its one model folder (``OUT`` of ``-o OUT``)."""
    from ..sets.folder import AtlasFolder

    if AtlasFolder(root).unit_layers():
        return AtlasFolder(root)
    inside = [p for p in root.iterdir() if p.is_dir() and AtlasFolder(p).unit_layers()] if root.is_dir() else []
    if len(inside) == 1:
        return AtlasFolder(inside[0])
    raise NotFoundError(
        f"no units.json in {root}: give the folder kernelviz examples wrote (OUT/<model>)"
        + (f"; it holds several models: {', '.join(p.name for p in inside)}" if inside else "")
    )
