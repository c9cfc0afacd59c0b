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

from .errors import KernelvizError

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


def model_slug(name: str) -> str:
    """A file-name-safe short name: ``"pkg.mod:make_net"`` → ``"make_net"``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name.rpartition(":")[2] or name)


class _Progress:
    """A tqdm bar over optimizer steps showing the current objective value."""

    def __init__(self, total: int, desc: str) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc=desc, unit="step", file=sys.stderr, dynamic_ncols=True)
        self.done = 0

    def __call__(self, step: int, value: float) -> None:
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
@click.option("--steps", type=click.IntRange(min=0), default=256, show_default=True, help="Optimizer steps.")
@click.option(
    "--size", type=click.IntRange(min=8), default=None, help="Image side in pixels [default: the model's]."
)
@click.option("--lr", type=float, default=0.05, show_default=True, help="Adam learning rate.")
@click.option(
    "--param",
    type=click.Choice(["fourier", "pixel"]),
    default="fourier",
    show_default=True,
    help="Image parameterization: fourier (decorrelated, 1/f spectrum) or pixel (the article's method).",
)
@click.option(
    "--transforms",
    type=click.Choice(["standard", "none"]),
    default="standard",
    show_default=True,
    help="Random pad/jitter/scale/rotate each step (Lucid's recipe), or none.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--precision",
    type=click.Choice(["auto", "fp32", "bf16", "fp16"]),
    default="auto",
    show_default=True,
    help="auto = bf16 on a CUDA GPU that supports it, else fp32.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=None,
    help="Filters optimized together in one batch [default: all on a GPU, 8 on CPU].",
)
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
    steps: int,
    size: int | None,
    lr: float,
    param: str,
    transforms: str,
    seed: int,
    precision: str,
    batch_size: int | None,
    init_image: Path | None,
    weights: str,
    device: str,
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
    from .objectives import channel

    indices = parse_filters(filters)
    net = _load(model, weights, device)
    meta = model_meta(net)
    side = size or meta.input_size
    check_filters(net, layer, indices, side)  # fail on a bad name or index before any work
    init = load_image(init_image, side) if init_image is not None else None

    slug = model_slug(meta.name)
    names = [f"{slug}_{layer}_{n:04d}.png" for n in indices]
    if len(indices) == 1 and output is not None and output.suffix.lower() == ".png":
        paths = [output]
    else:
        folder = output if output is not None else Path(".")
        if folder.suffix.lower() == ".png":
            raise KernelvizError(
                f"-o {folder} is a file name, but {len(indices)} filters were asked for: give a folder"
            )
        paths = [folder / name for name in names]

    device_type = next(net.parameters()).device.type
    chunk = batch_size or (len(indices) if device_type == "cuda" else 8)
    for start in range(0, len(indices), chunk):
        group = indices[start : start + chunk]
        label = f"{layer}:{group[0]}" if len(group) == 1 else f"{layer}:{group[0]}..{group[-1]}"
        bar = _Progress(steps, label)
        try:
            result = _run_filter(
                net,
                channel(layer, group if len(group) > 1 else group[0]),
                init,
                len(group),
                dict(
                    steps=steps,
                    size=side,
                    lr=lr,
                    param=param,
                    seed=seed,
                    transforms=None if transforms == "none" else transforms,
                    precision=precision,
                    progress=bar,
                ),
            )
        finally:
            bar.close()
        for i, n in enumerate(group):
            path = paths[start + i]
            result.save(
                path,
                i,
                model=meta.name,
                weights=meta.weights,
                layer=layer,
                filter=n,
                objective=f"channel({layer}:{n})",
            )
            click.echo(f"wrote {path} (final mean activation {float(result.final[i]):.4g})")
            if bool(result.dead[i]):
                click.echo(
                    f"warning: filter {n} of {layer} never activated (dead unit): its image shows no feature",
                    err=True,
                )
        if result.interrupted:
            click.echo(
                f"interrupted after {result.steps_done} steps: the images above hold that state", err=True
            )
            sys.exit(130)


def _run_filter(net, objective, init, count: int, kwargs: dict[str, Any]):  # -> VisResult
    from .render import visualize

    if init is not None:
        init = init.unsqueeze(0).expand(count, -1, -1, -1)
    return visualize(net, objective, batch=count, init=init, **kwargs)


if __name__ == "__main__":  # pragma: no cover
    main()
