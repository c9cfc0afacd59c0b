"""Options shared by several commands, each declared once, with defaults read from the library."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import click

from ..errors import KernelvizError
from ..jobs.outputs import Log
from ..optvis.settings import DEFAULTS, PARAM_NAMES, PRECISIONS, TRANSFORM_NAMES, OptimSettings

__all__ = [
    "LOG",
    "Bars",
    "ModelSource",
    "errors_to_click",
    "given_settings",
    "model_options",
    "optimize_options",
    "refuse_given",
    "workers_option",
]


def _echo(message: str, err: bool = False) -> None:
    """Print a line above any progress bar (tqdm clears its bars, prints, and draws them again)."""
    from tqdm.auto import tqdm

    tqdm.write(message, file=sys.stderr if err else sys.stdout)


#: Jobs report through this: what was written on stdout, warnings on stderr (above any progress bar).
LOG = Log(info=_echo, warn=lambda message: _echo(message, err=True))


def errors_to_click(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn library errors into ``click.ClickException`` (one line, exit 1), and Ctrl-C anywhere (not only
    inside an optimization, which stops cleanly on its own) into a one-line note and exit status 130. Any other
    failure is a bug and keeps its traceback, unless the cause is an install whose torch and torchvision do not go
    together (:func:`~kernelviz.core.install.install_problem`): that is said in one line."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except KernelvizError as err:
            raise click.ClickException(str(err)) from None
        except KeyboardInterrupt:
            click.echo("interrupted: every file already written is whole; rerun the command to go on", err=True)
            sys.exit(130)
        except Exception:
            from ..core.install import install_problem

            problem = install_problem()
            if problem is not None:
                raise click.ClickException(problem) from None
            raise

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
        help="Filters optimized together; in a scan (examples MODEL --images, atlas --images), images per forward "
        "pass [default: 8 on a CPU; on a GPU as many filters as fit, 64 images].",
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


def check_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--images DIR --check``: path-check the pictures against natural images, handed to the command as
    ``check`` (the images, or ``None``)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        images, check = kwargs.pop("check_images"), kwargs.pop("check")
        if check and images is None:
            raise click.UsageError("--check needs --images DIR: the natural images to check the pictures against")
        if images is not None and not check:
            raise click.UsageError("--images is what --check compares the pictures with: add --check")
        return fn(*args, check=images, **kwargs)

    wrapper = click.option(
        "--check",
        is_flag=True,
        help="Path-check each picture (Geirhos et al., 2024) against its filter's natural examples in --images, "
        'calibrated there so that at most 5% of natural images are flagged; the record gets "trust".',
    )(wrapper)
    return click.option(
        "--images",
        "check_images",
        type=click.Path(path_type=Path),
        default=None,
        help="Folder (or list file) of natural images for --check.",
    )(wrapper)


def given_settings(settings: OptimSettings) -> dict[str, Any]:
    """The optimization settings the user gave on the command line (not left at their defaults), by name: a command
    with other defaults (``serve --quick``, ``dream``) applies them over its own."""
    ctx = click.get_current_context()
    return {
        n: getattr(settings, n)
        for n in OptimSettings.names()
        if ctx.get_parameter_source(n) not in (None, click.core.ParameterSource.DEFAULT)
    }


def refuse_given(names: Sequence[str], mode: str) -> None:
    """Refuse, in one line, the options among ``names`` (parameter names) that the user gave to a ``mode`` that
    does not use them, instead of ignoring them silently."""
    ctx = click.get_current_context()
    given = [
        max(p.opts, key=len)
        for p in ctx.command.params
        if p.name in names and ctx.get_parameter_source(p.name) not in (None, click.core.ParameterSource.DEFAULT)
    ]
    if given:
        verb = "does" if len(given) == 1 else "do"
        raise click.UsageError(
            f"{', '.join(given)} {verb} not apply to {mode}: leave {'it' if verb == 'does' else 'them'} out"
        )


#: ``--workers``: a dataset job's data-loading processes.
workers_option = click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=None,
    help="Data-loading processes [default: a quarter of the CPU cores on a CPU, half on a GPU; 0: none].",
)


class Bars:
    """Progress bars for the library's reports (:class:`~kernelviz.core.progress.Progress`): one tqdm bar per
    stage, on stderr, the objective beside an optimization's steps. A stage that starts again (the next batch of
    an optimization) resets its bar; a new stage closes the bars before it.

    Args:
        titles: the description of each stage's bar (default: the stage's name).
        enabled: ``False`` (``--quiet``): no bars; the object still takes reports.
        line: the screen line of the bars (under ``torchrun``, each rank its own: its rank).
    """

    #: What each stage counts (images, for the others).
    UNITS: ClassVar[dict[str, str]] = {"optimize": "step", "pictures": "step", "write": "file"}

    def __init__(self, titles: dict[str, str] | None = None, enabled: bool = True, line: int | None = None) -> None:
        self.titles = titles or {}
        self.enabled = enabled
        self.line = line
        self.bars: dict[str, Any] = {}

    def __call__(self, report: Any) -> None:  # a kernelviz.core.progress.Progress
        if not self.enabled:
            return
        from tqdm.auto import tqdm

        bar = self.bars.get(report.stage)
        if bar is None:
            self.close()
            unit = self.UNITS.get(report.stage, "image")
            bar = tqdm(total=report.total, desc=self.titles.get(report.stage, report.stage), unit=unit,
                       file=sys.stderr, dynamic_ncols=True, position=self.line)  # fmt: skip
            self.bars[report.stage] = bar
        if report.done < bar.n:  # the stage started again (the next batch)
            bar.reset(total=report.total)
        bar.total = report.total
        bar.update(report.done - bar.n)
        if report.value is not None:
            bar.set_postfix(objective=f"{report.value:.4g}")

    def __enter__(self) -> Bars:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()
