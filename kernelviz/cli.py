"""The ``kernelviz`` command line: a thin shell over the library.

Each command parses its arguments, calls one library function, and writes
files. Errors the user can fix (:class:`~kernelviz.errors.KernelvizError`)
become a one-line message and exit status 1, never a traceback.
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import matplotlib

matplotlib.use("Agg")  # files only: the CLI never opens a window

from .errors import KernelvizError
from .models import model_slug

_FILTER_RANGE = re.compile(r"^(\d+)-(\d+)$")


# -- shared pieces --------------------------------------------------------------------------------


def _errors_to_click(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn library errors into ``click.ClickException`` (one line, exit 1)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except KernelvizError as err:
            raise click.ClickException(str(err)) from None

    return wrapper


def model_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--weights`` and ``--device``, shared by every command that loads a model."""
    fn = click.option(
        "--device",
        default="auto",
        show_default=True,
        help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps.",
    )(fn)
    fn = click.option(
        "--weights",
        default="default",
        show_default=True,
        help="default (torchvision's pretrained weights), random, a weights name such as "
        "IMAGENET1K_V1, or PATH to a local checkpoint.",
    )(fn)
    return fn


def optimize_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Optimization options shared by filter, grid, atlas and examples, handed to the command as one
    ``opt`` dict (keys: steps, size, lr, param, transforms, seed, precision, batch_size)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        opt = {name: kwargs.pop(name) for name in _OPTIMIZE_NAMES}
        if opt["transforms"] == "none":
            opt["transforms"] = None
        return fn(*args, opt=opt, **kwargs)

    for option in reversed(_OPTIMIZE_OPTIONS):
        wrapper = option(wrapper)
    return wrapper


_OPTIMIZE_NAMES = ("steps", "size", "lr", "param", "transforms", "seed", "precision", "batch_size")


_OPTIMIZE_OPTIONS = [
    click.option("--steps", type=click.IntRange(min=0), default=256, show_default=True, help="Optimizer steps."),
    click.option(
        "--size", type=click.IntRange(min=8), default=None, help="Image side in pixels [default: the model's]."
    ),
    click.option("--lr", type=float, default=0.05, show_default=True, help="Adam learning rate."),
    click.option(
        "--param",
        type=click.Choice(["fourier", "pixel", "maco"]),
        default="fourier",
        show_default=True,
        help="Image parameterization: fourier (decorrelated, 1/f spectrum), pixel (the article's method), "
        "or maco (phase only, natural 1/f magnitude).",
    ),
    click.option(
        "--transforms",
        type=click.Choice(["standard", "none"]),
        default="standard",
        show_default=True,
        help="Random pad/jitter/scale/rotate each step (Lucid's recipe), or none.",
    ),
    click.option("--seed", type=int, default=0, show_default=True),
    click.option(
        "--precision",
        type=click.Choice(["auto", "fp32", "bf16", "fp16"]),
        default="auto",
        show_default=True,
        help="auto = bf16 on a CUDA GPU that supports it, else fp32.",
    ),
    click.option(
        "--batch-size",
        type=click.IntRange(min=1),
        default=None,
        help="Filters optimized together [default: 8 on CPU; on a GPU as many as fit].",
    ),
]


def _load(model: str, weights: str, device: str):  # -> nn.Module
    from .models import load_model

    return load_model(model, weights=weights, device=device)


def parse_filters(values: tuple[str, ...]) -> list[int]:
    """``("0-3", "17", "5,6")`` → ``[0, 1, 2, 3, 17, 5, 6]`` (order kept, duplicates dropped)."""
    out: list[int] = []
    for value in values:
        for part in value.split(","):
            part = part.strip()
            if not part:
                continue
            match = _FILTER_RANGE.match(part)
            if match:
                lo, hi = int(match[1]), int(match[2])
                if hi < lo:
                    raise KernelvizError(f"bad filter range {part!r}: the end is before the start")
                out.extend(range(lo, hi + 1))
            elif part.startswith("--"):
                raise KernelvizError(f"no such option {part!r}; see --help")
            elif part.lstrip("-").isdigit():
                n = int(part)
                if n < 0:
                    raise KernelvizError(f"filter index must be >= 0, got {n}")
                out.append(n)
            else:
                raise KernelvizError(f"cannot read filter {part!r}: use numbers and ranges such as 0-15 17")
    return list(dict.fromkeys(out))


class _Progress:
    """A tqdm bar over optimizer steps showing the current objective value."""

    def __init__(self, total: int, desc: str) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc=desc, unit="step", file=sys.stderr, dynamic_ncols=True)
        self.done = 0

    def __call__(self, step: int, value: float) -> None:
        if step < self.done:  # a new batch started
            self.bar.reset()
            self.done = 0
        self.bar.update(step - self.done)
        self.done = step
        self.bar.set_postfix(objective=f"{value:.4g}")

    def close(self) -> None:
        self.bar.close()


# -- commands -------------------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kernelviz")
def main() -> None:
    """See what the filters of a trained CNN respond to.

    MODEL is a torchvision classifier name (vgg16, vgg19_bn, resnet50, ...) or
    package.module:factory, a function returning your own nn.Module.
    """


@main.command("layers")
@click.argument("model")
@model_options
@click.option("--size", type=int, default=None, help="Input side in pixels [default: the model's].")
@_errors_to_click
def layers_cmd(model: str, weights: str, device: str, size: int | None) -> None:
    """List MODEL's layers: name, module path, type, output shape, channels, receptive field.

    Ends with the depth counted the classic way (conv + fully connected layers).
    Shapes do not depend on the weights, so --weights random avoids loading them.
    """
    from .layers import count_depth, list_layers
    from .models import model_meta

    net = _load(model, weights, device)
    size = size or model_meta(net).input_size
    rows = list_layers(net, size)
    header = ("name", "path", "type", "output", "channels", "RF")
    table = [header] + [
        (
            r.name,
            r.path,
            r.type,
            "x".join(map(str, r.shape)),
            str(r.channels),
            "all" if r.receptive_field is None else str(r.receptive_field),
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    convs = sum(r.trainable and r.type.startswith("Conv") for r in rows)
    fcs = sum(r.trainable and r.type == "Linear" for r in rows)
    click.echo(
        f"\n{model_meta(net).name}: input {size}x{size}; depth {count_depth(net)} "
        f"({convs} conv + {fcs} fully connected; only layers with trainable weights count, "
        "batch norm excluded). RF = receptive field in input pixels."
    )


@main.command("filter", context_settings={"ignore_unknown_options": True})
@click.argument("model")
@click.argument("layer")
@click.argument("filters", nargs=-1, required=True)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    default=None,
    help="PNG file for one filter, or a folder for several [default: ./MODEL_LAYER_NNNN.png].",
)
@optimize_options
@click.option(
    "--init",
    "init_image",
    type=click.Path(path_type=Path),
    default=None,
    help="Start from this image instead of noise (feature accentuation).",
)
@model_options
@_errors_to_click
def filter_cmd(
    model: str,
    layer: str,
    filters: tuple[str, ...],
    output: Path | None,
    init_image: Path | None,
    weights: str,
    device: str,
    opt: dict[str, Any],
) -> None:
    """Synthesize the image that FILTER(s) of LAYER respond to most.

    Gradient ascent changes only the pixels of an image (weights frozen) until
    the filter's mean response is as large as it can be. FILTERS are indices
    and ranges: 17, 0-15, 3,5. Writes a PNG and a JSON sidecar per filter.

    Example: kernelviz filter vgg16 conv3_2 17
    """
    from .io import load_image
    from .layers import check_filters
    from .models import model_meta

    indices = parse_filters(filters)
    net = _load(model, weights, device)
    meta = model_meta(net)
    side = opt["size"] = opt["size"] or meta.input_size
    check_filters(net, layer, indices, side)  # fail on a bad name or index before any work
    init = load_image(init_image, side) if init_image is not None else None
    slug = model_slug(meta.name)
    paths = _output_paths(output, [f"{slug}_{layer}_{n:04d}" for n in indices], ".png")
    where = dict(zip(indices, paths, strict=True))

    def save(group: list[int], result: Any) -> None:
        for i, n in enumerate(group):
            result.save(
                where[n],
                i,
                model=meta.name,
                weights=meta.weights,
                layer=layer,
                filter=n,
                objective=f"channel({layer}:{n})",
            )
            click.echo(f"wrote {where[n]} (final mean activation {float(result.final[i]):.4g})")
            _warn_dead(result, i, layer, n)

    grid = _grid(net, layer, indices, save, opt, init=init)
    if grid.interrupted:
        click.echo("interrupted: the images written hold the state reached", err=True)
        sys.exit(130)


def _grid(net, layer: str, filters: list[int], on_batch, opt: dict[str, Any], **kwargs: Any):  # -> GridResult
    """Run :func:`layer_grid` with the command's options and a progress bar over each batch's steps."""
    from .figures import layer_grid

    bar = _Progress(opt["steps"], f"{layer} ({len(filters)} filters)")
    try:
        return layer_grid(net, layer, filters, on_batch=on_batch, progress=bar, **opt, **kwargs)
    finally:
        bar.close()


def _warn_dead(result: Any, i: int, layer: str, n: int) -> None:
    if bool(result.dead[i]):
        click.echo(f"warning: filter {n} of {layer} never activated (dead unit): its image shows no feature", err=True)


@main.command("grid")
@click.argument("model")
@click.argument("layer")
@click.option("--filters", default=None, help="Filters, e.g. 0-63 [default: every filter of the layer].")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    default=None,
    help="Contact sheet PNG [default: ./MODEL_LAYER_grid.png].",
)
@click.option(
    "--individual",
    type=click.Path(path_type=Path),
    default=None,
    help="Also write each filter's PNG and JSON sidecar into this folder.",
)
@click.option("--cols", type=click.IntRange(min=1), default=None, help="Tiles per row [default: about square].")
@optimize_options
@model_options
@_errors_to_click
def grid_cmd(
    model,
    layer,
    filters,
    output,
    individual,
    cols,
    weights,
    device,
    opt: dict[str, Any],
) -> None:
    """Every requested filter of LAYER on one labelled contact sheet, optimized in batches."""
    from .figures import plot_grid
    from .io import save_figure, save_json
    from .layers import layer_channels
    from .models import model_meta

    net = _load(model, weights, device)
    meta = model_meta(net)
    side = opt["size"] = opt["size"] or meta.input_size
    indices = parse_filters((filters,)) if filters else list(range(layer_channels(net, layer, side)))
    slug = model_slug(meta.name)

    def save(group: list[int], result: Any) -> None:
        for i, n in enumerate(group):
            if individual is not None:
                result.save(
                    individual / f"{slug}_{layer}_{n:04d}.png",
                    i,
                    model=meta.name,
                    weights=meta.weights,
                    layer=layer,
                    filter=n,
                    objective=f"channel({layer}:{n})",
                )
            _warn_dead(result, i, layer, n)

    grid = _grid(net, layer, indices, save, opt)
    labels = [
        f"{n}{' (dead)' if d else ''}\n{float(v):.3g}"
        for n, v, d in zip(grid.filters, grid.final, grid.dead, strict=True)
    ]
    title = (
        f"{meta.name} ({meta.weights}) {layer}: mean activation under each filter; "
        f"{opt['param']} image, {opt['steps']} steps, lr {opt['lr']}, {side} px, "
        f"transforms {opt['transforms'] or 'none'}, seed {opt['seed']}"
    )
    path = output or Path(f"{slug}_{layer}_grid.png")
    save_figure(plot_grid(grid.images, labels, title=title, cols=cols), path)
    save_json(
        {
            "model": meta.name,
            "weights": meta.weights,
            "layer": layer,
            "filters": grid.filters,
            "final_values": grid.final.tolist(),
            "dead_units": [n for n, d in zip(grid.filters, grid.dead, strict=True) if d],
            "settings": grid.settings,
            "interrupted": grid.interrupted,
        },
        path.with_suffix(".json"),
    )
    click.echo(f"wrote {path} ({len(grid.filters)} filters)")
    if grid.interrupted:
        sys.exit(130)


@main.command("atlas")
@click.argument("model")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Output folder.")
@click.option("--layers", default=None, help="Comma-separated layers in order [default: every conv layer].")
@click.option(
    "--filters",
    default="all",
    show_default=True,
    help="N (the first N filters of each layer), a list such as 0-7,12, or all.",
)
@click.option(
    "--images",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder of natural images: add each filter's top dataset examples.",
)
@click.option("-k", type=click.IntRange(min=1), default=9, show_default=True, help="Dataset examples per filter.")
@click.option("--shard", default=None, help="i/n: do only the i-th of n shares (job arrays without torchrun).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@optimize_options
@model_options
@_errors_to_click
def atlas_cmd(
    model,
    output,
    layers,
    filters,
    images,
    k,
    shard,
    quiet,
    weights,
    device,
    opt: dict[str, Any],
) -> None:
    """A browsable atlas of MODEL: per-filter images and JSON, contact sheets, a static site.

    Rerunning the same command resumes (finished filters are skipped; files are written
    atomically). Runs under `torchrun --nproc-per-node N` (one share per rank, rank 0 writes the
    index) or as independent processes with --shard i/n.
    """
    import os

    import torch

    from .atlas import atlas

    if device == "auto" and "LOCAL_RANK" in os.environ and torch.cuda.is_available():
        device = f"cuda:{os.environ['LOCAL_RANK']}"  # under torchrun: one GPU per rank
    net = _load(model, weights, device)
    chosen: int | list[int] | None
    if filters == "all":
        chosen = None
    elif filters.isdigit():
        chosen = int(filters)
    else:
        chosen = parse_filters((filters,))
    shard_pair = None
    if shard is not None:
        match = re.fullmatch(r"(\d+)/(\d+)", shard)
        if not match:
            raise KernelvizError(f"cannot read --shard {shard!r}: write i/n, e.g. 0/4")
        shard_pair = (int(match[1]), int(match[2]))
    report = atlas(
        net,
        output,
        layers=layers.split(",") if layers else None,
        filters=chosen,
        images=images,
        k=k,
        shard=shard_pair,
        progress=not quiet,
        **opt,
    )
    click.echo(
        f"{report.root}: {report.computed} filters computed, {report.skipped} already done, "
        f"{report.remaining} left in the whole atlas"
    )
    if report.index_written:
        click.echo(f"wrote {report.root / 'index.html'}")
    if report.interrupted:
        click.echo("interrupted: finished filters are saved; rerun the same command to resume", err=True)
        sys.exit(130)


@main.command("examples")
@click.argument("model")
@click.argument("layer")
@click.argument("filter_index", metavar="FILTER", type=int)
@click.option("--images", type=click.Path(path_type=Path), required=True, help="Folder of images to scan.")
@click.option("-k", type=click.IntRange(min=1), default=9, show_default=True, help="Examples to keep.")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    default=None,
    help="Sheet PNG [default: ./MODEL_LAYER_NNNN_examples.png].",
)
@optimize_options
@model_options
@_errors_to_click
def examples_cmd(
    model,
    layer,
    filter_index,
    images,
    k,
    output,
    weights,
    device,
    opt: dict[str, Any],
) -> None:
    """The images in a folder that excite FILTER of LAYER most, cropped where it fires, beside its synthesized image.

    Reports the ratio of the synthesized image's maximum activation to the best natural image's.
    Unreadable files are skipped and counted.
    """
    from tqdm.auto import tqdm

    from .examples import find_examples, image_files, plot_examples
    from .io import save_figure, save_json, versions
    from .layers import check_filters
    from .maps import feature_maps
    from .models import model_meta

    net = _load(model, weights, device)
    meta = model_meta(net)
    side = opt["size"] = opt["size"] or meta.input_size
    check_filters(net, layer, [filter_index], side)
    files = image_files(images)
    with tqdm(total=len(files), desc="scanning", unit="image", file=sys.stderr) as bar:
        scan = find_examples(
            net, layer, [filter_index], files, k=k, size=side, batch_size=opt["batch_size"] or 16, progress=bar.update
        )
    found = scan.examples[filter_index]
    grid = _grid(net, layer, [filter_index], None, {**opt, "batch_size": 1})
    synth_max = float(feature_maps(net, grid.images, layer)[0, filter_index].max())
    best = found[0].value if found else float("nan")
    ratio = synth_max / best if found and best > 0 else float("nan")
    title = (
        f"{meta.name} {layer}:{filter_index}: synthesized vs top {len(found)} of {scan.scanned} images "
        f"(ratio {ratio:.2f}x)"
    )
    path = output or Path(f"{model_slug(meta.name)}_{layer}_{filter_index:04d}_examples.png")
    save_figure(plot_examples(found, grid.images[0], synthesized_value=synth_max, title=title), path)
    save_json(
        {
            "model": meta.name,
            "weights": meta.weights,
            "layer": layer,
            "filter": filter_index,
            "scanned": scan.scanned,
            "skipped": [[str(p), why] for p, why in scan.skipped],
            "synthesized_max": synth_max,
            "ratio_to_best_natural": ratio,
            "examples": [{"image": str(e.path), "max": e.value, "position": e.position, "box": e.box} for e in found],
            "settings": grid.settings,
            "versions": versions(),
        },
        path.with_suffix(".json"),
    )
    click.echo(f"scanned {scan.scanned} images, skipped {len(scan.skipped)} unreadable")
    click.echo(f"synthesized / best natural maximum activation: {synth_max:.4g} / {best:.4g} = {ratio:.2f}x")
    click.echo(f"wrote {path}")


def _output_paths(output: Path | None, stems: list[str], suffix: str) -> list[Path]:
    """One output file per stem: ``-o file.png`` for a single one, else ``folder/stem + suffix``."""
    if len(stems) == 1 and output is not None and output.suffix.lower() == ".png":
        return [output]
    folder = output if output is not None else Path(".")
    if folder.suffix.lower() == ".png":
        raise KernelvizError(f"-o {folder} is a file name, but there are {len(stems)} outputs: give a folder")
    return [folder / f"{stem}{suffix}" for stem in stems]


def _load_images(paths: tuple[Path, ...], size: int):  # -> (B, 3, size, size)
    import torch

    from .io import load_image

    return torch.stack([load_image(p, size) for p in paths])


def _unique_stems(paths: tuple[Path, ...]) -> list[str]:
    stems = [p.stem for p in paths]
    return [f"{s}_{i}" if stems.count(s) > 1 else s for i, s in enumerate(stems)]


@main.command("maps")
@click.argument("model")
@click.argument("layer")
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    default=None,
    help="PNG file for one image, or a folder [default: ./IMAGE_LAYER_maps.png].",
)
@click.option(
    "-k",
    "--top",
    "k",
    type=click.IntRange(min=1),
    default=16,
    show_default=True,
    help="Show the k channels with the largest mean activation.",
)
@click.option("--channels", default=None, help="Show these channels instead (e.g. 0-7,12).")
@click.option(
    "--scale",
    type=click.Choice(["channel", "shared"]),
    default="channel",
    show_default=True,
    help="Color scale per tile, or one scale shared by all tiles.",
)
@click.option("--cmap", default="viridis", show_default=True, help="matplotlib colormap.")
@click.option("--raw", is_flag=True, help="Also save all channels' activations as .npy.")
@click.option("--size", type=click.IntRange(min=8), default=None, help="Input side [default: the model's].")
@model_options
@_errors_to_click
def maps_cmd(model, layer, images, output, k, channels, scale, cmap, raw, size, weights, device) -> None:
    """Feature maps of LAYER for each IMAGE: a labelled grid of channels beside the image.

    Pool layers work too: compare conv1_2 / relu1_2 with pool1 to see what max pooling keeps.
    Writes a PNG and a JSON sidecar (model, weights, layer, image, channels and their statistics).
    """
    from .io import save_figure, save_json, save_npy, versions
    from .maps import channel_stats, feature_maps, plot_feature_maps, top_channels
    from .models import model_meta

    net = _load(model, weights, device)
    meta = model_meta(net)
    side = size or meta.input_size
    batch = _load_images(images, side)
    acts = feature_maps(net, batch, layer)  # (B, C, H', W')
    if acts.dim() != 4:
        raise KernelvizError(
            f"layer {layer!r} has no spatial maps (output {tuple(acts.shape[1:])}): pick a conv or pool layer"
        )
    chosen = parse_filters((channels,)) if channels else None
    stems = _unique_stems(images)
    paths = _output_paths(output, [f"{s}_{layer}_maps" for s in stems], ".png")
    for i, path in enumerate(paths):
        shown = chosen or top_channels(acts[i], k)
        how = f"top {len(shown)} channels by mean activation" if chosen is None else "chosen channels"
        title = f"{meta.name} {layer} on {images[i].name}: {how}"
        fig = plot_feature_maps(acts[i], image=batch[i], channels=shown, scale=scale, cmap=cmap, title=title)
        save_figure(fig, path)
        stats = channel_stats(acts[i][shown])
        record = {
            "model": meta.name,
            "weights": meta.weights,
            "layer": layer,
            "image": str(images[i]),
            "input_size": side,
            "shape": list(acts.shape[1:]),
            "channels": shown,
            "selection": "top-k by mean activation" if chosen is None else "user",
            "scale": scale,
            "stats": stats,
            "versions": versions(),
        }
        if raw:
            save_npy(acts[i], path.with_suffix(".npy"))
            record["raw"] = path.with_suffix(".npy").name
        save_json(record, path.with_suffix(".json"))
        click.echo(f"wrote {path}")


@main.command("heatmap")
@click.argument("model")
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "-m",
    "--method",
    "methods",
    multiple=True,
    default=("gradcam",),
    show_default=True,
    help="gradcam, guided_gradcam, guided_backprop, saliency, integrated_gradients, smoothgrad, "
    "occlusion; repeat for several side by side.",
)
@click.option(
    "-t",
    "--target",
    "targets",
    multiple=True,
    help="Class index or name; once for all images or once per image [default: top-1].",
)
@click.option("--filter", "filter_spec", default=None, help="Explain a filter instead of a class: LAYER:INDEX.")
@click.option("--layer", default=None, help="Layer of Grad-CAM methods [default: relu5_3 for VGG].")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    default=Path("."),
    show_default=True,
    help="Folder for the outputs.",
)
@click.option("--cmap", default=None, help="Colormap of the overlay [default: jet, or RdBu_r for signed maps].")
@click.option("--alpha", type=click.FloatRange(0, 1), default=0.5, show_default=True, help="Overlay opacity.")
@click.option(
    "--scale",
    type=click.Choice(["per-map", "shared"]),
    default="per-map",
    show_default=True,
    help="Color range of side-by-side maps: each its own, or one shared.",
)
@click.option("--size", type=click.IntRange(min=8), default=None, help="Input side [default: the model's].")
@model_options
@_errors_to_click
def heatmap_cmd(
    model, images, methods, targets, filter_spec, layer, output, cmap, alpha, scale, size, weights, device
) -> None:
    """Which regions of each IMAGE drive a class (default: the top-1 prediction) or a filter.

    Writes, per image and method, an overlay PNG, the raw map as .npy and a JSON sidecar; with several
    methods, also IMAGE_methods.png with them side by side.
    """
    from .heatmaps import METHODS, attribute, plot_heatmap, predict
    from .io import save_figure, save_json, save_npy, versions
    from .models import model_meta

    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise KernelvizError(f"unknown method {bad[0]!r}: choose from {', '.join(METHODS)}")
    if filter_spec and targets:
        raise KernelvizError("give either --target (a class) or --filter (a filter), not both")
    net = _load(model, weights, device)
    meta = model_meta(net)
    side = size or meta.input_size
    batch = _load_images(images, side)
    if targets and len(targets) not in (1, len(images)):
        raise KernelvizError(f"{len(targets)} targets for {len(images)} images: give one, or one per image")
    target = None if not targets else [t for t in targets] * (len(images) if len(targets) == 1 else 1)
    if not filter_spec:
        for path, preds in zip(images, predict(net, batch, 5), strict=True):
            shown = ", ".join(f"{name or idx} {p:.3f}" for idx, name, p in preds)
            click.echo(f"{path.name}: top-5 {shown}")
    stems = _unique_stems(images)
    results = []
    for method in methods:
        res = attribute(net, batch, method, target=target, filter=filter_spec, layer=layer)
        results.append(res)
        for i, stem in enumerate(stems):
            what = filter_spec or (res.target_names[i] if res.target_names else f"class {res.targets[i]}")
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
                {
                    "model": meta.name,
                    "weights": meta.weights,
                    "image": str(images[i]),
                    "input_size": side,
                    **res.record(i),
                    "overlay": {"cmap": cmap, "alpha": alpha},
                    "versions": versions(),
                },
                base.with_suffix(".json"),
            )
            click.echo(f"wrote {base.with_suffix('.png')}")
            if bool(res.zero[i]):
                click.echo(
                    f"warning: the {method} map of {images[i].name} is all zero (nothing drives {what} "
                    "there); the overlay is empty",
                    err=True,
                )
    if len(methods) > 1:
        for i, stem in enumerate(stems):
            fig = plot_heatmap(
                batch[i : i + 1],
                [r.maps[i : i + 1] for r in results],
                titles=list(methods),
                scale=scale,
                cmap=cmap,
                alpha=alpha,
            )
            path = output / f"{stem}_methods.png"
            save_figure(fig, path)
            click.echo(f"wrote {path}")


@main.command("weights")
@click.argument("model")
@click.argument("layer")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    default=None,
    help="PNG file [default: ./MODEL_LAYER_kernels.png].",
)
@click.option("--filters", default=None, help="Filters to draw (e.g. 0-15) [default: all for RGB layers, else 0-15].")
@click.option("--inputs", default=None, help="Input channels for deeper layers (e.g. 0-15) [default: 0-15].")
@model_options
@_errors_to_click
def weights_cmd(model, layer, output, filters, inputs, weights, device) -> None:
    """Draw the learned kernels of conv LAYER: RGB tiles for a first layer, per-input gray tiles deeper."""
    from .io import save_figure
    from .kernels import kernel_weights, plot_kernels
    from .models import model_meta

    net = _load(model, weights, device)
    meta = model_meta(net)
    w = kernel_weights(net, layer)
    fig = plot_kernels(
        w,
        filters=parse_filters((filters,)) if filters else None,
        inputs=parse_filters((inputs,)) if inputs else None,
        title=f"{meta.name} {layer} kernels {tuple(w.shape)} ({meta.weights} weights)",
    )
    path = output or Path(f"{model_slug(meta.name)}_{layer}_kernels.png")
    save_figure(fig, path)
    click.echo(f"wrote {path}")


if __name__ == "__main__":  # pragma: no cover
    main()
