"""Commands that optimize images: ``filter``, ``grid``, ``atlas``, ``examples``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from ..optvis.settings import OptimSettings
from .options import (
    LOG,
    Bars,
    ModelSource,
    check_options,
    errors_to_click,
    model_options,
    optimize_options,
    refuse_given,
    workers_option,
)

__all__ = ["atlas_cmd", "examples_cmd", "filter_cmd", "grid_cmd"]


@click.command("filter", context_settings={"ignore_unknown_options": True})
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
    help="Start from this image instead of noise (kernelviz accentuate keeps the picture close to it too).",
)
@click.option(
    "--negative",
    is_flag=True,
    help="Minimize instead: the picture each filter responds to least (most inhibiting); the record says so.",
)
@check_options
@model_options
@errors_to_click
def filter_cmd(
    model: str,
    layer: str,
    filters: tuple[str, ...],
    output: Path | None,
    init_image: Path | None,
    negative: bool,
    check: Path | None,
    source: ModelSource,
    settings: OptimSettings,
) -> None:
    """Synthesize the image that FILTER(s) of LAYER respond to most.

    Gradient ascent changes only the pixels of an image (weights frozen) until
    the filter's mean response is as large as it can be. FILTERS are indices
    and ranges: 17, 0-15, 3,5. Writes a PNG and a JSON sidecar per filter.

    With --images DIR --check, each picture is path-checked against its filter's
    natural examples in DIR (calibrated there); a flagged picture gets a warning.

    Example: kernelviz filter vgg16 conv3_2 17
    """
    from ..jobs.optimize import synthesize_filters
    from ..jobs.specs import parse_filters

    indices = parse_filters(filters)
    net = source.load(model)
    with Bars(_stages(f"{layer} ({len(indices)} filters)", check)) as bar:
        report = synthesize_filters(
            net,
            layer,
            indices,
            settings,
            output=output,
            init=init_image,
            progress=bar,
            log=LOG,
            negative=negative,
            check=check,
        )
    if report.interrupted:
        click.echo("interrupted: the images written hold the state reached", err=True)
        sys.exit(130)


@click.command("grid")
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
@click.option(
    "--negative",
    is_flag=True,
    help="Minimize instead: the picture each filter responds to least (most inhibiting); the record says so.",
)
@check_options
@optimize_options
@model_options
@errors_to_click
def grid_cmd(
    model: str,
    layer: str,
    filters: str | None,
    output: Path | None,
    individual: Path | None,
    cols: int | None,
    negative: bool,
    check: Path | None,
    source: ModelSource,
    settings: OptimSettings,
) -> None:
    """Every requested filter of LAYER on one labelled contact sheet, optimized in batches (--images DIR --check:
    each picture path-checked, as `kernelviz filter`)."""
    from ..jobs.optimize import grid_sheet
    from ..jobs.specs import parse_filters

    indices = parse_filters(filters) if filters else None
    net = source.load(model)
    count = "all" if indices is None else len(indices)
    with Bars(_stages(f"{layer} ({count} filters)", check)) as bar:
        report = grid_sheet(
            net,
            layer,
            indices,
            settings,
            output=output,
            individual=individual,
            cols=cols,
            progress=bar,
            log=LOG,
            negative=negative,
            check=check,
        )
    if report.interrupted:
        sys.exit(130)


def _stages(optimize: str, check: Path | None) -> dict[str, str]:
    """The progress bars of a picture command: the path check's scan first when there is one."""
    return {**({"scan": "path check: scanning --images"} if check is not None else {}), "optimize": optimize}


@click.command("atlas")
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
@click.option(
    "--negative",
    is_flag=True,
    help="Also each filter's negative picture (minimized: what inhibits it most), beside the positive one.",
)
@click.option(
    "--check",
    is_flag=True,
    help="With --images: path-check every picture against its filter's natural examples (calibrated on the "
    'images); each record gets "trust", each card a badge.',
)
@optimize_options
@model_options
@errors_to_click
def atlas_cmd(
    model: str,
    output: Path,
    layers: str | None,
    filters: str,
    images: Path | None,
    k: int,
    shard: str | None,
    quiet: bool,
    negative: bool,
    check: bool,
    source: ModelSource,
    settings: OptimSettings,
) -> None:
    """A browsable atlas of MODEL: per-filter images and JSON, contact sheets, a static site.

    Rerunning the same command resumes (finished filters are skipped; files are written
    atomically). Runs under `torchrun --nproc-per-node N` (one share per rank, rank 0 writes the
    index) or as independent processes with --shard i/n.
    """
    from ..jobs.outputs import check_folder
    from ..jobs.specs import parse_filter_choice, parse_shard, runtime_device
    from ..sets.atlas import atlas

    if check and images is None:
        raise click.UsageError("--check needs --images DIR: the natural images to check the pictures against")
    chosen = parse_filter_choice(filters)
    shard_pair = parse_shard(shard)
    check_folder(output)
    net = source.load(model, runtime_device(source.device))
    rank, world = os.environ.get("RANK"), os.environ.get("WORLD_SIZE")
    tag = f"[{rank}/{world}] " if rank is not None and world not in (None, "1") else ""
    bars = Bars({"filters": f"{tag}filters", "scan": f"{tag}scanning", "write": f"{tag}writing crops",
                 "check": f"{tag}path check (layers)"},
                enabled=not quiet, line=int(rank) if tag and rank else None)  # fmt: skip
    with bars:
        report = atlas(
            net,
            output,
            settings,
            layers=layers.split(",") if layers else None,
            filters=chosen,
            images=images,
            k=k,
            shard=shard_pair,
            progress=bars,
            negative=negative,
            check=check,
        )
    for line in report.flagged:
        click.echo(f"warning: {line}", err=True)
    if report.checked:
        click.echo(f'path check: {len(report.flagged)} of {report.checked} pictures flagged (each record\'s "trust")')
    click.echo(
        f"{report.root}: {report.computed} filters computed, {report.skipped} already done, "
        f"{report.remaining} left in the whole atlas"
    )
    if report.index_written:
        click.echo(f"wrote {report.root / 'index.html'}")
    if report.interrupted:
        click.echo("interrupted: finished filters are saved; rerun the same command to resume", err=True)
        sys.exit(130)


@click.command("examples")
@click.argument("model")
@click.argument("target", nargs=-1, metavar="[LAYER FILTER]")
@click.option(
    "--images",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder of images to scan (one subfolder per class: class statistics too), or a text file listing them.",
)
@click.option("-k", type=click.IntRange(min=1), default=9, show_default=True, help="Examples to keep per ranking.")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    default=None,
    help="With LAYER FILTER: the sheet PNG [default: ./MODEL_LAYER_NNNN_examples.png]; without: the output folder "
    "(OUT/<model>/<layer>/examples.json, the atlas layout).",
)
@click.option("--layers", default=None, help="Comma-separated layers to scan [default: every convolution].")
@click.option(
    "--labels",
    "label_file",
    type=click.Path(path_type=Path),
    default=None,
    help="A CSV of image path and its labels (several per image): the units are labelled by them too (units.json).",
)
@click.option(
    "--importance",
    is_flag=True,
    help="Also what each unit matters for: the classes (groups, labels) whose probability it carries most, "
    "estimated to first order (gradient x activation) in one more pass per layer; into units.json.",
)
@workers_option
@click.option("--shard", default=None, help="i/n: scan only the i-th of n shares (job arrays without torchrun).")
@click.option(
    "--every",
    type=click.IntRange(min=1),
    default=1024,
    show_default=True,
    help="Images between checkpoints of the running scan (a killed scan resumes from the last one).",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@optimize_options
@model_options
@errors_to_click
def examples_cmd(
    model: str,
    target: tuple[str, ...],
    images: Path | None,
    k: int,
    output: Path | None,
    layers: str | None,
    label_file: Path | None,
    importance: bool,
    workers: int | None,
    shard: str | None,
    every: int,
    quiet: bool,
    source: ModelSource,
    settings: OptimSettings,
) -> None:
    """The images of a collection that excite units most, and what each unit is.

    \b
    kernelviz examples MODEL --images DIR -o OUT [--layers L1,L2] [-k K]
        One pass over DIR for every unit of the layers (default: every convolution): per unit the top K
        images by maximum activation (cropped where it fires), by mean activation, the bottom K (most
        negative) and, when DIR has one subfolder per class, the classes it responds to. Writes
        OUT/<model>/<layer>/examples.json and crops, which the atlas site and `kernelviz serve --atlas OUT`
        show. Resumable (rerun the same command), under `torchrun --nproc-per-node N` or with --shard i/n
        (the last shard to finish merges; rerun any shard's command to merge again). --batch-size sets the
        images per forward pass (default 8 on a CPU, 64 on a GPU), --size the input side. Each layer also gets
        units.json: per unit its firing frequency, mean and max, a histogram of its per-image maxima, the images at
        several quantiles of them, and its labels (the collection's classes, WordNet groups, --labels FILE) with
        their AUC: `kernelviz units OUT` lists them.

    \b
    kernelviz examples MODEL LAYER FILTER --images DIR [-o SHEET.png]
        The top images of one filter beside its synthesized image, with the ratio of the synthesized image's
        maximum activation to the best natural image's.

    Unreadable files are skipped and counted.
    """
    if images is None:
        raise click.UsageError("--images is required: the folder (or list file) of images to scan")
    if importance and target:
        raise click.UsageError("--importance belongs to the scan of every unit: drop LAYER FILTER")
    if len(target) not in (0, 2):
        raise click.UsageError("give LAYER FILTER for one filter's sheet, or neither to scan every unit (-o OUT)")
    if target:
        if layers or shard or label_file:
            raise click.UsageError("--layers, --shard and --labels belong to the scan of every unit: drop LAYER FILTER")
        _one_filter(model, target[0], _filter_index(target[1]), images, k, output, workers, source, settings)
        return
    if output is None:
        raise click.UsageError("-o OUT is required to scan every unit: examples go to OUT/<model>/<layer>/")
    refuse_given(
        ["steps", "lr", "param", "decay", "detail", "transforms", "seed", "precision"],
        "a scan of every unit (it makes no picture: only --batch-size and --size apply)",
    )
    from ..core.models import model_meta, model_slug
    from ..jobs.outputs import check_folder
    from ..jobs.specs import parse_shard, runtime_device
    from ..sets.examples import scan_to_atlas

    shard_pair = parse_shard(shard)
    check_folder(output)
    net = source.load(model, runtime_device(source.device))
    root = output / model_slug(model_meta(net).name)
    bars = Bars({"scan": "scanning", "write": "writing crops"}, enabled=not quiet)
    try:
        report = scan_to_atlas(
            net,
            root,
            images,
            layers.split(",") if layers else None,
            k=k,
            size=settings.size,
            batch_size=settings.batch_size,
            workers=workers,
            shard=shard_pair,
            every=every,
            label_file=label_file,
            progress=bars,
        )
    except KeyboardInterrupt:
        click.echo("interrupted: the scan is checkpointed; rerun the same command to resume", err=True)
        sys.exit(130)
    finally:
        bars.close()
    scan = report.scan
    done = "images scanned" if report.scanned else "images scanned before (that scan reused)"
    click.echo(f"{report.root}: {scan.scanned} {done}, {len(scan.skipped)} unreadable skipped")
    if report.shards_left:
        click.echo(f"{report.shards_left} shard(s) of the scan still to finish; the last one merges them")
    for layer in report.layers_written:
        click.echo(f"wrote {report.root / layer.replace('/', '_') / 'examples.json'} and units.json")
    if report.rank:
        click.echo(f"rank {report.rank}: the ranks' scans are merged; rank 0 writes the examples")
    elif not report.shards_left and not report.layers_written:
        click.echo("every layer's examples.json was already written from this scan")
    if importance and not report.shards_left and not report.rank:
        from ..sets.examples import write_importance

        with Bars({"importance": "what each unit matters for"}, enabled=not quiet) as bar:
            done_layers = write_importance(net, root, list(scan.layers), images, label_file=label_file,
                                           batch_size=settings.batch_size, workers=workers, progress=bar)  # fmt: skip
        for layer in done_layers:
            click.echo(f"wrote what each unit of {layer} matters for into its units.json (first-order estimate)")


def _filter_index(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a filter index (a whole number >= 0)", param_hint="FILTER") from None
    if value < 0:
        raise click.BadParameter(f"{value} is not >= 0", param_hint="FILTER")
    return value


def _one_filter(
    model: str,
    layer: str,
    filter_index: int,
    images: Path,
    k: int,
    output: Path | None,
    workers: int | None,
    source: ModelSource,
    settings: OptimSettings,
) -> None:
    from ..jobs.optimize import dataset_examples

    net = source.load(model)
    with Bars({"scan": "scanning", "optimize": f"{layer} (1 filter)"}) as bars:
        dataset_examples(
            net, layer, filter_index, images, settings, k=k, output=output, workers=workers, progress=bars, log=LOG
        )
