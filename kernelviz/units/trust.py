"""Can a unit's picture be trusted? Whether it travels through the network like the unit's natural examples.

Geirhos et al. (ICML 2024, "Don't trust your eyes: on the (un)reliability of feature visualizations") build
networks whose pictures show arbitrary patterns while their behaviour on natural images is all but unchanged, and
propose a sanity check: a faithful picture is processed along the same path as the natural images that excite the
unit, so its activations in the layers below resemble theirs.

:func:`path_similarity` measures that per layer below the unit: the Spearman rank correlation between the layer's
channel vector for the picture and for each of the unit's top natural examples, against two references from the
same run: the examples among themselves (what a faithful picture could reach) and random natural images against
the examples (what an unrelated image reaches).

Not calibrated yet: on EfficientNet-Lite0 with a collection cut from the bundled photos it does not tell default
pictures from random images, and a toy fooling circuit is caught at some seeds only (``benchmarks/README.md``);
no command flags pictures with it. Each image's channel vector is read where the unit responds most
to that image (its strongest position, mapped onto the lower layer's grid), and every channel is standardized by
its mean and spread over the random images first (else the channels that are large in every image would make any
two images alike).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from ..core.capture import activations
from ..core.guard import check_model
from ..core.layers import default_units, list_layers
from ..core.models import model_device, model_meta
from ..errors import KernelvizError, out_of_range

__all__ = ["FLAG_BELOW", "MIN_SPAN", "Trust", "layers_below", "path_similarity"]

#: A picture is flagged when its overall score (the layers below its unit together) falls below this fraction of
#: the way from the random reference to the natural one (0: as unrelated as a random image; 1: as close as the natural
#: examples are to each other).
FLAG_BELOW = 0.25
#: A layer where the natural examples are no closer to each other than to random images (by less than this rank
#: correlation) cannot tell a faithful picture from an unrelated one: it gets no score.
MIN_SPAN = 0.05


@dataclass(frozen=True)
class Trust:
    """The path similarity of one unit's picture (:func:`path_similarity`); every list has one value per layer.

    Attributes:
        layer: the unit's layer; ``filter``: its channel.
        layers: the layers below it that were compared, input side first.
        picture: mean rank correlation of the picture with each top example.
        natural: mean rank correlation of the top examples among themselves.
        random: mean rank correlation of the random images with the top examples.
        score: ``(picture - random) / (natural - random)`` per layer (0: like a random image, 1: like a natural
            example); ``nan`` where the references differ by less than :data:`MIN_SPAN`.
        overall: the score of all the layers together, ``sum(picture - random) / sum(natural - random)`` (each
            layer weighed by how well it tells natural examples from random images); ``nan`` when that total span
            is below :data:`MIN_SPAN`.
        flagged: ``overall`` is below ``threshold``.
        threshold: the score below which a layer counts against the picture (:data:`FLAG_BELOW`).
    """

    layer: str
    filter: int
    layers: list[str]
    picture: list[float]
    natural: list[float]
    random: list[float]
    score: list[float]
    overall: float
    flagged: bool
    threshold: float

    @property
    def worst(self) -> str | None:
        """The layer with the lowest score (``None`` when no score could be computed)."""
        scored = [(s, name) for s, name in zip(self.score, self.layers, strict=True) if not math.isnan(s)]
        return min(scored)[1] if scored else None

    def message(self) -> str:
        """One line for the terminal."""
        if not self.flagged:
            return f"filter {self.filter}'s picture is processed like its natural examples (score {self._low})"
        return (
            f"filter {self.filter}'s picture is processed unlike its natural examples below layer {self.worst} "
            f"(score {self._low}: 0 = a random image, 1 = a natural example): read its dataset examples"
        )

    @property
    def _low(self) -> str:
        return "n/a" if math.isnan(self.overall) else f"{self.overall:.2f}"

    def to_json(self) -> dict[str, Any]:
        """The record's ``"trust"`` entry (``nan`` as ``None``)."""
        data = asdict(self)
        for key in ("picture", "natural", "random", "score"):
            data[key] = [None if math.isnan(v) else round(v, 4) for v in data[key]]
        data["overall"] = None if math.isnan(self.overall) else round(self.overall, 4)
        data["worst"] = self.worst
        return data


def layers_below(model: nn.Module, layer: str, count: int = 4, size: int | None = None) -> list[str]:
    """Up to ``count`` unit layers before ``layer`` (in the order the model runs them), spread from the first to
    the last one before it, input side first: convolutions, or a transformer's MLP activations
    (:func:`~kernelviz.core.layers.default_units`)."""
    size = size or model_meta(model).input_size
    rows = list_layers(model, size)
    names = [r.name for r in rows]
    if layer not in names:
        raise KernelvizError(f"layer {layer!r} is not in the layer table: run `kernelviz layers MODEL --all`")
    earlier = rows[: names.index(layer)]
    before = [r.name for r in default_units(model, earlier) if len(r.shape) == 3]
    if len(before) <= count:
        return before
    return [before[round(i * (len(before) - 1) / (count - 1))] for i in range(count)]


def _ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks along the last dimension (ties broken by order: channel vectors rarely tie), centred and scaled so
    that the dot product of two rows is their Spearman correlation."""
    r = x.argsort(-1).argsort(-1).float()
    r = r - r.mean(-1, keepdim=True)
    return r / r.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def _vectors(
    model: nn.Module, images: torch.Tensor, layer: str, n: int, below: Sequence[str]
) -> dict[str, torch.Tensor]:
    """Per layer of ``below``, each image's channel vector ``(B, C_l)`` where unit ``n`` of ``layer`` is strongest
    in that image (the position mapped by relative coordinates, a 3x3 mean around it)."""
    meta = model_meta(model)
    x = meta.normalize(images.to(model_device(model)))
    acts = activations(model, x, [*below, layer])
    if acts[layer].dim() != 4:
        raise KernelvizError(f"layer {layer!r} has no spatial map: the path check needs one")
    if not 0 <= n < acts[layer].shape[1]:
        raise out_of_range("filter", n, acts[layer].shape[1], f"layer {layer!r}")
    unit = acts[layer][:, n]  # (B, h, w)
    h, w = unit.shape[-2:]
    best = unit.flatten(1).argmax(1)
    rows, cols = (best // w).float() + 0.5, (best % w).float() + 0.5
    out = {}
    for name in below:
        a = acts[name].float()
        if a.dim() != 4:
            raise KernelvizError(f"layer {name!r} has no spatial map: the path check compares channel maps")
        pooled = nn.functional.avg_pool2d(a, 3, stride=1, padding=1, count_include_pad=False)
        hl, wl = a.shape[-2:]
        r = (rows / h * hl).long().clamp(0, hl - 1)
        c = (cols / w * wl).long().clamp(0, wl - 1)
        out[name] = pooled[torch.arange(len(a)), :, r, c].cpu()  # (B, C_l)
    return out


def path_similarity(
    model: nn.Module,
    layer: str,
    n: int,
    picture: torch.Tensor,
    examples: torch.Tensor,
    randoms: torch.Tensor,
    *,
    below: Sequence[str] | None = None,
    threshold: float = FLAG_BELOW,
) -> Trust:
    """Whether unit ``n`` of ``layer``'s picture is processed like its natural examples.

    Args:
        model: the network (left unchanged).
        picture: ``(3, S, S)`` in [0, 1]: the unit's picture.
        examples: ``(K, 3, H, W)`` in [0, 1], K >= 2: the natural images that excite the unit most (a scan's top
            examples, whole images at the model's input size).
        randoms: ``(M, 3, H, W)`` in [0, 1], M >= 4: random natural images of the same collection; every other one
            standardizes the channels, the rest are the random reference.
        below: the layers compared (default: :func:`layers_below`).
        threshold: see :attr:`Trust.threshold`.

    Returns:
        A :class:`Trust`.
    """
    check_model(model)
    if examples.dim() != 4 or len(examples) < 2 or randoms.dim() != 4 or len(randoms) < 4:
        raise KernelvizError("the path check needs at least 2 natural examples and 4 random images, each (N, 3, H, W)")
    below = list(below) if below is not None else layers_below(model, layer)
    if not below:
        raise KernelvizError(f"layer {layer!r} has no convolution before it: nothing to compare along the path")
    ex = _vectors(model, examples, layer, n, below)  # checks n too
    pic = _vectors(model, picture[None], layer, n, below)
    everyone = _vectors(model, randoms, layer, n, below)
    # half of the random images standardize the channels, the other half is the random reference
    norm = {name: v[0::2] for name, v in everyone.items()}
    rnd = {name: v[1::2] for name, v in everyone.items()}
    k = len(examples)
    off = ~torch.eye(k, dtype=torch.bool)
    scores: dict[str, list[float]] = {"picture": [], "natural": [], "random": [], "score": []}
    for name in below:
        mean, std = norm[name].mean(0), norm[name].std(0).clamp_min(1e-6)

        def ranked(v: torch.Tensor, mean: torch.Tensor = mean, std: torch.Tensor = std) -> torch.Tensor:
            return _ranks((v - mean) / std)

        e = ranked(ex[name])
        p = float((ranked(pic[name]) @ e.T).mean())
        nat = float((e @ e.T)[off].mean())
        ran = float((ranked(rnd[name]) @ e.T).mean())
        span = nat - ran
        scores["picture"].append(p)
        scores["natural"].append(nat)
        scores["random"].append(ran)
        scores["score"].append((p - ran) / span if span >= MIN_SPAN else float("nan"))
    gain = sum(p - r for p, r in zip(scores["picture"], scores["random"], strict=True))
    span = sum(nat - r for nat, r in zip(scores["natural"], scores["random"], strict=True))
    overall = gain / span if span >= MIN_SPAN else float("nan")  # layers weighed by how well they tell apart
    flagged = not math.isnan(overall) and overall < threshold
    return Trust(layer=layer, filter=n, layers=below, overall=overall, flagged=flagged, threshold=threshold, **scores)
