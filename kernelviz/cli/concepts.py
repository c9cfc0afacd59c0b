"""The ``concepts`` command: a layer's concepts over an image collection."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..optvis.settings import OptimSettings
from .options import LOG, Bars, ModelSource, errors_to_click, model_options, optimize_options, workers_option

__all__ = ["concepts_cmd"]


@click.command("concepts")
@click.argument("model")
@click.argument("layer")
@click.option(
    "--images",
    type=click.Path(path_type=Path),
    required=True,
    help="Folder of images (one subfolder per class: per-class statistics, and --class), or a text file listing them.",
)
@click.option("-k", type=click.IntRange(min=1), default=8, show_default=True, help="Concepts to find.")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    default=None,
    help="Output folder [default: ./MODEL_LAYER_concepts].",
)
@click.option(
    "--class",
    "class_name",
    default=None,
    help="Only the images of this class (subfolder) of --images; importance for the model's class of that name.",
)
@click.option(
    "--target",
    default=None,
    help="Class (index or name) the importance is measured for [default: --class's, else each image's top-1].",
)
@click.option(
    "--samples",
    type=click.IntRange(min=1),
    default=16384,
    show_default=True,
    help="Activation vectors (positions) to fit on, spread over the images.",
)
@click.option("--top", type=click.IntRange(min=1), default=9, show_default=True, help="Patches kept per concept.")
@workers_option
@click.option("--quiet", is_flag=True, help="No progress bars.")
@optimize_options
@model_options
@errors_to_click
def concepts_cmd(
    model: str,
    layer: str,
    images: Path,
    k: int,
    output: Path | None,
    class_name: str | None,
    target: str | None,
    samples: int,
    top: int,
    workers: int | None,
    quiet: bool,
    source: ModelSource,
    settings: OptimSettings,
) -> None:
    """Discover K concepts of LAYER over a collection of images, show each and weigh it.

    The layer's activation vectors at positions sampled over the images are factored by non-negative matrix
    factorization (scikit-learn's NMF): each concept is a direction in the layer's channel space. Writes
    OUT/concepts.json (per concept its direction, share of the reconstruction, importance for the class, patches),
    OUT/concept_KK.png (the direction's synthesized picture beside the patches where the concept is strongest),
    the pictures with their JSON records, and the contact sheet OUT/concepts.png. Importance is gradient x code:
    the part of the class score the concept's codes carry (exact for a linear head). LAYER must have
    non-negative outputs (after a ReLU-like activation). `kernelviz heatmap MODEL IMAGE --concepts
    OUT/concepts.json` then shows where each concept is in new images.
    """
    from ..core.models import model_meta, model_slug
    from ..jobs.concepts import export_concepts
    from ..jobs.specs import runtime_device

    net = source.load(model, runtime_device(source.device))
    folder = output or Path(f"{model_slug(model_meta(net).name)}_{layer.replace('/', '_')}_concepts")
    bars = Bars({"pictures": f"{layer} ({k} concept pictures)"}, enabled=not quiet)
    try:
        export_concepts(
            net,
            layer,
            images,
            k,
            folder,
            settings,
            class_name=class_name,
            target=int(target) if target is not None and target.lstrip("-").isdigit() else target,
            samples=samples,
            top=top,
            workers=workers,
            progress=bars,
            log=LOG,
        )
    except KeyboardInterrupt:
        bars.close()
        click.echo(
            "interrupted before the concepts were found: nothing was written (an interruption while the pictures "
            "are drawn keeps concepts.json and the pictures drawn so far)",
            err=True,
        )
        sys.exit(130)
    finally:
        bars.close()
