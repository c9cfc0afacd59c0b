"""The settings of an optimization run: defaults, validation and JSON form, in one place.

:class:`OptimSettings` is what :func:`~kernelviz.visualize`, layer grids, the atlas, the CLI and the
explorer share: the CLI's option defaults are read from :data:`DEFAULTS`, never restated.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import torch

from ..errors import KernelvizError, unknown_choice

__all__ = [
    "ACCENTUATE",
    "ACCENT_WEIGHT",
    "DEFAULTS",
    "DREAM",
    "PARAM_NAMES",
    "PRECISIONS",
    "PREVIEW",
    "PREVIEW_BATCH",
    "QUICK",
    "TRANSFORM_NAMES",
    "OptimSettings",
    "preview_settings",
]

#: Image parameterizations by name (see :mod:`kernelviz.optvis.params`).
PARAM_NAMES = ("fourier", "pixel", "maco")
#: Transform recipes by name; ``"none"`` (or ``None``) applies none.
TRANSFORM_NAMES = ("standard", "none")
#: ``"auto"`` = bf16 on a CUDA GPU that supports it, else fp32.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class OptimSettings:
    """How an image is optimized. Every field has the default a user gets from every front-end.

    Attributes:
        steps: Adam steps. 192: on EfficientNet-Lite0 they reach 98% of the robust activation of 256 steps and
            90% of 512's (``benchmarks/QUALITY.md``).
        size: image side in pixels; ``None`` = the model's input size.
        lr: Adam learning rate (Lucid's 0.05).
        param: image parameterization: ``"fourier"`` (decorrelated 1/f spectrum, far less noisy than
            pixels), ``"pixel"`` (the article's plain pixels) or ``"maco"`` (phase only).
        decay: the exponent of the Fourier image's ``1/f**decay`` spectrum scaling (other
            parameterizations ignore it): higher puts less of the change into fine detail.
        detail: the Fourier image's resolution as a fraction of ``size`` (other parameterizations ignore
            it): it is built at ``size * detail`` pixels and upsampled, so lower is smoother; 1 leaves every
            pixel free.
        transforms: ``"standard"`` (Lucid's pad/jitter/scale/rotate each step) or ``None`` for none.
        seed: seeds the start images and the transforms: same seed and settings, same images on a CPU.
        precision: ``"auto"``, ``"fp32"``, ``"bf16"`` or ``"fp16"`` for the model's forward/backward.
        batch_size: images optimized together by grids and atlases; ``None`` = 8 on a CPU, as many as
            fit on a GPU (see :func:`~kernelviz.optvis.batch.auto_batch_size`).
    """

    steps: int = 192
    size: int | None = None
    lr: float = 0.05
    param: str | Callable[..., Any] = "fourier"
    decay: float = 1.25
    detail: float = 0.57
    transforms: str | Sequence[Callable[[torch.Tensor], torch.Tensor]] | None = "standard"
    seed: int = 0
    precision: str = "auto"
    batch_size: int | None = None

    def __post_init__(self) -> None:
        if self.transforms == "none":  # the CLI's spelling of "no transforms"
            object.__setattr__(self, "transforms", None)
        _whole(self.steps, "steps", low=0)
        if self.size is not None:
            _whole(self.size, "size", low=8)
        if (
            isinstance(self.lr, bool)
            or not isinstance(self.lr, int | float)
            or not (self.lr > 0 and math.isfinite(self.lr))
        ):
            raise KernelvizError(f"lr must be a positive number, got {self.lr!r}")
        if isinstance(self.decay, bool) or not isinstance(self.decay, int | float) or not 0 <= self.decay <= 4:
            raise KernelvizError(f"decay must be a number from 0 to 4, got {self.decay!r}")
        if isinstance(self.detail, bool) or not isinstance(self.detail, int | float) or not 0.1 <= self.detail <= 1:
            raise KernelvizError(f"detail must be a number from 0.1 to 1, got {self.detail!r}")
        if not callable(self.param) and self.param not in PARAM_NAMES:
            raise unknown_choice("parameterization", self.param, PARAM_NAMES)
        if isinstance(self.transforms, str) and self.transforms not in TRANSFORM_NAMES:
            raise unknown_choice("transforms", self.transforms, TRANSFORM_NAMES)
        _whole(self.seed, "seed", low=None)
        if self.precision not in PRECISIONS:
            raise unknown_choice("precision", self.precision, PRECISIONS)
        if self.batch_size is not None:
            _whole(self.batch_size, "batch_size", low=1)

    def with_(self, **changes: Any) -> OptimSettings:
        """A copy with ``changes``, validated (unknown names are an error)."""
        unknown = sorted(set(changes) - {f.name for f in fields(self)})
        if unknown:
            raise KernelvizError(f"unknown optimization settings: {', '.join(unknown)}")
        return replace(self, **changes)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The field names, in order."""
        return tuple(f.name for f in fields(cls))

    def for_model(self, input_size: int) -> OptimSettings:
        """These settings with ``size`` filled in from the model's input size when unset."""
        return self if self.size is not None else replace(self, size=int(input_size))

    def to_json(self) -> dict[str, Any]:
        """The JSON form: every field; ``transforms`` is ``"none"`` rather than ``null``."""
        data = self._values()
        if not isinstance(self.transforms, str):
            data["transforms"] = "none" if self.transforms is None else "custom"
        if not isinstance(self.param, str):
            data["param"] = "custom"
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OptimSettings:
        """Read :meth:`to_json`'s form back (unknown keys are an error: a record from another tool)."""
        return DEFAULTS.with_(**data)

    def visualize_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :func:`~kernelviz.visualize` these settings fix (all but batch_size)."""
        data = self._values()
        data.pop("batch_size")
        return data

    def _values(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _whole(value: object, name: str, low: int | None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise KernelvizError(f"{name} must be a whole number, got {value!r}")
    if low is not None and value < low:
        raise KernelvizError(f"{name} must be >= {low}, got {value}")


#: The defaults every front-end starts from.
DEFAULTS = OptimSettings()

#: Previews: a third of the steps at 128 px (``kernelviz serve --quick``): on EfficientNet-Lite0 and 2 cores a
#: layer page's first 8 pictures in 7.6 s instead of 64.4 s (benchmarks/README.md, "The explorer's speed").
QUICK = DEFAULTS.with_(steps=64, size=128)
#: A layer page's first look, shown until the full picture is made (see :func:`preview_settings`): on
#: EfficientNet-Lite0 ``_blocks.9._project_conv`` a preview is nearer its own full picture than any other filter's
#: (in a middle layer's embedding) for 92% of 24 filters (``--quick``'s 64 steps at 128 px: 75%; 32 at 96: 50%), and
#: a page of 48 takes 17.5 s on 2 cores (``benchmarks/bench_previews.py``).
PREVIEW = DEFAULTS.with_(steps=48, size=144)
#: Filters per preview batch (the explorer's preview tasks): on 2 cores a page of 48 previews at 48 steps and 160 px
#: takes 16.7 s in batches of 24, 22.9 s in batches of 16.
PREVIEW_BATCH = 24


def preview_settings(settings: OptimSettings) -> OptimSettings | None:
    """The settings of the quick previews of pictures made with ``settings``: :data:`PREVIEW`'s steps and size (no
    larger than ``settings``'), everything else as ``settings``; ``None`` when a picture at ``settings`` costs less
    than twice a preview (steps x pixels): the pictures themselves come about as soon."""
    size = int(settings.size or 0)
    side = min(int(PREVIEW.size or size), size) if size else PREVIEW.size
    steps = min(PREVIEW.steps, settings.steps)
    if size and settings.steps * size**2 < 2 * steps * int(side or 0) ** 2:
        return None
    return settings.with_(steps=steps, size=side, batch_size=PREVIEW_BATCH)


#: Settings of a DeepDream (:func:`~kernelviz.dream`): from the photo, few steps, a small learning rate (the photo
#: stays recognizable).
DREAM = DEFAULTS.with_(steps=48, lr=0.02)
#: Settings of a feature accentuation (:func:`~kernelviz.accentuate`): from the photo, few steps (Hamblin et al.
#: take tens of steps).
ACCENTUATE = DEFAULTS.with_(steps=64, lr=0.02)
#: Weight of the proximity term of an accentuation (in units of the unit's own activation on the photo).
ACCENT_WEIGHT = 1.0
