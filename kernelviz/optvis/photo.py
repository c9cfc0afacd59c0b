"""Pictures seeded by a photo: what a layer keeps of it (caricature), what it sees in it made stronger
(DeepDream), and what in it drives one unit (feature accentuation, Hamblin et al. 2024).

Each is a :func:`~kernelviz.visualize` run with one of the photo objectives of
:mod:`~kernelviz.optvis.objectives` (:func:`~kernelviz.objectives.caricature`,
:func:`~kernelviz.objectives.deepdream`, :func:`~kernelviz.objectives.proximity`) and returns its
:class:`~kernelviz.optvis.render.VisResult`, so records, seeds and progress are those of filter pictures.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ..core.capture import activations
from ..core.layers import check_filters
from ..core.models import model_device, model_meta
from ..core.progress import OnProgress
from ..errors import KernelvizError
from .objectives import Objective, caricature, channel, deepdream, merge_needs, proximity
from .render import VisResult, filter_seed, visualize
from .settings import ACCENT_WEIGHT, ACCENTUATE, DEFAULTS, DREAM, OptimSettings

__all__ = [
    "ACCENTUATE",
    "ACCENT_WEIGHT",
    "DREAM",
    "accentuate",
    "caricature_of",
    "dream",
    "photo_activation",
]


def photo_activation(model: nn.Module, layer: str, photo: torch.Tensor) -> torch.Tensor:
    """``layer``'s activation for ``photo`` ``(3, H, W)`` in ``[0, 1]`` (normalized for the model): ``(C, h, w)``."""
    meta = model_meta(model)
    x = photo.to(model_device(model))[None]
    return activations(model, meta.normalize(x), [layer])[layer][0].float()


def _photo(photo: torch.Tensor) -> torch.Tensor:
    if photo.dim() != 3 or photo.shape[0] != 3 or not torch.isfinite(photo).all():
        raise KernelvizError(f"the photo must be a (3, H, W) image in [0, 1], got {tuple(photo.shape)}")
    return photo.clamp(0, 1)


def caricature_of(
    model: nn.Module,
    layer: str,
    photo: torch.Tensor,
    *,
    power: float = 1.0,
    settings: OptimSettings = DEFAULTS,
    progress: OnProgress | None = None,
) -> VisResult:
    """A picture whose activation at ``layer`` points the way of the photo's, from noise (Lucid's caricature).

    Args:
        photo: ``(3, H, W)`` in ``[0, 1]``; the picture has its size.
        power: the cosine's exponent of :func:`~kernelviz.objectives.caricature`.
        settings: the optimization settings (its ``size`` is ignored: the photo's).
    """
    _non_negative(power, "power", "--power")
    photo = _photo(photo)
    if photo.shape[-1] != photo.shape[-2]:
        raise KernelvizError("the photo must be square here: load it with a size (load_image(path, side))")
    target = photo_activation(model, layer, photo)
    kwargs = {**settings.visualize_kwargs(), "size": photo.shape[-1]}
    return visualize(model, caricature(layer, target, power), progress=progress, **kwargs)


def dream(
    model: nn.Module,
    layer: str,
    photo: torch.Tensor,
    *,
    settings: OptimSettings = DREAM,
    progress: OnProgress | None = None,
) -> VisResult:
    """The photo changed so that ``layer`` sees more of what it sees in it (DeepDream's activation energy), starting
    from the photo."""
    photo = _photo(photo)
    kwargs = {**settings.visualize_kwargs(), "size": photo.shape[-1]}
    return visualize(model, deepdream(layer), init=photo, progress=progress, **kwargs)


def accentuate(
    model: nn.Module,
    layer: str,
    filters: int | Sequence[int],
    photo: torch.Tensor,
    *,
    reg_layer: str | None = None,
    weight: float = ACCENT_WEIGHT,
    settings: OptimSettings = ACCENTUATE,
    progress: OnProgress | None = None,
) -> VisResult:
    """Feature accentuation: the photo changed so that filter(s) ``filters`` of ``layer`` respond more, while the
    activation at ``reg_layer`` stays close to the photo's (Hamblin et al. 2024: seeded start, a proximity term at a
    chosen layer, the Fourier parameterization).

    The objective of filter ``n`` is ``channel(layer, n) + weight * a_n * proximity(reg_layer, photo's)``, with
    ``a_n`` the filter's mean activation on the photo (at least 1% of its largest channel's), so that the weight
    reads the same for weak and strong units.

    Args:
        filters: one filter, or several (one picture each, as a batch).
        photo: ``(3, H, W)`` in ``[0, 1]``, the start and the anchor.
        reg_layer: where the picture is kept near the photo; default ``layer`` itself.
        weight: the proximity term's weight; 0 is plain feature visualization from the photo.

    Returns:
        A :class:`~kernelviz.optvis.render.VisResult`; ``extra`` holds ``reg_layer``, ``weight`` and each
        filter's activation on the photo.
    """
    _non_negative(weight, "weight", "--weight")
    photo = _photo(photo)
    ns = [filters] if isinstance(filters, int) else list(filters)
    check_filters(model, layer, ns, photo.shape[-1])
    reg = reg_layer or layer
    at_layer = photo_activation(model, layer, photo)  # (C, h, w)
    on_photo = at_layer.flatten(1).mean(1)  # (C,)
    floor = 0.01 * float(on_photo.abs().max()) or 1.0
    scales = [max(abs(float(on_photo[n])), floor) for n in ns]
    near = proximity(reg, at_layer if reg == layer else photo_activation(model, reg, photo))
    unit = channel(layer, ns if len(ns) > 1 else ns[0])
    k = weight * torch.tensor(scales, device=model_device(model))  # (B,): each filter's proximity weight

    def score(acts: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return unit(acts) + k * near(acts)

    needs = merge_needs(unit.needs, near.needs)
    objective = Objective(score, f"accentuate({layer}:{ns}, {weight:g} x proximity({reg}))", needs)
    kwargs = {**settings.visualize_kwargs(), "size": photo.shape[-1]}
    result = visualize(
        model,
        objective,
        batch=len(ns),
        init=photo,
        image_seeds=[filter_seed(settings.seed, n) for n in ns],
        progress=progress,
        **kwargs,
    )
    result.extra.update(reg_layer=reg, weight=weight, photo_activation=[float(on_photo[n]) for n in ns], filters=ns)
    return result


def _non_negative(value: float, name: str, option: str) -> None:
    """Refuse a setting that must be a finite number >= 0 (a negative power or weight turns the objective around, a
    NaN makes every step NaN)."""
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
        raise KernelvizError(f"{name} must be a finite number >= 0 ({option}), got {value!r}")
