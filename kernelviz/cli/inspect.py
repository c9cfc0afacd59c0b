"""Commands that look at a network without optimizing: ``layers``, ``maps``, ``heatmap``, ``weights``."""

from __future__ import annotations

from pathlib import Path

import click

from ..explain.baselines import BASELINES
from ..explain.heatmaps import DEFAULT_BASELINES, methods_help
from .options import LOG, Bars, ModelSource, errors_to_click, model_options, refuse_given, workers_option

__all__ = ["ablate_cmd", "heatmap_cmd", "layers_cmd", "maps_cmd", "units_cmd", "weights_cmd"]


@click.command("layers")
@click.argument("model")
@model_options
@click.option("--size", type=click.IntRange(min=1), default=None, help="Input side in pixels [default: the model's].")
@click.option(
    "--type",
    "types",
    multiple=True,
    help="Only layers whose type contains this, e.g. conv, linear, pool, norm, or of a kind: block (outputs of "
    "modules with children, such as layer3.0), act (activations). Repeat for several.",
)
@click.option("--all", "blocks", is_flag=True, help="List block outputs too (layer3.0, _blocks.9...).")
@click.option("--grep", default=None, help="Only layers whose name or module path matches this regular expression.")
@errors_to_click
def layers_cmd(
    model: str, source: ModelSource, size: int | None, types: tuple[str, ...], grep: str | None, blocks: bool
) -> None:
    """List MODEL's layers: name (and module path where they differ), type, output shape, units, grid, receptive field.

    Every name listed can be given to filter, maps, heatmap, atlas...; --all adds the outputs of blocks.

    Ends with the depth counted the classic way (conv + fully connected layers).
    Shapes do not depend on the weights, so --weights random avoids loading them.
    """
    from ..jobs.inspect import layer_table

    for line in layer_table(source.load(model), size, types=types, grep=grep, blocks=blocks).lines():
        click.echo(line)


@click.command("maps")
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
@errors_to_click
def maps_cmd(
    model: str,
    layer: str,
    images: tuple[Path, ...],
    output: Path | None,
    k: int,
    channels: str | None,
    scale: str,
    cmap: str,
    raw: bool,
    size: int | None,
    source: ModelSource,
) -> None:
    """Feature maps of LAYER for each IMAGE: a labelled grid of channels beside the image.

    Pool layers work too: compare conv1_2 / relu1_2 with pool1 to see what max pooling keeps.
    Writes a PNG and a JSON sidecar (model, weights, layer, image, channels and their statistics).
    """
    from ..jobs.inspect import export_maps
    from ..jobs.specs import parse_filters

    chosen = parse_filters(channels) if channels else None
    net = source.load(model)
    export_maps(
        net,
        layer,
        images,
        output=output,
        k=k,
        channels=chosen,
        scale=scale,
        cmap=cmap,
        raw=raw,
        size=size,
        log=LOG,
    )


@click.command("heatmap")
@click.argument("model")
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "-m",
    "--method",
    "methods",
    multiple=True,
    default=("gradcam",),
    show_default=True,
    help=f"Method; repeat for several side by side. {methods_help()}.",
)
@click.option(
    "-t",
    "--target",
    "targets",
    multiple=True,
    help="Class index or name; once for all images or once per image [default: top-1].",
)
@click.option("--filter", "filter_spec", default=None, help="Explain a filter instead of a class: LAYER:INDEX.")
@click.option(
    "--layer",
    default=None,
    help="Layer of the Grad-CAM methods; LAYER:input for its input [default: the last full spatial map: relu5_3 "
    "for VGG, layer4 for ResNet, the input of the global pooling where the map comes from a shared module].",
)
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
    help="Color range of side-by-side maps: each its own, or one shared by the methods of a family (CAMs, "
    "gradients, attributions, perturbations: each in its own units).",
)
@click.option("--size", type=click.IntRange(min=8), default=None, help="Input side [default: the model's].")
@click.option(
    "--ig-steps",
    type=click.IntRange(min=1),
    default=None,
    help="Integration steps of integrated_gradients [default: doubled from 32 until the map adds up to the "
    "score's change within 5%, at most 256].",
)
@click.option(
    "--baseline",
    type=click.Choice(BASELINES),
    default=None,
    help=f"Reference image of {', '.join(DEFAULT_BASELINES)} [default: "
    + ", ".join(f"{kind} for {name}" for name, kind in DEFAULT_BASELINES.items())
    + "; all: the four averaged].",
)
@click.option("--eigen-smooth", is_flag=True, help="CAMs: the first principal component of the weighted channels.")
@click.option("--aug-smooth", is_flag=True, help="CAMs: average over the image flipped and rescaled (6 passes).")
@click.option(
    "--score",
    is_flag=True,
    help="Rate each map: deletion AUC (lower is better) and insertion AUC (higher is better) over 20 steps into a "
    "blurred image, next to a random and a centred-blob map.",
)
@click.option(
    "--sanity",
    is_flag=True,
    help="Re-run each method as the network's layers are randomized, top first (Adebayo et al. 2018); flag maps "
    "that do not change.",
)
@click.option(
    "--concepts",
    "concepts_file",
    type=click.Path(path_type=Path),
    default=None,
    help="Instead of a method: where each concept of this concepts.json (or folder; `kernelviz concepts`) is in "
    "each image, on one color scale.",
)
@model_options
@errors_to_click
def heatmap_cmd(
    model: str,
    images: tuple[Path, ...],
    methods: tuple[str, ...],
    targets: tuple[str, ...],
    filter_spec: str | None,
    layer: str | None,
    output: Path,
    cmap: str | None,
    alpha: float,
    scale: str,
    size: int | None,
    ig_steps: int | None,
    baseline: str | None,
    eigen_smooth: bool,
    aug_smooth: bool,
    score: bool,
    sanity: bool,
    concepts_file: Path | None,
    source: ModelSource,
) -> None:
    """Which regions of each IMAGE drive a class (default: the top-1 prediction) or a filter.

    Writes, per image and method, an overlay PNG, the raw map as .npy and a JSON sidecar; with several
    methods, also IMAGE_methods.png with them side by side. --score and --sanity say which map to believe.
    With --concepts, writes IMAGE_concepts.png (one overlay per concept), the codes as .npy and a JSON sidecar.
    """
    if concepts_file is not None:
        from ..jobs.concepts import export_concept_maps, load_concepts

        refuse_given(
            ["methods", "targets", "filter_spec", "layer", "cmap", "scale", "ig_steps", "baseline", "eigen_smooth",
             "aug_smooth", "score", "sanity"],
            "--concepts (it draws each concept's code, not a method's map)",
        )  # fmt: skip

        load_concepts(concepts_file)  # a bad file fails before the model loads
        net = source.load(model)
        export_concept_maps(net, images, concepts_file, output=output, alpha=alpha, size=size, log=LOG)
        return
    from ..explain.heatmaps import check_methods
    from ..jobs.inspect import export_heatmaps

    check_methods(methods)  # a typo fails before the model loads
    net = source.load(model)
    export_heatmaps(
        net,
        images,
        methods,
        targets=targets,
        filter=filter_spec,
        layer=layer,
        output=output,
        cmap=cmap,
        alpha=alpha,
        scale=scale,
        size=size,
        ig_steps=ig_steps,
        baseline=baseline,
        eigen_smooth=eigen_smooth,
        aug_smooth=aug_smooth,
        score=score,
        sanity=sanity,
        log=LOG,
    )


@click.command("weights")
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
@errors_to_click
def weights_cmd(
    model: str, layer: str, output: Path | None, filters: str | None, inputs: str | None, source: ModelSource
) -> None:
    """Draw the learned kernels of conv LAYER: RGB tiles for a first layer, per-input gray tiles deeper."""
    from ..jobs.inspect import export_kernels
    from ..jobs.specs import parse_filters

    export_kernels(
        source.load(model),
        layer,
        output=output,
        filters=parse_filters(filters) if filters else None,
        inputs=parse_filters(inputs) if inputs else None,
        log=LOG,
    )


@click.command("units")
@click.argument("folder", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--layer", "layers", multiple=True, help="A layer to show (repeat for several) [default: every layer].")
@click.option(
    "--sort",
    type=click.Choice(["unit", "frequency", "auc", "label", "mean", "max", "carried"]),
    default="unit",
    show_default=True,
    help="Order of a layer's units: by index, firing frequency, the AUC or name of its best label, mean, max, or "
    "what it carries most (examples --importance: the largest estimated drop of a class's probability).",
)
@click.option("--label", default=None, help="Instead: the units labelled like this (any layer), best AUC first.")
@click.option("-n", "--top", type=click.IntRange(min=1), default=None, help="Rows at most [default: all].")
@errors_to_click
def units_cmd(folder: Path, layers: tuple[str, ...], sort: str, label: str | None, top: int | None) -> None:
    """What each unit of a scanned collection is: its firing frequency, mean and max, dead or dense, and its best
    label with its AUC, from the units.json that `kernelviz examples MODEL --images DIR -o OUT` writes (FOLDER:
    OUT/<model>, or OUT). --label dog finds the units labelled so across layers.

    A unit fires on an image when its maximum there is above 0; it is dense above 0 on 95% of the images or more.
    Its labels are the collection's classes, the WordNet groups above ImageNet classes, and --labels FILE's labels
    that it tells apart from the rest with an AUC of 0.9 or more (2 images or more) beyond chance (one-sided
    Mann-Whitney p-value under 0.05 divided by the number of labels tested).
    """
    from ..jobs.inspect import units_table

    for line in units_table(folder, list(layers) or None, sort=sort, label=label, top=top):
        click.echo(line)


@click.command("ablate")
@click.argument("model")
@click.argument("layer")
@click.argument("units", nargs=-1, required=True)
@click.option(
    "--images", type=click.Path(path_type=Path), required=True, help="An ImageFolder: one subfolder per class."
)
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None, help="Write the whole report as JSON.")
@click.option(
    "--mode",
    type=click.Choice(["zero", "mean"]),
    default=None,
    help="Switch the units off, or hold them at their mean over the images [default: zero].",
)
@click.option("--scale", "factor", type=float, default=None, help="Instead: multiply the units by F (4: amplify).")
@click.option("--labels", "label_file", type=click.Path(path_type=Path), default=None,
              help="A CSV of image path and its labels: reported per label too.")  # fmt: skip
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Images per forward pass.")
@click.option("--size", type=click.IntRange(min=8), default=None, help="Input side [default: the model's].")
@click.option("-n", "--top", type=click.IntRange(min=1), default=5, show_default=True, help="Rows of each table.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@workers_option
@model_options
@errors_to_click
def ablate_cmd(
    model: str,
    layer: str,
    units: tuple[str, ...],
    images: Path,
    output: Path | None,
    mode: str | None,
    factor: float | None,
    label_file: Path | None,
    batch_size: int | None,
    size: int | None,
    top: int,
    quiet: bool,
    workers: int | None,
    source: ModelSource,
) -> None:
    """Does a unit matter? Run the images of --images through MODEL with UNITS of LAYER switched off (or held at
    their mean, --mode mean, or multiplied, --scale F), and say what the network loses: accuracy and the probability
    of each class before and after, the images whose top-1 changed, the classes most hurt and helped, and per
    WordNet group (an ImageNet collection) and --labels label. UNITS as filters elsewhere: 17, 0-15 17, 3,5,9.

    The class of an image is its folder's: folders named by WordNet id map to their ImageNet-1k index, else by name
    to the model's categories, else in sorted order (as many folders as outputs). One pass over the images; the
    model is left unchanged.
    """
    from ..jobs.inspect import ablate_units, ablation_lines, save_ablation
    from ..jobs.outputs import check_writable
    from ..jobs.specs import parse_filters

    if factor is not None and mode is not None:
        raise click.UsageError("--scale multiplies the units: drop --mode (zero and mean are the other ways)")
    chosen = parse_filters(units)
    if output is not None:
        check_writable([output])
    net = source.load(model)
    bars = Bars({"mean": "the units' means", "ablate": "ablating"}, enabled=not quiet)
    try:
        found = ablate_units(
            net,
            layer,
            chosen,
            images,
            mode="scale" if factor is not None else mode or "zero",
            factor=factor,
            label_file=str(label_file) if label_file is not None else None,
            batch_size=batch_size,
            workers=workers,
            size=size,
            progress=bars,
        )
    finally:
        bars.close()
    for line in ablation_lines(found, top):
        click.echo(line)
    if output is not None:
        click.echo(f"wrote {save_ablation(found, model, output)}")
