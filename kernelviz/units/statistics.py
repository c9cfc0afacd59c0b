"""What each unit is, with the evidence: how often it fires, how strongly, the images at several levels of its
response, and what to call it (the labels of the collection it tells apart best, each with an AUC).

Everything comes from one scan (:func:`~kernelviz.units.scan.scan_units`): the firing counts, mean and maximum are
summed as it goes (exact for 1 or N processes), and the per-image scores it keeps
(:class:`~kernelviz.units.scores.ScoreStore`: each unit's maximum on each image, its pre-activation at a capped
activation) give the histograms, the quantile examples and the AUCs, read a block of units at a time so that memory
does not grow with the layer: ``images x block`` scores at once.

**Labels.** For a unit and a label (a class of the collection, a WordNet group above ImageNet classes, a label of a
label file: :mod:`kernelviz.data.labels`), the AUC of the unit's per-image score at telling the label's images from
the others: the probability that an image of the label scores above one without it, ties counted half
(Mann-Whitney, from the ranks with ties averaged: exact). 1: every image of the label above every other; 0.5:
chance. A unit's labels are those with an AUC of at least :data:`LABEL_FLOOR`, at least :data:`LABEL_IMAGES` images,
and an AUC that chance does not explain: its one-sided Mann-Whitney p-value (the normal approximation with the tie
correction, conservative in the far tail for small labels) below :data:`ALPHA` divided by the number of labels
tested (Bonferroni: a unit gets a label by chance with probability at most :data:`ALPHA`, however many labels the
collection has). Best first; a unit with none has no label.

Why the test: on the ImageNet sample (800 photos, one per class) there are 395 WordNet groups of 2 to 5 images, and
an AUC of 0.9 alone labelled as many units when the photos' classes were shuffled as when they were not
(``benchmarks/bench_units.py labels``); with the test, shuffled classes label none or nearly none.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.labels import KINDS, LabelSet
from ..errors import KernelvizError
from .scan import CLASS_QUANTUM, UnitScan

__all__ = [
    "ALPHA",
    "BINS",
    "DENSE",
    "LABEL_FLOOR",
    "LABEL_IMAGES",
    "QUANTILES",
    "Label",
    "LayerUnits",
    "UnitStats",
    "label_aucs",
    "label_tests",
    "unit_statistics",
]

#: A unit above 0 on at least this share of the images is *dense* (it says little of any one image).
DENSE = 0.95
#: The least AUC that names a unit by a label.
LABEL_FLOOR = 0.9
#: The fewest images a label needs to name a unit.
LABEL_IMAGES = 2
#: The chance that a unit gets a label that chance explains, at most (over all the labels tested for it).
ALPHA = 0.05
#: The quantiles of the per-image scores whose images are shown.
QUANTILES = (0.99, 0.9, 0.75, 0.5)
#: Images shown around each quantile.
AROUND = 3
#: Bars of a unit's histogram.
BINS = 20
#: The labels kept per kind for a unit.
BEST = 5


@dataclass(frozen=True)
class Label:
    """A label a unit tells apart: its ``id`` (class folder, group's WordNet id, label), ``name``, ``kind``
    (:data:`~kernelviz.data.labels.KINDS`), the unit's ``auc`` for it, how many ``images`` hold it, and ``p``: the
    one-sided p-value of the AUC (Mann-Whitney, normal approximation with ties), before the correction for the
    number of labels tested."""

    id: str
    name: str
    kind: str
    auc: float
    images: int
    p: float = math.nan


@dataclass
class UnitStats:
    """One unit over a collection.

    Attributes:
        unit: its index.
        frequency: the share of images on which its maximum is above 0.
        mean: its mean activation over the collection.
        max: its largest activation.
        dead: above 0 on no image.
        dense: above 0 on at least :data:`DENSE` of the images.
        histogram: ``(edges, counts)`` of its per-image scores (:data:`BINS` bars between their least and largest).
        quantiles: per quantile of :data:`QUANTILES`, ``(q, [(image index, score)])``: the images around it.
        labels: the labels it tells apart best, best first (at most :data:`BEST` of each kind; those under the
            floor left out).
    """

    unit: int
    frequency: float
    mean: float
    max: float
    dead: bool
    dense: bool
    histogram: tuple[list[float], list[int]]
    quantiles: list[tuple[float, list[tuple[int, float]]]]
    labels: list[Label] = field(default_factory=list)

    @property
    def label(self) -> Label | None:
        """Its best label, if any."""
        return self.labels[0] if self.labels else None


@dataclass
class LayerUnits:
    """Every unit of a layer over a scan's collection (:func:`unit_statistics`).

    Attributes:
        layer: the layer.
        images: the images read.
        ranked_by: what the per-image scores are the maximum of (``activation`` or ``pre-activation``).
        units: one :class:`UnitStats` per unit.
        files: the collection's files (image indices point here).
        label_images: the fewest images a label needed.
        alpha: the test's level (``None``: no test).
        tested: the labels tested per unit (those of ``label_images`` images or more).
    """

    layer: str
    images: int
    ranked_by: str
    units: list[UnitStats]
    files: list[Path]
    label_images: int = LABEL_IMAGES
    alpha: float | None = ALPHA
    tested: int = 0

    def to_json(self, image: Callable[[int], dict[str, Any]] | None = None) -> dict[str, Any]:
        """The layer's ``units.json`` content; ``image(i)`` gives the fields of an example image (default: its path)."""
        shown = image or (lambda i: {"image": str(self.files[i])})
        return {
            "layer": self.layer,
            "images": self.images,
            "ranked_by": self.ranked_by,
            "dense_threshold": DENSE,
            "label_floor": LABEL_FLOOR,
            "label_images": self.label_images,
            "alpha": self.alpha,
            "labels_tested": self.tested,
            "units": [
                {
                    "unit": u.unit,
                    "frequency": u.frequency,
                    "mean": u.mean,
                    "max": u.max,
                    "dead": u.dead,
                    "dense": u.dense,
                    "histogram": {"edges": u.histogram[0], "counts": u.histogram[1]},
                    "quantiles": [
                        {"q": q, "examples": [{**shown(i), "value": v} for i, v in found]} for q, found in u.quantiles
                    ],
                    "labels": [asdict(label) for label in u.labels],
                }
                for u in self.units
            ],
        }


def _midranks(scores: torch.Tensor) -> torch.Tensor:
    """``(n, c)`` float64 ranks (1 to n) of each column of ``scores`` ``(n, c)``, equal values sharing the mean of
    their ranks."""
    return _ranks_and_ties(scores)[0]


def _ranks_and_ties(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_midranks`, and per column the tie term ``sum(t^3 - t)`` over its runs of ``t`` equal values
    ``(c,)`` float64."""
    n, c = scores.shape
    ordered, order = scores.sort(dim=0, stable=True)  # (n, c)
    starts = torch.ones_like(ordered, dtype=torch.bool)
    starts[1:] = ordered[1:] != ordered[:-1]  # a new run of equal values
    run = starts.long().cumsum(0) - 1 + torch.arange(c) * n  # (n, c) a global id per run
    position = torch.arange(n, dtype=torch.float64)[:, None].expand(n, c)
    first = torch.full((n * c,), float(n), dtype=torch.float64).scatter_reduce(
        0, run.flatten(), position.flatten(), "amin"
    )
    last = torch.zeros(n * c, dtype=torch.float64).scatter_reduce(0, run.flatten(), position.flatten(), "amax")
    mid = (first[run] + last[run]) / 2 + 1  # (n, c) in sorted order
    length = (last - first + 1).clamp(min=0)  # (n * c,) per run id: its length (0: no such run)
    column = torch.arange(n * c) // n  # a run's id holds its column: cumsum - 1 < n
    ties = torch.zeros(c, dtype=torch.float64).index_add_(0, column, length**3 - length)
    return torch.empty_like(mid).scatter_(0, order, mid), ties


def label_aucs(scores: torch.Tensor, members: list[torch.Tensor]) -> torch.Tensor:
    """The AUC of each column of ``scores`` ``(n, c)`` at telling each label's rows (``members[j]``, indices into the
    n rows) from the others, ties counted half (exact, from the ranks): ``(labels, c)`` float64; ``nan`` for a label
    with no image or every image."""
    return label_tests(scores, members)[0]


def label_tests(scores: torch.Tensor, members: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`label_aucs`, and the one-sided p-value of each (``(labels, c)`` float64): the chance that a label of as
    many images drawn at random scores an AUC as high (Mann-Whitney's U, normal approximation with the tie
    correction; 1 where every score is equal, ``nan`` where the AUC is)."""
    n, c = scores.shape
    ranks, ties = _ranks_and_ties(scores)  # (n, c), (c,)
    aucs = torch.full((len(members), c), math.nan, dtype=torch.float64)
    if not members:
        return aucs, aucs.clone()
    rows = torch.cat(members)
    cols = torch.cat([torch.full((len(m),), j, dtype=torch.int64) for j, m in enumerate(members)])
    incidence = torch.sparse_coo_tensor(torch.stack([cols, rows]), torch.ones(len(rows), dtype=torch.float64),
                                        (len(members), n), check_invariants=False)  # fmt: skip
    sums = torch.sparse.mm(incidence, ranks)  # (labels, c): each label's sum of ranks
    pos = torch.tensor([len(m) for m in members], dtype=torch.float64)[:, None]
    neg = n - pos
    valid = (pos > 0) & (neg > 0)
    auc = (sums - pos * (pos + 1) / 2) / (pos * neg).clamp(min=1)
    auc = torch.where(valid, auc, aucs)
    spread = (n + 1) - ties[None, :] / max(1, n * (n - 1))  # (1, c): the tie-corrected variance's factor
    sd = torch.sqrt((spread / (12 * pos * neg).clamp(min=1)).clamp(min=0))  # (labels, c): the AUC's under chance
    z = (auc - 0.5) / sd.clamp(min=1e-300)
    p = torch.where(sd > 0, 0.5 * torch.erfc(z / math.sqrt(2)), torch.ones_like(auc))
    return auc, torch.where(valid, p, aucs)


def unit_statistics(
    scan: UnitScan,
    layer: str,
    labels: LabelSet | None = None,
    *,
    block: int = 256,
    label_images: int = LABEL_IMAGES,
    alpha: float | None = ALPHA,
) -> LayerUnits:
    """Every unit of ``layer`` over the collection ``scan`` read (see the module's description).

    Example::

        scan = kernelviz.scan_units(model, "val/", ["layer4"])
        found = kernelviz.unit_statistics(scan, "layer4", kernelviz.collection_labels(kernelviz.collection("val/")))
        found.units[17].frequency, found.units[17].label    # 0.31, Label(id='n02084071', name='dog', auc=0.94...)

    Args:
        scan: a whole scan (every batch read) with its per-image scores.
        layer: a layer of the scan.
        labels: the labels of its images (:func:`~kernelviz.data.labels.collection_labels`); ``None``: no labels.
        block: units read at once (memory: images x block scores, and a few times that while ranking).
        label_images: the fewest images a label needs to name a unit.
        alpha: the chance of a label that chance explains, per unit (Bonferroni over the labels of ``label_images``
            images or more); ``None``: no test, the AUC floor alone (to rank labels of one image, say).

    Raises:
        KernelvizError: the scan is not whole, holds no scores, or not this layer.
    """
    if layer not in scan.layers:
        raise KernelvizError(f"the scan holds no layer {layer!r}: it holds {', '.join(scan.layers)}")
    if scan.scores is None:
        raise KernelvizError("this scan holds no per-image scores: scan again (kernelviz examples, scan_units)")
    if not scan.complete:
        raise KernelvizError("the scan is not whole yet: merge its shards first (merge_scans)")
    found = scan.layers[layer]
    assert found.fires is not None and found.mean_sums is not None and found.peak is not None
    rows = torch.tensor(scan.read_rows(), dtype=torch.int64)
    n = len(rows)
    if n == 0:
        raise KernelvizError("the scan read no image")
    position = torch.full((len(scan.files),), -1, dtype=torch.int64)
    position[rows] = torch.arange(n)
    kept = labels.kept(1) if labels is not None else None
    members = [] if kept is None else [position[torch.tensor(m)] for m in kept.members]
    members = [m[m >= 0] for m in members]  # unread images hold no label here
    sizes = np.array([len(m) for m in members], dtype=np.int64)
    kinds = np.array([KINDS.index(k) for k in kept.kinds] if kept is not None else [], dtype=np.int64)
    tested = int((sizes >= label_images).sum())
    limit = math.inf if alpha is None else alpha / max(1, tested)  # the largest p-value that names a unit
    units: list[UnitStats] = []
    for start in range(0, found.units, block):
        stop = min(found.units, start + block)
        scores = scan.scores.read(layer, slice(start, stop))[rows]  # (n, c)
        aucs, pvalues = label_tests(scores, members) if members else (None, None)
        ordered, order = scores.sort(0)
        for j in range(stop - start):
            u = start + j
            fires = int(found.fires[u])
            column = ordered[:, j]
            units.append(
                UnitStats(
                    unit=u,
                    frequency=fires / n,
                    mean=float(found.mean_sums[u]) * CLASS_QUANTUM / n,
                    max=float(found.peak[u]),
                    dead=fires == 0,
                    dense=fires >= DENSE * n,
                    histogram=_histogram(column),
                    quantiles=[
                        (q, [(int(rows[order[i, j]]), float(column[i])) for i in _around(q, n)]) for q in QUANTILES
                    ],
                    labels=[]
                    if aucs is None or pvalues is None or kept is None
                    else _best(kept, aucs[:, j], pvalues[:, j], sizes, kinds, label_images, limit),
                )
            )
    return LayerUnits(layer, n, found.ranked_by, units, scan.files, label_images, alpha, tested)


def _histogram(ordered: torch.Tensor) -> tuple[list[float], list[int]]:
    """:data:`BINS` bars between the least and the largest of ``ordered`` (sorted scores)."""
    low, high = float(ordered[0]), float(ordered[-1])
    if high <= low:
        return [low, low], [len(ordered)]
    edges = torch.linspace(low, high, BINS + 1, dtype=torch.float64)
    counts = torch.histc(ordered.double(), bins=BINS, min=low, max=high)
    return [float(e) for e in edges], [int(c) for c in counts]


def _around(q: float, n: int) -> list[int]:
    """The indices (into ``n`` sorted scores) of the :data:`AROUND` images around quantile ``q``."""
    center = round(q * (n - 1))
    first = min(max(0, center - AROUND // 2), max(0, n - AROUND))
    return list(range(first, min(n, first + AROUND)))[::-1]  # the highest first


def _best(
    kept: LabelSet, aucs: torch.Tensor, pvalues: torch.Tensor, sizes: np.ndarray, kinds: np.ndarray, least: int,
    limit: float,
) -> list[Label]:  # fmt: skip
    """The labels a unit tells apart best: at most :data:`BEST` of each kind, AUC at least :data:`LABEL_FLOOR`, at
    least ``least`` images, p-value under ``limit``; best first (more images first among equal AUCs).

    Args:
        aucs, pvalues: ``(labels,)`` the unit's AUCs and their p-values.
        sizes, kinds: each label's images and kind (an index into :data:`~kernelviz.data.labels.KINDS`).
    """
    a, p = aucs.numpy(), pvalues.numpy()
    good = (sizes >= least) & (a >= LABEL_FLOOR) & (p < limit)  # NaN compares false
    found = []
    for k, kind in enumerate(KINDS):
        picked = np.nonzero(good & (kinds == k))[0]
        order = picked[np.lexsort((picked, -sizes[picked], -a[picked]))][:BEST]
        found += [Label(kept.ids[j], kept.names[j], kind, round(float(a[j]), 6), int(sizes[j]), float(f"{p[j]:.3g}"))
                  for j in order]  # fmt: skip
    return sorted(found, key=lambda label: (-label.auc, -label.images))
