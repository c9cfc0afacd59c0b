"""Jobs that look at a network without optimizing: its layer table, feature maps, heatmaps, kernels."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ..core.layers import LayerInfo, field_text, list_layers
from ..core.models import model_meta, model_slug
from ..errors import KernelvizError
from ..explain.heatmaps import attribute, check_methods, predict
from ..explain.kernels import kernel_weights
from ..explain.maps import channel_stats, feature_maps, top_channels
from ..files.images import image_size, load_images
from ..files.records import provenance
from ..files.write import save_figure, save_json, save_npy
from .outputs import QUIET, Log, check_folder, check_writable, output_paths, unique_stems

#: Integrated gradients' completeness error above which a warning is printed (fraction of the score's change).
IG_TOLERANCE = 0.05

__all__ = ["LayerTable", "export_heatmaps", "export_kernels", "export_maps", "layer_table"]


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

    def lines(self) -> list[str]:
        """The table as aligned text lines, then a blank line and the depth footer."""
        header = ("name", "path", "type", "output", "channels", "RF")
        table = [header] + [
            (
                r.name,
                r.path,
                r.type,
                "x".join(map(str, r.shape)),
                str(r.channels),
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
        return out


def layer_table(
    model: nn.Module, size: int | None = None, *, types: Sequence[str] = (), grep: str | None = None
) -> LayerTable:
    """Every layer of ``model`` at input side ``size`` (default: the model's) and its depth.

    Args:
        types: keep only layers whose type contains one of these (case-insensitive): ``"conv"``,
            ``"linear"``, ``"pool"``, ``"norm"``, ``"relu"``...
        grep: keep only layers whose name or module path matches this regular expression.
    """
    meta = model_meta(model)
    if size is not None and size < 1:
        raise KernelvizError(f"size must be a positive number of pixels, got {size}")
    side = size or meta.input_size
    rows = list_layers(model, side)
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
        wanted = [t.lower() for t in types]
        table.rows = [
            r
            for r in rows
            if (not wanted or any(t in r.type.lower() for t in wanted))
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
    """Integrated gradients' completeness check: the map should add up to the score's change from the baseline."""
    if res.delta is None:
        return
    delta = float(res.delta[i])
    change = float(res.maps[i].sum()) - delta  # sum of attributions = change + delta
    if change and abs(delta / change) > IG_TOLERANCE:
        log.warn(
            f"warning: integrated gradients of {name} miss completeness by {100 * abs(delta / change):.0f}% "
            f"(the map does not add up to the score's change): raise --ig-steps"
        )


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
        save_figure(fig, path)
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
            save_npy(acts[i], path.with_suffix(".npy"))
            record["raw"] = path.with_suffix(".npy").name
        save_json(record, path.with_suffix(".json"))
        log.info(f"wrote {path}")
    return paths


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
    ig_steps: int = 32,
    log: Log = QUIET,
) -> list[Path]:
    """Heatmaps of each image for each method: an overlay PNG, the raw map as ``.npy`` and a JSON
    record per (image, method); with several methods, also ``IMAGE_methods.png`` side by side.

    Args:
        targets: class indices or names, one for all images or one per image; default top-1 (the top-5
            predictions are logged).
        filter: ``"layer:index"`` to explain a filter instead of a class.
        layer: the layer of the Grad-CAM methods.

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
    results, written = [], []
    for method in chosen:
        res = attribute(model, batch, method, target=target, filter=filter, layer=layer, ig_steps=ig_steps)
        results.append(res)
        for i, stem in enumerate(stems):
            what = filter or (res.target_names[i] if res.target_names else f"class {res.targets[i]}")  # type: ignore[index]
            base = output / f"{stem}_{method}"
            fig = plot_heatmap(
                batch[i : i + 1],
                [res.maps[i : i + 1]],
                cmap=cmap,
                alpha=alpha,
                titles=[f"{method}{' @ ' + res.layer if res.layer else ''}: {what}"],
            )
            save_figure(fig, base.with_suffix(".png"))
            save_npy(res.maps[i], base.with_suffix(".npy"))
            save_json(
                provenance(
                    meta,
                    image=str(images[i]),
                    input_size=side,
                    **res.record(i),
                    overlay={"cmap": cmap, "alpha": alpha},
                ),
                base.with_suffix(".json"),
            )
            written.append(base.with_suffix(".png"))
            log.info(f"wrote {base.with_suffix('.png')}")
            _warn_ig(res, i, images[i].name, log)
            if bool(res.zero[i]):
                log.warn(
                    f"warning: the {method} map of {images[i].name} is all zero (nothing drives {what} "
                    "there); the overlay is empty"
                )
    if len(chosen) > 1:
        for i, stem in enumerate(stems):
            first = results[0]
            what = filter or (first.target_names[i] if first.target_names else f"class {first.targets[i]}")  # type: ignore[index]
            fig = plot_heatmap(
                batch[i : i + 1],
                [r.maps[i : i + 1] for r in results],
                titles=[f"{r.method}{' @ ' + r.layer if r.layer else ''}" for r in results],
                scale=scale,
                cmap=cmap,
                alpha=alpha,
                title=f"{meta.name} on {images[i].name}: {what}",
            )
            path = output / f"{stem}_methods.png"
            save_figure(fig, path)
            written.append(path)
            log.info(f"wrote {path}")
    return written


def export_kernels(
    model: nn.Module,
    layer: str,
    *,
    output: Path | None = None,
    filters: Sequence[int] | None = None,
    inputs: Sequence[int] | None = None,
    log: Log = QUIET,
) -> Path:
    """The kernels of convolution ``layer`` drawn on one symmetric scale; returns the PNG path."""
    from ..plot.kernels import plot_kernels

    meta = model_meta(model)
    w = kernel_weights(model, layer)
    path = output_paths(output, [f"{model_slug(meta.name)}_{layer}_kernels"])[0]
    check_writable([path])
    fig = plot_kernels(
        w,
        filters=filters or None,
        inputs=inputs or None,
        title=f"{meta.name} {layer} kernels {tuple(w.shape)} ({meta.weights} weights)",
    )
    save_figure(fig, path)
    log.info(f"wrote {path}")
    return path
