"""Options shared by several commands, each declared once, with defaults read from the library."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click

from ..errors import KernelvizError
from ..jobs.outputs import Log
from ..optvis.settings import DEFAULTS, PARAM_NAMES, PRECISIONS, TRANSFORM_NAMES, OptimSettings

__all__ = ["LOG", "ModelSource", "Progress", "errors_to_click", "model_options", "optimize_options", "workers_option"]

#: Jobs report through this: what was written on stdout, warnings on stderr.
LOG = Log(info=click.echo, warn=lambda message: click.echo(message, err=True))


def errors_to_click(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn library errors into ``click.ClickException`` (one line, exit 1), and Ctrl-C anywhere (not only
    inside an optimization, which stops cleanly on its own) into a one-line note and exit status 130."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except KernelvizError as err:
            raise click.ClickException(str(err)) from None
        except KeyboardInterrupt:
            click.echo("interrupted: every file already written is whole; rerun the command to go on", err=True)
            sys.exit(130)

    return wrapper


@dataclass(frozen=True)
class ModelSource:
    """How a command gets its model: the shared ``--weights``, ``--device``, ``--mean``, ``--std`` and
    ``--input-size`` options."""

    weights: str
    device: str
    mean: str | None = None
    std: str | None = None
    input_size: int | None = None

    def load(self, name: str, device: str | None = None) -> Any:  # -> nn.Module
        """Load MODEL ``name`` (imported late: ``--help`` stays fast), saying so when its preprocessing is
        unknown."""
        from ..core.models import load_model, model_meta
        from ..jobs.specs import parse_numbers

        net = load_model(
            name,
            weights=self.weights,
            device=device or self.device,
            mean=parse_numbers(self.mean, "--mean"),
            std=parse_numbers(self.std, "--std"),
            input_size=self.input_size,
        )
        meta = model_meta(net)
        if meta.preprocessing == "unknown":
            click.echo(
                f"note: {name} carries no preprocessing: images go in as RGB in [0, 1] at {meta.input_size} px; "
                "if it was trained otherwise, pass --mean, --std and --input-size",
                err=True,
            )
        return net


_MODEL_OPTIONS = [
    click.option(
        "--weights",
        default="default",
        show_default=True,
        help="default (torchvision's pretrained weights), random, a weights name such as "
        "IMAGENET1K_V1, or PATH to a local checkpoint.",
    ),
    click.option(
        "--device",
        default="auto",
        show_default=True,
        help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps.",
    ),
    click.option(
        "--mean", default=None, help="Input normalization mean, e.g. 0.5,0.5,0.5 [default: what the model carries]."
    ),
    click.option("--std", default=None, help="Input normalization std, e.g. 0.5,0.5,0.5 [default: the model's]."),
    click.option(
        "--input-size",
        type=click.IntRange(min=8),
        default=None,
        help="Side the model was trained at [default: its own].",
    ),
]


def model_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The options of every command that loads a model, handed to it as one ``source`` (a :class:`ModelSource`)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        source = ModelSource(**{name: kwargs.pop(name) for name in ("weights", "device", "mean", "std", "input_size")})
        return fn(*args, source=source, **kwargs)

    for option in reversed(_MODEL_OPTIONS):
        wrapper = option(wrapper)
    return wrapper


_OPTIMIZE_OPTIONS = [
    click.option(
        "--steps", type=click.IntRange(min=0), default=DEFAULTS.steps, show_default=True, help="Optimizer steps."
    ),
    click.option(
        "--size", type=click.IntRange(min=8), default=DEFAULTS.size, help="Image side in pixels [default: the model's]."
    ),
    click.option("--lr", type=float, default=DEFAULTS.lr, show_default=True, help="Adam learning rate."),
    click.option(
        "--param",
        type=click.Choice(PARAM_NAMES),
        default=DEFAULTS.param,
        show_default=True,
        help="Image parameterization: fourier (decorrelated, 1/f spectrum), pixel (the article's method), "
        "or maco (phase only, natural 1/f magnitude).",
    ),
    click.option(
        "--decay",
        type=click.FloatRange(0, 4),
        default=DEFAULTS.decay,
        show_default=True,
        help="Exponent of the fourier image's 1/f**decay spectrum: higher, less fine detail.",
    ),
    click.option(
        "--detail",
        type=click.FloatRange(0.1, 1),
        default=DEFAULTS.detail,
        show_default=True,
        help="The fourier image's resolution as a fraction of --size (built smaller, then upsampled): lower, "
        "smoother pictures; 1 leaves every pixel free.",
    ),
    click.option(
        "--transforms",
        type=click.Choice(TRANSFORM_NAMES),
        default=DEFAULTS.transforms or "none",
        show_default=True,
        help="Random pad/jitter/scale/rotate each step (Lucid's recipe), or none.",
    ),
    click.option("--seed", type=int, default=DEFAULTS.seed, show_default=True),
    click.option(
        "--precision",
        type=click.Choice(PRECISIONS),
        default=DEFAULTS.precision,
        show_default=True,
        help="auto = bf16 on a CUDA GPU that supports it, else fp32.",
    ),
    click.option(
        "--batch-size",
        type=click.IntRange(min=1),
        default=DEFAULTS.batch_size,
        help="Filters optimized together [default: 8 on CPU; on a GPU as many as fit].",
    ),
]


def optimize_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The optimization options (one per field of :class:`~kernelviz.OptimSettings`), handed to the
    command as one validated ``settings`` object."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            settings = DEFAULTS.with_(**{name: kwargs.pop(name) for name in OptimSettings.names()})
        except KernelvizError as err:
            raise click.ClickException(str(err)) from None
        return fn(*args, settings=settings, **kwargs)

    for option in reversed(_OPTIMIZE_OPTIONS):
        wrapper = option(wrapper)
    return wrapper


def given_settings(settings: OptimSettings) -> dict[str, Any]:
    """The optimization settings the user gave on the command line (not left at their defaults), by name: a command
    with other defaults (``serve --quick``, ``dream``) applies them over its own."""
    ctx = click.get_current_context()
    return {
        n: getattr(settings, n)
        for n in OptimSettings.names()
        if ctx.get_parameter_source(n) not in (None, click.core.ParameterSource.DEFAULT)
    }


#: ``--workers``: a dataset job's data-loading processes.
workers_option = click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=None,
    help="Data-loading processes [default: a quarter of the CPU cores on a CPU, half on a GPU; 0: none].",
)


class Progress:
    """A tqdm bar over optimizer steps showing the current objective value (restarts for each batch)."""

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

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.bar.close()
