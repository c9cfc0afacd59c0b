"""Commands that make pictures seeded by a photo: ``caricature``, ``dream``, ``accentuate``."""

from __future__ import annotations

from pathlib import Path

import click

from ..optvis.settings import ACCENT_WEIGHT, ACCENTUATE, DEFAULTS, DREAM, OptimSettings
from .options import LOG, Bars, ModelSource, errors_to_click, given_settings, model_options, optimize_options

__all__ = ["accentuate_cmd", "caricature_cmd", "dream_cmd"]

_OUTPUT = click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    default=None,
    help="PNG file (one picture) or folder [default: ./MODEL_LAYER_PHOTO_KIND.png].",
)


def _run(kind: str, model: str, layer: str, image: Path, source: ModelSource, settings: OptimSettings,
         own: OptimSettings, **kwargs: object) -> None:  # fmt: skip
    from ..jobs.photo import photo_pictures

    chosen = own.with_(**given_settings(settings))  # the command's defaults, with what the user gave
    net = source.load(model)
    with Bars({"optimize": f"{kind} {layer}"}) as bar:
        photo_pictures(net, kind, layer, image, chosen, progress=bar, log=LOG, **kwargs)  # type: ignore[arg-type]


@click.command("caricature")
@click.argument("model")
@click.argument("layer")
@click.argument("image", type=click.Path(path_type=Path))
@_OUTPUT
@click.option("--power", type=float, default=1.0, show_default=True, help="Exponent of the cosine (0: plain dot).")
@optimize_options
@model_options
@errors_to_click
def caricature_cmd(model: str, layer: str, image: Path, output: Path | None, power: float, source: ModelSource,
                   settings: OptimSettings) -> None:  # fmt: skip
    """What LAYER keeps of IMAGE: a picture, from noise, whose activation at LAYER points the way of the photo's
    (dot product times a power of the cosine, Lucid's caricature). Early layers keep textures and edges, late ones
    the objects' parts. Writes a PNG and a JSON sidecar (with the cosine reached)."""
    _run("caricature", model, layer, image, source, settings, DEFAULTS, output=output, power=power)


@click.command("dream")
@click.argument("model")
@click.argument("layer")
@click.argument("image", type=click.Path(path_type=Path))
@_OUTPUT
@optimize_options
@model_options
@errors_to_click
def dream_cmd(model: str, layer: str, image: Path, output: Path | None, source: ModelSource,
              settings: OptimSettings) -> None:  # fmt: skip
    """DeepDream: IMAGE changed so that LAYER sees more of what it sees in it (its activation energy), from the
    photo, with few steps (48 at lr 0.02 unless given)."""
    _run("dream", model, layer, image, source, settings, DREAM, output=output)


@click.command("accentuate")
@click.argument("model")
@click.argument("layer")
@click.argument("filters", nargs=-1, required=True)
@click.option("--image", "image", type=click.Path(path_type=Path), required=True, help="The photo to start from.")
@_OUTPUT
@click.option("--reg-layer", default=None, help="Keep the picture's activation near the photo's here [default: LAYER].")
@click.option("--weight", type=float, default=ACCENT_WEIGHT, show_default=True, help="Weight of that proximity term.")
@optimize_options
@model_options
@errors_to_click
def accentuate_cmd(model: str, layer: str, filters: tuple[str, ...], image: Path, output: Path | None,
                   reg_layer: str | None, weight: float, source: ModelSource,
                   settings: OptimSettings) -> None:  # fmt: skip
    """Feature accentuation (Hamblin et al. 2024): IMAGE changed so that FILTER(s) of LAYER respond more while the
    activation at --reg-layer stays near the photo's: what in this photo drives the filter. From the photo, Fourier
    image, 64 steps at lr 0.02 unless given. One PNG and JSON sidecar per filter (activation reached and the
    photo's, distance from the photo)."""
    from ..jobs.specs import parse_filters

    _run("accentuate", model, layer, image, source, settings, ACCENTUATE, output=output, filters=parse_filters(filters),
         reg_layer=reg_layer, weight=weight)  # fmt: skip
