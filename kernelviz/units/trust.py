"""Can a unit's picture be trusted? Whether it travels through the network like the unit's natural examples.

Geirhos et al. (ICML 2024, "Don't trust your eyes: on the (un)reliability of feature visualizations") build
networks whose pictures show arbitrary patterns while their behaviour on natural images is all but unchanged, and
propose a sanity check: a faithful picture is processed along the same path as the natural images that excite the
unit, so its activations in the layers below resemble theirs.

Per layer below the unit, the check takes each image's channel vector where the unit responds most to that image
(its strongest position mapped onto the lower layer's grid, a 3x3 mean around it), every channel standardized by
its mean and spread over half of some random natural images (else the channels that are large in every image
would make any two images alike), and compares vectors by Spearman rank correlation: the picture against each of
the unit's top natural examples, against two references from the same run: the examples among themselves (what a
faithful picture could reach) and the other half of the random images against the examples (what an unrelated
image reaches). The overall score is ``sum(picture - random) / sum(natural - random)`` over the layers below
(0: like a random image, 1: like a natural example).

**Calibration** (:class:`PathCheck`): a score means nothing until one knows how low natural images score. So each
of a unit's natural examples is scored as if it were the picture, against the unit's other examples (leave-one-out
natural controls), over many units of the layer; the threshold is set so that at most :data:`RATE` of those
controls fall below it, and the rate actually reached is measured on natural images the calibration did not use
(the top examples of another half of the collection, scored exactly as a picture is). How well the check tells
natural images from random ones at all is the AUROC of the natural controls' scores against the random images'
(each random image scored as a picture): below :data:`MIN_AUROC` the check says it is weak there (its flags keep
their false-positive rate but catch little).

Measured (``benchmarks/bench_trust.py``, EfficientNet-Lite0 on 800 ImageNet photos): the calibrated threshold flags
2-8% of held-out natural images, but one photo's path tells natural from random images only weakly (AUROC 0.55-0.74,
best at the deepest layers), and on the tests' toy fooling circuit the fooled picture is flagged at some seeds
only (its untouched neighbour's picture is flagged at others): a flag is evidence to read the unit's examples,
its absence no proof of a faithful picture.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..core.capture import activations
from ..core.guard import check_model
from ..core.layers import default_units, list_layers
from ..core.models import model_device, model_meta
from ..errors import KernelvizError, out_of_range

if TYPE_CHECKING:
    from ..core.progress import OnProgress
    from ..data.collection import ImagesArg
    from .scan import UnitScan

__all__ = [
    "FLAG_BELOW",
    "MIN_AUROC",
    "MIN_IMAGES",
    "MIN_SPAN",
    "RATE",
    "Calibration",
    "PathCheck",
    "Trust",
    "collection_check",
    "halves",
    "layers_below",
    "path_similarity",
    "unit_examples",
]

#: The threshold of an uncalibrated check (:func:`path_similarity` without a :class:`PathCheck`): a quarter of the
#: way from the random reference to the natural one.
FLAG_BELOW = 0.25
#: A layer where the natural examples are no closer to each other than to random images (by less than this rank
#: correlation) cannot tell a faithful picture from an unrelated one: it gets no score.
MIN_SPAN = 0.05
#: The share of natural controls a calibrated threshold may flag (its false-positive rate on natural images).
RATE = 0.05
#: Below this AUROC (natural controls' scores against random images', 0.5: chance) a layer's check tells natural
#: images from random ones too poorly to say much: its flags keep their false-positive rate but catch little, the
#: terminal line says so, and the specificity is not scored there.
MIN_AUROC = 0.7
#: The fewest readable images :func:`collection_check` calibrates on at its defaults (8 examples and 16 random
#: images in each half).
MIN_IMAGES = 32


@dataclass(frozen=True)
class Calibration:
    """How a :class:`PathCheck`'s threshold was set and how it does on natural images.

    Attributes:
        threshold: an overall score below this is flagged.
        rate: the share of natural controls the threshold may flag (:data:`RATE`).
        controls: leave-one-out natural controls the threshold was set on (units without a span excluded).
        flagged: the share of those flagged.
        held_out: natural images of other images scored as pictures (``0``: none given).
        held_out_flagged: the share of those flagged (``None`` without any): the false-positive rate to quote.
        auroc: natural controls against random images taken as pictures (1: always told apart, 0.5: chance;
            ``nan`` without scored units).
        units: the units whose examples calibrated it.
    """

    threshold: float
    rate: float
    controls: int
    flagged: float
    held_out: int
    held_out_flagged: float | None
    auroc: float
    units: int

    @property
    def tells_apart(self) -> bool:
        """Whether the check tells natural images from random ones well (:data:`MIN_AUROC`)."""
        return not math.isnan(self.auroc) and self.auroc >= MIN_AUROC

    @property
    def false_positive_rate(self) -> float:
        """The share of natural images flagged: on held-out images when there were any, else on the controls."""
        return self.flagged if self.held_out_flagged is None else self.held_out_flagged

    def to_json(self) -> dict[str, Any]:
        """Plain numbers (``nan`` as ``None``)."""
        data: dict[str, Any] = {k: _num(v) for k, v in asdict(self).items()}
        data["tells_apart"] = self.tells_apart
        return data


def _num(v: Any) -> Any:
    if isinstance(v, float):
        return None if math.isnan(v) else round(v, 4)
    return v


@dataclass(frozen=True)
class Trust:
    """The path similarity of one unit's picture (:meth:`PathCheck.check`); every list has one value per layer.

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
        threshold: the overall score below which a picture is flagged.
        calibration: how the threshold was set (``None``: the uncalibrated :data:`FLAG_BELOW`).
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
    calibration: Calibration | None = None

    @property
    def worst(self) -> str | None:
        """The layer with the lowest score (``None`` when no score could be computed)."""
        scored = [(s, name) for s, name in zip(self.score, self.layers, strict=True) if not math.isnan(s)]
        return min(scored)[1] if scored else None

    @property
    def scored(self) -> bool:
        """Whether the picture could be judged (its examples are closer to each other than to random images)."""
        return not math.isnan(self.overall)

    def message(self) -> str:
        """One line for the terminal."""
        cal = self.calibration
        if not self.scored:
            why = "its natural examples are no closer to each other than to random images"
            return f"filter {self.filter}'s picture cannot be path-checked: {why}"
        rate = (
            "" if cal is None else f"; {cal.false_positive_rate:.0%} of natural images score below {self.threshold:.2f}"
        )
        weak = "" if cal is None or cal.tells_apart else f"; a weak check here: AUROC {cal.auroc:.2f}"
        if not self.flagged:
            score = f"score {self.overall:.2f}: 0 = a random image, 1 = a natural example"
            return f"filter {self.filter}'s picture is not flagged by the path check ({score}{rate}{weak})"
        return (
            f"filter {self.filter}'s picture is processed unlike its natural examples, worst at {self.worst} "
            f"(score {self.overall:.2f}: 0 = a random image, 1 = a natural example{rate}{weak}): read its dataset "
            "examples"
        )

    def to_json(self) -> dict[str, Any]:
        """The record's ``"trust"`` entry (``nan`` as ``None``)."""
        data = asdict(self)
        for key in ("picture", "natural", "random", "score"):
            data[key] = [_num(v) for v in data[key]]
        data["overall"] = _num(self.overall)
        data["threshold"] = _num(self.threshold)
        data["worst"] = self.worst
        data["scored"] = self.scored
        data["calibration"] = None if self.calibration is None else self.calibration.to_json()
        return data


def layers_below(model: nn.Module, layer: str, count: int = 4, size: int | None = None) -> list[str]:
    """The ``count`` unit layers just before ``layer`` (in the order the model runs them), input side first:
    convolutions, or a transformer's MLP activations (:func:`~kernelviz.core.layers.default_units`).

    The nearest layers, not a spread from the input: on EfficientNet-Lite0 and 800 ImageNet photos each layer
    tells a unit's natural examples from random photos the better the nearer it is to the unit (AUROC 0.44-0.57
    at the stem, 0.70-0.78 just below ``_swish#2``), and averaging in the first layers only adds noise
    (``benchmarks/README.md``)."""
    size = size or model_meta(model).input_size
    rows = list_layers(model, size)
    names = [r.name for r in rows]
    if layer not in names:
        raise KernelvizError(f"layer {layer!r} is not in the layer table: run `kernelviz layers MODEL --all`")
    earlier = rows[: names.index(layer)]
    before = [r.name for r in default_units(model, earlier) if len(r.shape) == 3]
    return before[-count:] if count > 0 else []


def _ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks along the last dimension (ties broken by order: channel vectors rarely tie), centred and scaled so
    that the dot product of two rows is their Spearman correlation."""
    r = x.argsort(-1).argsort(-1).float()
    r = r - r.mean(-1, keepdim=True)
    return r / r.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def _capture(model: nn.Module, images: torch.Tensor, layer: str, below: Sequence[str], batch: int = 32) -> dict:
    """The activations of ``below`` and ``layer`` for ``images`` ``(B, 3, H, W)`` in [0, 1], on the CPU."""
    meta = model_meta(model)
    device = model_device(model)
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in [*below, layer]}
    for start in range(0, len(images), batch):
        acts = activations(model, meta.normalize(images[start : start + batch].to(device)), [*below, layer])
        for name in parts:
            parts[name].append(acts[name].float().cpu())
    out = {name: torch.cat(p) for name, p in parts.items()}
    if out[layer].dim() != 4:
        raise KernelvizError(f"layer {layer!r} has no spatial map: the path check needs one")
    for name in below:
        if out[name].dim() != 4:
            raise KernelvizError(f"layer {name!r} has no spatial map: the path check compares channel maps")
    return out


def _read(acts: Mapping[str, torch.Tensor], layer: str, n: int, below: Sequence[str]) -> dict[str, torch.Tensor]:
    """Per layer of ``below``, each image's channel vector ``(B, C_l)`` where unit ``n`` of ``layer`` is strongest
    in that image (the position mapped by relative coordinates, a 3x3 mean around it)."""
    if not 0 <= n < acts[layer].shape[1]:
        raise out_of_range("filter", n, acts[layer].shape[1], f"layer {layer!r}")
    unit = acts[layer][:, n]  # (B, h, w)
    h, w = unit.shape[-2:]
    best = unit.flatten(1).argmax(1)
    rows, cols = (best // w).float() + 0.5, (best % w).float() + 0.5
    out = {}
    for name in below:
        a = acts[name]
        pooled = nn.functional.avg_pool2d(a, 3, stride=1, padding=1, count_include_pad=False)
        hl, wl = a.shape[-2:]
        r = (rows / h * hl).long().clamp(0, hl - 1)
        c = (cols / w * wl).long().clamp(0, wl - 1)
        out[name] = pooled[torch.arange(len(a)), :, r, c]  # (B, C_l)
    return out


@dataclass
class _Reference:
    """One unit's references per layer below: how to rank a vector (mean, std), the ranked examples ``(K, C)``,
    the ranked random reference images ``(M, C)``."""

    mean: list[torch.Tensor]
    std: list[torch.Tensor]
    examples: list[torch.Tensor]
    randoms: list[torch.Tensor]

    def rank(self, vectors: Mapping[str, torch.Tensor], below: Sequence[str]) -> list[torch.Tensor]:
        return [_ranks((vectors[name] - m) / s) for name, m, s in zip(below, self.mean, self.std, strict=True)]

    def similarities(self, pictures: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(P, L)`` picture, ``(L,)`` natural and ``(L,)`` random rank correlations of ``P`` ranked pictures."""
        k = len(self.examples[0])
        off = ~torch.eye(k, dtype=torch.bool)
        pic = torch.stack([(p @ e.T).mean(1) for p, e in zip(pictures, self.examples, strict=True)], 1)
        nat = torch.stack([(e @ e.T)[off].mean() for e in self.examples])
        ran = torch.stack([(r @ e.T).mean() for r, e in zip(self.randoms, self.examples, strict=True)])
        return pic, nat, ran

    def controls(self) -> torch.Tensor:
        """``(K,)`` overall scores of the leave-one-out natural controls: example ``i`` as the picture, the
        others as the examples."""
        return self._each_left_out("examples")

    def random_controls(self) -> torch.Tensor:
        """``(M,)`` overall scores of each random reference image as the picture (the others the reference)."""
        return self._each_left_out("randoms")

    def _each_left_out(self, kind: str) -> torch.Tensor:
        """Each image of ``kind`` (``"examples"`` or ``"randoms"``) scored as the picture against the references
        without it."""
        rows: list[torch.Tensor] = getattr(self, kind)
        n = len(rows[0])
        out = []
        for i in range(n):
            keep = [j for j in range(n) if j != i]
            without = replace(self, **{kind: [r[keep] for r in rows]})
            pic, nat, ran = without.similarities([r[i : i + 1] for r in rows])
            out.append(_overall(pic[0], nat, ran))
        return torch.tensor(out)


def _overall(pic: torch.Tensor, nat: torch.Tensor, ran: torch.Tensor) -> float:
    span = float((nat - ran).sum())
    return float((pic - ran).sum()) / span if span >= MIN_SPAN else float("nan")


def _finite(x: torch.Tensor) -> torch.Tensor:
    return x[~x.isnan()]


def _auroc(positive: torch.Tensor, negative: torch.Tensor) -> float:
    """P(a positive scores above a negative), ties counting half; ``nan`` when either is empty."""
    if not len(positive) or not len(negative):
        return float("nan")
    diff = positive[:, None] - negative[None, :]
    return float(((diff > 0).float() + 0.5 * (diff == 0).float()).mean())


def _threshold(controls: torch.Tensor, rate: float) -> float:
    """The largest value that at most ``rate`` of ``controls`` fall strictly below: the ``floor(rate N)``-th
    smallest (``-inf`` without controls: nothing flagged)."""
    if not len(controls):
        return float("-inf")
    return float(controls.sort().values[math.floor(rate * len(controls))])


class PathCheck:
    """The path check of a layer's pictures, calibrated on natural images (see the module's docstring).

    Example::

        check = PathCheck(model, "conv3_2", {17: top_examples_17, 3: top_examples_3, ...}, randoms, held_out=...)
        check.calibration.threshold, check.calibration.false_positive_rate
        trust = check.check(17, picture)        # a Trust: trust.flagged, trust.to_json()

    Args:
        model: the network (left unchanged).
        layer: the units' layer (with a spatial map).
        examples: ``{unit: (K, 3, H, W)}`` in [0, 1], K >= 2: each unit's top natural examples (whole images at the
            model's input size); every unit given calibrates the threshold, and only these can be checked.
        randoms: ``(M, 3, H, W)`` in [0, 1], M >= 4: random natural images of the same collection; every other one
            standardizes the channels, the rest are the random reference.
        below: the layers compared (default: :func:`layers_below`).
        held_out: ``{unit: (K', 3, H, W)}``: natural images that excite the unit and that ``examples`` do not hold
            (another part of the collection), scored as pictures to measure the false-positive rate.
        rate: the share of natural controls the threshold may flag.
        threshold: a fixed threshold instead of the calibrated one (the calibration's numbers are still measured).
        calibrate: ``False``: no calibration at all (``calibration`` is ``None``; the threshold ``threshold`` or
            :data:`FLAG_BELOW`), for a single unit's check.
    """

    def __init__(
        self,
        model: nn.Module,
        layer: str,
        examples: Mapping[int, torch.Tensor],
        randoms: torch.Tensor,
        *,
        below: Sequence[str] | None = None,
        held_out: Mapping[int, torch.Tensor] | None = None,
        rate: float = RATE,
        threshold: float | None = None,
        calibrate: bool = True,
    ) -> None:
        check_model(model)
        if randoms.dim() != 4 or len(randoms) < 4 or not examples:
            raise KernelvizError(
                "the path check needs at least 2 natural examples and 4 random images, each (N, 3, H, W)"
            )
        for ex in examples.values():
            if ex.dim() != 4 or len(ex) < 2:
                raise KernelvizError(
                    "the path check needs at least 2 natural examples and 4 random images, each (N, 3, H, W)"
                )
        self.model, self.layer = model, layer
        self.below = list(below) if below is not None else layers_below(model, layer)
        if not self.below:
            raise KernelvizError(f"layer {layer!r} has no convolution before it: nothing to compare along the path")
        self._everyone = _capture(model, randoms, layer, self.below)
        self._refs = {n: self._reference(n, ex, self._everyone) for n, ex in examples.items()}
        self.calibration: Calibration | None = None
        self.threshold = FLAG_BELOW if threshold is None else threshold
        #: the overall scores behind the calibration: natural controls, random images, held-out natural images
        self.natural_controls = self.random_controls = self.held_out_controls = torch.empty(0)
        if not calibrate:
            return
        natural = _finite(torch.cat([r.controls() for r in self._refs.values()]))
        unrelated = _finite(torch.cat([r.random_controls() for r in self._refs.values()]))
        if threshold is None:
            self.threshold = _threshold(natural, rate)
        held = [t.overall for n, images in (held_out or {}).items() if n in self._refs and len(images)
                for t in self._check_many(n, images)]  # fmt: skip
        held_t = _finite(torch.tensor(held))
        cut = self.threshold
        self.calibration = Calibration(
            threshold=cut,
            rate=rate,
            controls=len(natural),
            flagged=int((natural < cut).sum()) / len(natural) if len(natural) else float("nan"),
            held_out=len(held_t),
            held_out_flagged=int((held_t < cut).sum()) / len(held_t) if len(held_t) else None,
            auroc=_auroc(natural, unrelated),
            units=len(self._refs),
        )
        self.natural_controls, self.random_controls, self.held_out_controls = natural, unrelated, held_t

    @property
    def units(self) -> list[int]:
        """The units that can be checked (those whose examples were given)."""
        return list(self._refs)

    def add(self, n: int, examples: torch.Tensor) -> None:
        """Make unit ``n`` checkable with its natural examples ``(K, 3, H, W)`` (the calibration stays as it is)."""
        if examples.dim() != 4 or len(examples) < 2:
            raise KernelvizError("the path check needs at least 2 natural examples, (N, 3, H, W)")
        self._refs[n] = self._reference(n, examples, self._everyone)

    def _reference(self, n: int, examples: torch.Tensor, everyone: Mapping[str, torch.Tensor]) -> _Reference:
        ex = _read(_capture(self.model, examples, self.layer, self.below), self.layer, n, self.below)  # checks n
        rnd = _read(everyone, self.layer, n, self.below)
        # half of the random images standardize the channels, the other half is the random reference
        mean = [rnd[name][0::2].mean(0) for name in self.below]
        std = [rnd[name][0::2].std(0).clamp_min(1e-6) for name in self.below]
        ref = _Reference(mean, std, [], [])
        ref.examples = ref.rank(ex, self.below)
        ref.randoms = ref.rank({name: v[1::2] for name, v in rnd.items()}, self.below)
        return ref

    def _check_many(self, n: int, pictures: torch.Tensor) -> list[Trust]:
        if n not in self._refs:
            raise KernelvizError(
                f"the path check of {self.layer!r} has no natural examples of filter {n} "
                f"(it has those of {len(self._refs)} units)"
            )
        ref = self._refs[n]
        vectors = _read(_capture(self.model, pictures, self.layer, self.below), self.layer, n, self.below)
        pic, nat, ran = ref.similarities(ref.rank(vectors, self.below))
        span = nat - ran
        score = torch.where(span >= MIN_SPAN, (pic - ran) / span, torch.full_like(pic, float("nan")))
        out = []
        cal, threshold = self.calibration, self.threshold
        for i in range(len(pictures)):
            overall = _overall(pic[i], nat, ran)
            out.append(
                Trust(
                    layer=self.layer,
                    filter=n,
                    layers=list(self.below),
                    picture=pic[i].tolist(),
                    natural=nat.tolist(),
                    random=ran.tolist(),
                    score=score[i].tolist(),
                    overall=overall,
                    flagged=not math.isnan(overall) and overall < threshold,
                    threshold=threshold,
                    calibration=cal,
                )
            )
        return out

    def check(self, n: int, picture: torch.Tensor) -> Trust:
        """Whether unit ``n``'s picture ``(3, S, S)`` in [0, 1] is processed like its natural examples."""
        return self._check_many(n, picture[None])[0]

    def specificity(self, pictures: Mapping[int, torch.Tensor]) -> float:
        """The answer to "a late unit's picture need not look natural to early layers": the share of ordered pairs
        of units ``(a, b)`` where ``a``'s picture scores higher against ``a``'s examples than ``b``'s picture does
        (0.5: a picture is no nearer its own unit's examples than another's; ``nan`` with fewer than two units).

        Args:
            pictures: ``{unit: (3, S, S)}`` for units of this check.
        """
        units = [n for n in pictures if n in self._refs]
        stack = torch.stack([pictures[n] for n in units]) if units else None
        wins, pairs = 0, 0
        for a in units:
            scores = [t.overall for t in self._check_many(a, stack)]  # type: ignore[arg-type]
            own = scores[units.index(a)]
            for b, other in zip(units, scores, strict=True):
                if b != a and not (math.isnan(own) or math.isnan(other)):
                    pairs += 1
                    wins += own > other
        return wins / pairs if pairs else float("nan")


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
    """Whether unit ``n`` of ``layer``'s picture is processed like its natural examples, against a fixed
    threshold (no calibration: :class:`PathCheck` calibrates one on many units' natural examples).

    Args:
        model: the network (left unchanged).
        picture: ``(3, S, S)`` in [0, 1]: the unit's picture.
        examples: ``(K, 3, H, W)`` in [0, 1], K >= 2: the natural images that excite the unit most.
        randoms: ``(M, 3, H, W)`` in [0, 1], M >= 4: random natural images of the same collection.
        below: the layers compared (default: :func:`layers_below`).
        threshold: the overall score below which the picture is flagged.

    Returns:
        A :class:`Trust` (its ``calibration`` ``None``).
    """
    check = PathCheck(model, layer, {n: examples}, randoms, below=below, threshold=threshold, calibrate=False)
    return check.check(n, picture)


def collection_check(
    model: nn.Module,
    layer: str,
    units: Sequence[int],
    images: ImagesArg | UnitScan,
    *,
    k: int = 8,
    calibrate_units: int = 24,
    randoms: int = 32,
    seed: int = 0,
    batch_size: int | None = None,
    workers: int | None = None,
    progress: OnProgress | None = None,
) -> PathCheck:
    """A :class:`PathCheck` of ``units`` of ``layer``, calibrated on a collection of natural images.

    The collection (in its sorted order) is cut in two: the even images give each unit its top ``k`` examples and
    the random images, the odd ones the held-out natural images that measure the false-positive rate. The
    threshold is calibrated on the leave-one-out controls of ``units`` and of other units of the layer drawn at
    random (``calibrate_units`` in all), so that it rests on many units' natural images.

    Args:
        model: the network (left unchanged).
        layer: the units' layer.
        units: the units to be checked.
        images: the collection (anything :func:`~kernelviz.units.scan.scan_units` reads: it is scanned at
            ``layer``), or a scan of it that kept its scores (e.g. an atlas's).
        k: top examples per unit and half.
        calibrate_units: units whose examples calibrate the threshold (``units`` first).
        randoms: random images (half standardize, half are the random reference).
        seed: draws the other units and the random images.
        batch_size, workers, progress: how the collection is scanned (stage ``"scan"``).

    Raises:
        KernelvizError: a collection too small for ``k`` examples in each half, or a scan without scores.
    """
    from ..files.images import load_images
    from .scan import UnitScan, scan_units

    if isinstance(images, UnitScan):
        scan = images
    else:
        scan = scan_units(model, images, [layer], k=1, batch_size=batch_size, workers=workers, progress=progress)
    if layer not in scan.layers or scan.scores is None:
        raise KernelvizError(
            f"the scan has no per-image scores of {layer!r}: the path check needs a scan of that layer with its "
            "scores (kernelviz examples MODEL --images DIR --layers LAYER)"
        )
    count = scan.layers[layer].units
    for n in units:
        if not 0 <= n < count:
            raise out_of_range("filter", n, count, f"layer {layer!r}")
    rng = random.Random(seed)
    others = [n for n in range(count) if n not in set(units)]
    pool = list(dict.fromkeys(units)) + rng.sample(others, max(0, min(len(others), calibrate_units - len(units))))
    examples, held_out = unit_examples(model, scan, layer, pool, k, randoms // 2)
    calibration_half = halves(scan)[0]
    drawn = load_images([scan.files[r] for r in rng.sample(calibration_half, min(randoms, len(calibration_half)))],
                        int(model_meta(model).input_size))  # fmt: skip
    return PathCheck(model, layer, examples, drawn, held_out=held_out)


def halves(scan: UnitScan) -> tuple[list[int], list[int]]:
    """The images a scan read, cut in two by their place in the collection's sorted order: the even ones calibrate
    a path check (examples, random images), the odd ones are held out."""
    rows = scan.read_rows()
    return [r for r in rows if r % 2 == 0], [r for r in rows if r % 2 == 1]


def unit_examples(
    model: nn.Module, scan: UnitScan, layer: str, units: Sequence[int], k: int = 8, least: int = 0
) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
    """Each unit's top ``k`` images in each half of ``scan`` (:func:`halves`) by its per-image score, read at the
    model's input size: ``({unit: (k, 3, S, S)} of the calibration half, the same of the held-out half)``.

    Raises:
        KernelvizError: a scan without the layer's scores, or a half with fewer than ``max(k, least)`` images.
    """
    from ..files.images import load_images

    if layer not in scan.layers or scan.scores is None:
        raise KernelvizError(
            f"the scan has no per-image scores of {layer!r}: the path check needs a scan of that layer with its "
            "scores (kernelviz examples MODEL --images DIR --layers LAYER)"
        )
    parts = halves(scan)
    if min(len(h) for h in parts) < max(k, least) or k < 2:
        raise KernelvizError(
            f"the path check needs at least {2 * max(k, least)} readable images to calibrate on (got "
            f"{sum(len(h) for h in parts)}), and k >= 2"
        )
    scores = torch.from_numpy(scan.scores.array(layer)[:, list(units)].copy())  # (N, U)
    side = int(model_meta(model).input_size)

    def top(half: list[int], i: int) -> torch.Tensor:
        best = scores[half, i].argsort(descending=True, stable=True)[:k].tolist()
        return load_images([scan.files[half[j]] for j in best], side)

    return {n: top(parts[0], i) for i, n in enumerate(units)}, {n: top(parts[1], i) for i, n in enumerate(units)}
