"""Which map to believe: faithfulness scores and the model-randomization sanity check.

* Deletion and insertion (Petsiuk et al., 2018): the image's pixels are replaced by a baseline (default: the
  image blurred) in the order the map ranks them, most important first, in ``steps`` equal parts; the
  target's score (its softmax probability, or a filter's mean activation relative to its value on the image)
  is read after each part. Deletion's area under the curve should be *low* (the score falls at once when
  the important pixels go); insertion's, fading the image back in over the baseline, *high*. Both are
  compared with the same curves for a random map (:func:`reference_map`), which a method must beat to
  mean anything.
* ROAD (Rong et al., 2022): removing pixels by painting in a blur or a color leaks the *shape* of the mask,
  which the network can read. ROAD removes them by imputation instead (here: the harmonic fill of the kept
  pixels, which is what its noisy linear imputation solves, plus a little noise), most relevant first
  (MoRF, lower is better) and least relevant first (LeRF, higher is better).
* Cascading randomization (Adebayo et al., 2018): the weights of the network's layers are re-initialized
  from the top (logits) down, on a copy of the model, and the map is computed again; the Spearman rank
  correlation of ``|map|`` with the original says how much the map depends on what the network learned. A
  map that barely changes when every layer is random explains the image, not the model, and is flagged.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..core.guard import guarded
from ..core.layers import list_layers
from ..core.models import model_device, model_meta
from ..errors import KernelvizError, unknown_choice
from .baselines import baseline_image, describe_baseline
from .heatmaps import Attribution, attribute
from .methods import ScoredModel

__all__ = [
    "INSENSITIVE",
    "REFERENCE_MAPS",
    "Faithfulness",
    "Sanity",
    "faithfulness",
    "reference_map",
    "sanity_check",
]

#: Maps every method is compared with: a random map (the floor) and a centred blob (photographers centre).
REFERENCE_MAPS = ("random", "blob")
#: The random map is drawn on a grid of this fraction of the image side, then upsampled: random *pixels*
#: would scatter the deleted pixels as noise, which hurts a classifier more than removing any region (an
#: artifact of the test, not knowledge), so the floor is random regions the size of a CAM's cells.
RANDOM_CELL = 1 / 32
#: Rank correlation with the original map, the top half of the layers randomized, at or above which a
#: method is flagged: its map survives the loss of half of what the network learned.
INSENSITIVE = 0.5


def reference_map(shape: Sequence[int], kind: str, seed: int = 0) -> torch.Tensor:
    """A map that knows nothing of the model, ``(B, H, W)``: ``"random"`` (uniform on a grid of cells
    :data:`RANDOM_CELL` of the side, upsampled bilinearly; seeded) or ``"blob"`` (a Gaussian centred on the
    image, sigma = 1/4 of its side)."""
    b, h, w = shape
    if kind == "random":
        cells = (max(2, round(h * RANDOM_CELL)), max(2, round(w * RANDOM_CELL)))
        grid = torch.rand(b, 1, *cells, generator=torch.Generator().manual_seed(seed))
        return F.interpolate(grid, size=(h, w), mode="bilinear", align_corners=False)[:, 0]
    if kind == "blob":
        ys = torch.arange(h, dtype=torch.float32)[:, None] - (h - 1) / 2
        xs = torch.arange(w, dtype=torch.float32)[None, :] - (w - 1) / 2
        sigma = max(h, w) / 4
        return torch.exp(-(ys**2 + xs**2) / (2 * sigma**2)).expand(b, h, w).clone()
    raise unknown_choice("reference map", kind, REFERENCE_MAPS)


@dataclass
class Faithfulness:
    """Deletion and insertion of each image's map.

    Attributes:
        deletion, insertion: ``(B,)`` areas under the curves (fraction of pixels 0..1 on x).
        road_morf, road_lerf: ``(B,)`` ROAD areas, most / least relevant removed first (``None`` without ROAD).
        curves: ``{"deletion": (B, steps + 1), "insertion": ..., "road_morf": ..., "road_lerf": ...}``.
        score: what was read (``"softmax probability"`` or the filter's relative activation).
        settings: steps and baseline.
    """

    deletion: torch.Tensor
    insertion: torch.Tensor
    curves: dict[str, torch.Tensor]
    score: str
    settings: dict[str, Any] = field(default_factory=dict)
    road_morf: torch.Tensor | None = None
    road_lerf: torch.Tensor | None = None

    def record(self, index: int) -> dict[str, Any]:
        """JSON-ready scores of image ``index``."""
        out = {
            "deletion_auc": round(float(self.deletion[index]), 4),
            "insertion_auc": round(float(self.insertion[index]), 4),
        }
        if self.road_morf is not None and self.road_lerf is not None:
            out.update(
                road_morf_auc=round(float(self.road_morf[index]), 4),
                road_lerf_auc=round(float(self.road_lerf[index]), 4),
            )
        return {**out, "score": self.score, **self.settings}


def _impute(
    image: torch.Tensor, removed: torch.Tensor, generator: torch.Generator, iterations: int = 20
) -> torch.Tensor:
    """``image`` ``(3, H, W)`` with the ``removed`` pixels ``(S, 1, H, W)`` filled from the kept ones.

    The fill starts from a pyramid of the kept pixels' local means (coarse levels fill large holes, finer
    ones take over where enough pixels are kept) and relaxes towards the harmonic solution (each removed
    pixel the weighted mean of its 8 neighbours, 1/6 for the sides and 1/12 for the corners, the weights of
    ROAD's imputation); noise of std 0.01 keeps the fill from being perfectly smooth. Returns ``(S, 3, H, W)``.
    """
    h, w = image.shape[-2:]
    kept = (~removed).to(image.dtype)  # (S, 1, H, W)
    x = image[None] * kept  # (S, 3, H, W)
    total = kept.sum((2, 3), keepdim=True).clamp(min=1)
    fill = (x.sum((2, 3), keepdim=True) / total).expand_as(x)  # the kept pixels' mean color
    for factor in (32, 16, 8, 4, 2):
        if min(h, w) < 2 * factor:
            continue
        # numerator and weight upsampled apart, then divided: a normalized convolution, holes never averaged in
        both = F.interpolate(
            F.avg_pool2d(torch.cat([x, kept], 1), factor, ceil_mode=True), size=(h, w), mode="bilinear"
        )
        weight = both[:, 3:]
        fill = torch.where(weight > 0.05, both[:, :3] / weight.clamp(min=1e-6), fill)
    x = torch.where(removed, fill, x)
    for _ in range(iterations):
        p = F.pad(x, (1, 1, 1, 1), mode="replicate")
        sides = p[..., :-2, 1:-1] + p[..., 2:, 1:-1] + p[..., 1:-1, :-2] + p[..., 1:-1, 2:]
        corners = p[..., :-2, :-2] + p[..., :-2, 2:] + p[..., 2:, :-2] + p[..., 2:, 2:]
        x = torch.where(removed, sides / 6 + corners / 12, x)
    noise = 0.01 * torch.randn(x.shape, generator=generator).to(x)
    return torch.where(removed, (x + noise).clamp(0, 1), x)


def _scorer(
    model: nn.Module, targets: list[int] | None, filter: str | None
) -> tuple[Callable[[torch.Tensor, int], torch.Tensor], str]:
    """``(images (n, 3, H, W), image index) -> (n,)`` scores for that image's target, and their name."""
    meta = model_meta(model)
    if filter is not None:
        name, _, idx = filter.rpartition(":")
        scored = ScoredModel(model, meta, name, int(idx))
        return (lambda x, i: scored(x)), "filter mean activation / its value on the image"
    if targets is None:
        raise KernelvizError("faithfulness needs the attribution's targets (a class per image) or its filter")
    scored = ScoredModel(model, meta, None, 0)
    return (lambda x, i: scored(x).float().softmax(1)[:, targets[i]]), "softmax probability of the target"


def faithfulness(
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    *,
    targets: list[int] | None = None,
    filter: str | None = None,
    steps: int = 20,
    baseline: str = "blur",
    seed: int = 0,
    road: bool = True,
) -> Faithfulness:
    """Deletion and insertion curves (and ROAD's) of ``maps`` for the model's ``targets`` (or ``filter``).

    Args:
        images: ``(B, 3, H, W)`` in ``[0, 1]``.
        maps: ``(B, H, W)``; higher = more important (a signed map's negative pixels come last).
        targets: the class of each image (an :class:`Attribution`'s ``targets``).
        filter: ``"layer:index"`` instead of classes.
        steps: parts the pixels are removed or added in (``steps + 1`` forward passes per image and curve).
        baseline: what removed pixels become (:data:`kernelviz.explain.baselines.BASELINES`).
        seed: breaks ties in the ranking (a flat map ranks at random), seeds ROAD's noise.
        road: also the ROAD curves (removal by imputation; ``2 * (steps + 1)`` more forward passes).

    Returns:
        :class:`Faithfulness` with ``(B,)`` areas.
    """
    if steps < 1:
        raise KernelvizError(f"steps must be at least 1, got {steps}")
    if maps.shape[0] != images.shape[0] or maps.shape[-2:] != images.shape[-2:]:
        raise KernelvizError(f"maps {tuple(maps.shape)} do not match images {tuple(images.shape)}")
    meta = model_meta(model)
    device = model_device(model)
    x = images.to(device, torch.float32)
    base = baseline_image(x, baseline, meta.mean)
    b, _, h, w = x.shape
    n = h * w
    generator = torch.Generator().manual_seed(seed)
    counts = torch.round(torch.linspace(0, 1, steps + 1) * n).long()  # pixels changed after each part
    kinds = ("deletion", "insertion", "road_morf", "road_lerf") if road else ("deletion", "insertion")
    curves = {k: torch.empty(b, steps + 1) for k in kinds}
    score, what = _scorer(model, targets, filter)
    with guarded(model), torch.no_grad():
        reference = score(x, 0) if filter is not None else None  # (B,) the filter's value on each image
        for i in range(b):
            flat = maps[i].flatten().float().cpu()
            span = float(flat.max() - flat.min()) or 1.0
            jitter = torch.rand(n, generator=generator) * span * 1e-6
            order = torch.argsort(flat + jitter, descending=True)
            rank = torch.empty(n, dtype=torch.long)
            rank[order] = torch.arange(n)
            changed = (rank[None] < counts[:, None]).view(steps + 1, 1, h, w).to(device)  # (steps + 1, 1, H, W)
            made = {
                "deletion": torch.where(changed, base[i], x[i]),
                "insertion": torch.where(changed, x[i], base[i]),
            }
            if road:
                last = (rank[None] >= n - counts[:, None]).view(steps + 1, 1, h, w).to(device)  # least relevant
                made["road_morf"] = _impute(x[i], changed, generator)
                made["road_lerf"] = _impute(x[i], last, generator)
            for name, batch in made.items():
                seen = score(batch, i).float().cpu()
                if reference is not None:
                    seen = seen / reference[i].float().cpu().abs().clamp(min=1e-12)
                curves[name][i] = seen
    area = {k: torch.trapezoid(v, dx=1 / steps, dim=1) for k, v in curves.items()}
    settings = {"steps": steps, "baseline": describe_baseline(baseline)}
    if road:
        settings["road"] = "removal by harmonic imputation from the kept pixels, noise std 0.01"
    return Faithfulness(
        area["deletion"], area["insertion"], curves, what, settings, area.get("road_morf"), area.get("road_lerf")
    )


@dataclass
class Sanity:
    """How a method's map changes as the network's weights are randomized, top layer first.

    Attributes:
        layers: the layers randomized, top first.
        correlations: ``[(layers randomized, (B,) Spearman correlations of |map| with the original)]``.
        flagged: ``(B,)`` true where the map with the top half of the layers random (the first measured
            depth at or past half) still correlates at :data:`INSENSITIVE` or more.
        half: the depth ``flagged`` is read at.
    """

    layers: list[str]
    correlations: list[tuple[int, torch.Tensor]]
    flagged: torch.Tensor
    half: int

    def record(self, index: int) -> dict[str, Any]:
        """JSON-ready result for image ``index``."""
        return {
            "test": "cascading randomization (Adebayo et al., 2018), Spearman correlation of |map|",
            "steps": [
                {
                    "layers_randomized": k,
                    "top_layer": self.layers[0],
                    "down_to": self.layers[k - 1],
                    "rank_corr": round(float(c[index]), 4),
                }
                for k, c in self.correlations
            ],
            "insensitive": bool(self.flagged[index]),
            "rule": f"flagged when the rank correlation with {self.half} of {len(self.layers)} layers random is "
            f">= {INSENSITIVE}",
        }


def _ranks(values: torch.Tensor) -> torch.Tensor:
    """``(B, N)`` → ranks along N (ties broken by position)."""
    ranks = torch.empty_like(values)
    order = values.argsort(1)
    ranks.scatter_(1, order, torch.arange(values.shape[1], dtype=values.dtype).expand_as(values).contiguous())
    return ranks


def _spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Rank correlation of ``|a|`` and ``|b|``, ``(B, H, W)`` each → ``(B,)``; 0 where a map is flat."""
    ra, rb = _ranks(a.flatten(1).abs().double()), _ranks(b.flatten(1).abs().double())
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    corr = (ra * rb).sum(1) / (ra.norm(dim=1) * rb.norm(dim=1)).clamp(min=1e-12)
    flat = (a.flatten(1).abs().amax(1) == a.flatten(1).abs().amin(1)) | (
        b.flatten(1).abs().amax(1) == b.flatten(1).abs().amin(1)
    )
    return torch.where(flat, torch.zeros_like(corr), corr).float()


def _weighted_layers(model: nn.Module) -> dict[str, str]:
    """``{path: name}`` of the layers with weights (conv, linear), in the order they run."""
    seen: dict[str, str] = {}
    for row in list_layers(model):
        if row.trainable and (row.type.startswith("Conv") or row.type == "Linear"):
            seen.setdefault(row.path, row.name)
    return seen


def sanity_check(
    model: nn.Module,
    images: torch.Tensor,
    result: Attribution,
    *,
    points: int = 4,
    seed: int = 0,
    **options: Any,
) -> Sanity:
    """Cascading model-parameter randomization of ``result``'s method, on a copy of ``model``.

    Args:
        images: the ``(B, 3, H, W)`` images ``result`` explains.
        result: the original maps (its method, layer, targets or filter are reused).
        points: how many depths to measure at: the top layer alone, then evenly down to every layer.
        options: further :func:`~kernelviz.explain.heatmaps.attribute` arguments (baseline, window...) as
            the original was computed with (integrated gradients keeps its number of steps).

    Returns:
        :class:`Sanity`; the user's model is not touched (the copy is randomized).
    """
    named = _weighted_layers(model)
    layers = list(named)[::-1]  # top first
    if not layers:
        raise KernelvizError("the model has no conv or linear layer to randomize")
    depths = sorted({max(1, round(len(layers) * k / max(1, points - 1))) for k in range(points)} | {1, len(layers)})
    twin = copy.deepcopy(model)
    modules = dict(twin.named_modules())
    target = None if result.targets is None else list(result.targets)
    if result.method == "integrated_gradients":  # the steps of the original: a random network must not take more
        options.setdefault("ig_steps", result.settings.get("steps"))
    correlations = []
    done = 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for depth in depths:
            for path in layers[done:depth]:
                module = modules[path]
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
            done = depth
            maps = attribute(
                twin, images, result.method, target=target, filter=result.filter, layer=result.layer, **options
            ).maps
            correlations.append((depth, _spearman(result.maps, maps)))
    half, corr = next((d, c) for d, c in correlations if 2 * d >= len(layers))
    return Sanity([named[p] for p in layers], correlations, corr >= INSENSITIVE, half)
