"""Dataset scans: one pass over an image collection finds, for every unit of several layers, the images that
excite it most and least.

For each unit the scan keeps three rankings of ``k`` images — by the maximum over positions (with the position,
which gives the receptive-field crop), by the mean over positions, and by the minimum (the most negative, which
means something before a ReLU) — and, when the collection is class-labeled (torchvision's ``ImageFolder``
layout: one subfolder per class), the unit's mean activation per class.

The forward runs once per batch for all layers, stopping after the deepest; each layer's output is reduced by a
hook as soon as it is computed, so no output outlives the module after it and memory does not grow with the
collection. Rankings are merged on tensors. Ties (a ReLU's zeros) go to the image that comes first in the
collection, and class sums are kept in fixed point (integers), so a scan's result does not depend on how it was
cut up: 1 or N processes, resumed or not, give the same result exactly, provided the batches are the same (the
collection is cut into batches first, and the batches are shared out).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from ..core.activations import Bounds, bounds
from ..core.capture import StopForward, capture
from ..core.distributed import Shard, gather
from ..core.guard import check_model, guarded
from ..core.layers import asked_layers
from ..core.models import model_device, model_meta
from ..core.names import INPUT_SUFFIX, get_module, split_input
from ..core.progress import OnProgress, report
from ..data.collection import Collection, ImagesArg, collection
from ..data.stream import Reading, plan_batches, stream
from ..errors import KernelvizError, NonFiniteObjectiveError, NotFoundError
from ..files.write import write_bytes
from .scores import ScoreStore

__all__ = [
    "RANKINGS",
    "LayerScan",
    "Ranking",
    "Readout",
    "UnitScan",
    "collection_key",
    "load_scan",
    "merge_scans",
    "scan_id",
    "scan_units",
    "shard_file",
]

#: The rankings a scan keeps per unit: by maximum over positions, by mean, by minimum (most negative first).
RANKINGS = ("top", "mean", "bottom")

#: Class sums are kept as integer multiples of this (fixed point): sums of integers do not depend on their order.
CLASS_QUANTUM = 2.0**-20

_EMPTY = -1  # the image index of a slot no image has filled yet


class Readout(Protocol):
    """What a scan ranks instead of a layer's channels: ``(B, C, H, W) -> (B, units, H, W)``, e.g. a layer's concept
    codes. ``key`` names it in the scan's key (a checkpoint made with another readout is not resumed)."""

    units: int
    key: str

    def __call__(self, output: torch.Tensor) -> torch.Tensor: ...


# --- the result ----------------------------------------------------------------------------------------------
@dataclass
class Ranking:
    """The ``k`` images a ranking puts first, for every unit of a layer, best first.

    Attributes:
        values: ``(C, k)`` float32: the maximum over positions (``top``), the mean (``mean``) or the minimum
            (``bottom``, most negative first) of the layer's output: what is shown.
        images: ``(C, k)`` int64 indices into the scan's files; ``-1`` where fewer than ``k`` images were read.
        positions: ``(C, k)`` int64 flat position (``row * width + col``) of the maximum or minimum in the layer's
            grid; ``None`` for ``mean``.
        scores: ``(C, k)`` float32: what ranks. The values themselves, but at an activation that is flat past a cap
            or below a floor (ReLU6's 6 and 0: many images tie there) the same statistic of its input, the
            pre-activation, which still tells them apart (:attr:`LayerScan.ranked_by`).
        tiebreak: ``(C, k)`` float32: what ranks images of equal score: the mean over positions of what the score
            is the extreme of (for the mean ranking, the maximum). Where an earlier activation saturates, a unit's
            maximum is the same for every image that fills its field with the cap; the mean still differs.
    """

    values: torch.Tensor
    images: torch.Tensor
    positions: torch.Tensor | None
    scores: torch.Tensor
    tiebreak: torch.Tensor

    def to(self, device: torch.device | str) -> Ranking:
        pos = None if self.positions is None else self.positions.to(device)
        return Ranking(self.values.to(device), self.images.to(device), pos, self.scores.to(device),
                       self.tiebreak.to(device))  # fmt: skip

    def ties(self, unit: int) -> int:
        """How many of ``unit``'s ranked images share the score and tiebreak of the last one kept (2 or more: their
        order is the collection's file order, and more images may tie with them; 0 or 1: none)."""
        held = self.images[unit] >= 0
        scores, tiebreak = self.scores[unit][held], self.tiebreak[unit][held]
        return int(((scores == scores[-1]) & (tiebreak == tiebreak[-1])).sum()) if len(scores) else 0


@dataclass
class LayerScan:
    """A layer's rankings and class sums.

    Attributes:
        grid: ``(H, W)`` of the layer's output (``(1, 1)`` for a layer without positions).
        class_sums: ``(C, n_classes)`` int64: per unit and class, the sum over the class's images of the unit's mean
            activation, in units of :data:`CLASS_QUANTUM`; ``None`` for an unlabeled collection.
        ranked_by: ``"activation"``, or ``"pre-activation"`` at an activation flat past a cap or below a floor
            (:func:`~kernelviz.core.activations.bounds`): the top and bottom rankings then order images by the
            maximum and minimum of its input, and show the activation's own (capped) values.
        floor, cap: the activation's flat floor and cap (``None``: none), for saying that a value sits there.
        fires: ``(C,)`` int64: on how many images the unit's maximum is above 0.
        mean_sums: ``(C,)`` int64: the sum over images of the unit's mean activation, in units of
            :data:`CLASS_QUANTUM` (fixed point: the same sum in any order).
        peak: ``(C,)`` float32: the unit's largest activation over every image.
    """

    grid: tuple[int, int]
    top: Ranking
    mean: Ranking
    bottom: Ranking
    class_sums: torch.Tensor | None = None
    ranked_by: str = "activation"
    floor: float | None = None
    cap: float | None = None
    fires: torch.Tensor | None = None
    mean_sums: torch.Tensor | None = None
    peak: torch.Tensor | None = None

    @property
    def units(self) -> int:
        return int(self.top.values.shape[0])

    def ranking(self, name: str) -> Ranking:
        if name not in RANKINGS:
            raise KernelvizError(f"unknown ranking {name!r}: choose from {', '.join(RANKINGS)}")
        return getattr(self, name)


@dataclass
class UnitScan:
    """The result of :func:`scan_units`: per layer, the rankings of every unit.

    Attributes:
        files: the collection's files (image indices point here).
        labels: ``(N,)`` class of each file, or ``None``.
        classes: the classes (folder names), or ``None``.
        layers: ``{layer: LayerScan}`` in the order asked.
        k: images kept per unit and ranking.
        size: the input side the images were scanned at (boxes are in its pixels).
        scanned: images read.
        skipped: ``(file, why)`` of the files that could not be read.
        class_counts: ``(n_classes,)`` images read per class, or ``None``.
        batches: the batches of the whole collection, each a list of file indices.
        done: indices into ``batches`` of the batches this result holds.
        key: what the scan was made with (model, layers, ``k``, size, batch size, files), to refuse resuming or
            merging scans made otherwise.
        shard: ``(i, n)``: the share of the batches this process scanned (``(0, 1)``: all; a merged scan keeps the
            first part's).
        names: the name shown for each class (:attr:`~kernelviz.data.collection.Collection.names`), or ``None``.
        scores: every unit's score on every image read (:class:`~kernelviz.units.scores.ScoreStore`): the
            per-image maximum that ranks it; on disk beside a checkpoint, else in memory.
    """

    files: list[Path]
    labels: torch.Tensor | None
    classes: list[str] | None
    layers: dict[str, LayerScan]
    k: int
    size: int
    scanned: int = 0
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    class_counts: torch.Tensor | None = None
    batches: list[list[int]] = field(default_factory=list)
    done: set[int] = field(default_factory=set)
    key: dict[str, Any] = field(default_factory=dict)
    shard: tuple[int, int] = (0, 1)
    names: list[str] | None = None
    scores: ScoreStore | None = field(default=None, repr=False)

    @property
    def complete(self) -> bool:
        """Whether every batch of the collection is in this result."""
        return len(self.done) == len(self.batches)

    def read_rows(self) -> list[int]:
        """The indices of the images this result has read: its batches', less the files skipped."""
        skipped = {str(p) for p, _ in self.skipped}
        return sorted(i for b in self.done for i in self.batches[b] if str(self.files[i]) not in skipped)

    def class_means(self, layer: str) -> torch.Tensor:
        """``(C, n_classes)`` float64: each unit's mean activation averaged over the images of each class (``nan`` for
        a class with no image read)."""
        scan = self.layers[layer]
        if scan.class_sums is None or self.class_counts is None:
            raise KernelvizError("the collection has no classes (give a folder with one subfolder per class)")
        return scan.class_sums.double() * CLASS_QUANTUM / self.class_counts.double()

    def class_name(self, c: int) -> str:
        """The name shown for class ``c`` (:attr:`names`; the folder's name when there is none)."""
        assert self.classes is not None
        return (self.names or self.classes)[c]

    def caption(self, path: str | os.PathLike) -> str:
        """How an image of the collection is captioned: by its class's name when the collection has classes
        (``toy terrier``), else by its file name."""
        if self.labels is not None and self.classes is not None:
            i = self._index.get(str(path))
            if i is not None:
                return self.class_name(int(self.labels[i]))
        return Path(path).name

    @functools.cached_property
    def _index(self) -> dict[str, int]:
        return {str(f): i for i, f in enumerate(self.files)}

    def top_classes(self, layer: str, unit: int, n: int = 5) -> list[tuple[str, float]]:
        """The ``n`` classes with the highest mean activation of ``unit`` (by name), highest first."""
        means = self.class_means(layer)[unit]
        order = torch.sort(torch.nan_to_num(means, nan=-torch.inf), descending=True, stable=True).indices[:n]
        return [(self.class_name(int(c)), float(means[c])) for c in order]

    def classes_in_top(self, layer: str, unit: int) -> list[tuple[str, int]]:
        """How many of ``unit``'s top images (by maximum) each class holds (by name), most first."""
        if self.labels is None or self.classes is None:
            raise KernelvizError("the collection has no classes (give a folder with one subfolder per class)")
        images = self.layers[layer].top.images[unit]
        labels = self.labels[images[images >= 0]]
        counts = torch.bincount(labels, minlength=len(self.classes))
        held = counts.nonzero().flatten()  # ascending: ties stay in class order under the stable sort
        order = held[torch.sort(counts[held], descending=True, stable=True).indices]
        return [(self.class_name(c), n) for c, n in zip(order.tolist(), counts[order].tolist(), strict=True)]

    def examples(self, layer: str, unit: int, ranking: str = "top") -> list[tuple[Path, float, tuple[int, int] | None]]:
        """``(file, value, (row, col) or None)`` of ``unit``'s images under ``ranking``, best first."""
        scan = self.layers[layer]
        rank = scan.ranking(ranking)
        width = scan.grid[1]
        found = []
        for j, i in enumerate(rank.images[unit].tolist()):
            if i < 0:
                break
            pos = None if rank.positions is None else divmod(int(rank.positions[unit, j]), width)
            found.append((self.files[i], float(rank.values[unit, j]), pos))
        return found

    # --- saving -----------------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Everything in plain types and tensors: what :func:`torch.save` writes and ``weights_only`` loading reads."""
        layers = {}
        for name, s in self.layers.items():
            layers[name] = {
                "grid": list(s.grid),
                "class_sums": s.class_sums,
                "ranked_by": s.ranked_by,
                "floor": s.floor,
                "cap": s.cap,
                "fires": s.fires,
                "mean_sums": s.mean_sums,
                "peak": s.peak,
                **{
                    r: {
                        "values": s.ranking(r).values,
                        "images": s.ranking(r).images,
                        "positions": s.ranking(r).positions,
                        "scores": s.ranking(r).scores,
                        "tiebreak": s.ranking(r).tiebreak,
                    }
                    for r in RANKINGS
                },
            }
        return {
            "format": 2,
            "files": [str(f) for f in self.files],
            "labels": self.labels,
            "classes": self.classes,
            "layers": layers,
            "k": self.k,
            "size": self.size,
            "scanned": self.scanned,
            "skipped": [[str(p), why] for p, why in self.skipped],
            "class_counts": self.class_counts,
            "batches": self.batches,
            "done": sorted(self.done),
            "key": self.key,
            "shard": list(self.shard),
            "names": self.names,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> UnitScan:
        def ranking(saved: dict[str, Any]) -> Ranking:
            return Ranking(saved["values"], saved["images"], saved["positions"], saved["scores"], saved["tiebreak"])

        layers = {
            name: LayerScan(
                (int(s["grid"][0]), int(s["grid"][1])),
                ranking(s["top"]),
                ranking(s["mean"]),
                ranking(s["bottom"]),
                s["class_sums"],
                s["ranked_by"],
                s["floor"],
                s["cap"],
                s["fires"],
                s["mean_sums"],
                s["peak"],
            )
            for name, s in state["layers"].items()
        }
        return cls(
            files=[Path(f) for f in state["files"]],
            labels=state["labels"],
            classes=state["classes"],
            layers=layers,
            k=state["k"],
            size=state["size"],
            scanned=state["scanned"],
            skipped=[(Path(p), why) for p, why in state["skipped"]],
            class_counts=state["class_counts"],
            batches=state["batches"],
            done=set(state["done"]),
            key=state["key"],
            shard=(int(state["shard"][0]), int(state["shard"][1])),
            names=state["names"],
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Write the scan to ``path`` atomically (a killed write leaves the previous file whole)."""
        state = self.state()
        return write_bytes(path, lambda buffer: torch.save(state, buffer))


def load_scan(path: str | os.PathLike) -> UnitScan:
    """A scan saved by :meth:`UnitScan.save` (read with ``weights_only``: no code in the file runs).

    Raises:
        KernelvizError: the file is missing, damaged or not a scan.
    """
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"scan file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or state.get("format") != 2:
            raise ValueError("not a kernelviz scan of this version")
        scan = UnitScan.from_state(state)
        folder = score_folder(path, scan.key)
        if scan.key.get("scores", True) and folder.is_dir():  # else no scores: statistics then say to scan again
            scan.scores = ScoreStore(folder, {n: s.units for n, s in scan.layers.items()}, len(scan.files))
        return scan
    except Exception as err:  # any failure to read means the same to the user: scan again
        raise KernelvizError(f"cannot read the scan {path}: {err} (delete it to scan again)") from err


# --- merging -------------------------------------------------------------------------------------------------
def _merge(
    ranking: Ranking,
    units: torch.Tensor,
    scores: torch.Tensor,
    tiebreak: torch.Tensor,
    values: torch.Tensor,
    images: torch.Tensor,
    positions: torch.Tensor | None,
    lowest: bool,
) -> None:
    """Merge entries ``(M,)`` (the unit, score, tiebreak, value, image and position of each) into ``ranking``
    ``(C, k)`` in place: per unit, the ``k`` highest scores (lowest when ``lowest``), equal scores by their tiebreak
    the same way, then to the lower image index, empty slots last.

    Four stable sorts (by image, by tiebreak, by score, by unit) order every entry by unit, then score, then
    tiebreak, then image; :func:`torch.topk` would not say which of equal scores it keeps.
    """
    c, k = ranking.values.shape
    own = torch.arange(c, device=units.device).repeat_interleave(k)  # (C * k,) the unit of each ranked slot
    u = torch.cat([own, units])
    sc = torch.cat([ranking.scores.flatten(), scores])
    tb = torch.cat([ranking.tiebreak.flatten(), tiebreak])
    i = torch.cat([ranking.images.flatten(), images])
    order = i.sort(stable=True).indices  # empty slots (-1) come first here, but last by score (+-inf)
    order = order[tb[order].sort(descending=not lowest, stable=True).indices]
    order = order[sc[order].sort(descending=not lowest, stable=True).indices]
    order = order[u[order].sort(stable=True).indices]
    counts = torch.bincount(u, minlength=c)  # every unit has at least its k slots
    first = counts.cumsum(0) - counts
    kept = order[(torch.arange(len(u), device=u.device) - first[u[order]]) < k]  # (C * k,) unit by unit
    ranking.values.copy_(torch.cat([ranking.values.flatten(), values])[kept].view(c, k))
    ranking.scores.copy_(sc[kept].view(c, k))
    ranking.tiebreak.copy_(tb[kept].view(c, k))
    ranking.images.copy_(i[kept].view(c, k))
    if ranking.positions is not None and positions is not None:
        ranking.positions.copy_(torch.cat([ranking.positions.flatten(), positions])[kept].view(c, k))


def _slots(ranking: Ranking) -> _Entries:
    """A ranking's slots as entries for :func:`_merge`, each ``(C * k,)``."""
    c, k = ranking.values.shape
    units = torch.arange(c, device=ranking.values.device).repeat_interleave(k)
    pos = None if ranking.positions is None else ranking.positions.flatten()
    flat = ranking.scores.flatten(), ranking.tiebreak.flatten(), ranking.values.flatten(), ranking.images.flatten()
    return (units, *flat, pos)


def _merge_rankings(rankings: Sequence[Ranking], lowest: bool) -> Ranking:
    first = rankings[0]
    pos = None if first.positions is None else first.positions.clone()
    merged = Ranking(first.values.clone(), first.images.clone(), pos, first.scores.clone(), first.tiebreak.clone())
    for other in rankings[1:]:
        _merge(merged, *_slots(other), lowest=lowest)
    return merged


def merge_scans(scans: Sequence[UnitScan]) -> UnitScan:
    """One scan from the scans of disjoint shares of the same collection (shards, ranks, or a scan and its
    continuation): exactly what one process scanning every batch finds.

    Raises:
        KernelvizError: the scans were made with other settings, or share batches.
    """
    if not scans:
        raise KernelvizError("no scans to merge")
    first = scans[0]
    for other in scans[1:]:
        if other.key != first.key:
            differ = sorted(k for k in {*first.key, *other.key} if first.key.get(k) != other.key.get(k))
            raise KernelvizError(
                f"these scans were made with other settings ({', '.join(differ)}): they cannot be merged"
            )
        if other.done & first.done:
            raise KernelvizError("these scans share batches: merge the scans of disjoint shards only")
    done = set().union(*(s.done for s in scans))
    layers = {}
    for name, layer in first.layers.items():
        parts = [s.layers[name] for s in scans]
        merged = {r: _merge_rankings([p.ranking(r) for p in parts], lowest=r == "bottom") for r in RANKINGS}
        sums = None if layer.class_sums is None else torch.stack([p.class_sums for p in parts]).sum(0)  # type: ignore[misc]
        layers[name] = replace(
            layer,
            top=merged["top"],
            mean=merged["mean"],
            bottom=merged["bottom"],
            class_sums=sums,
            fires=torch.stack([p.fires for p in parts]).sum(0),  # type: ignore[misc]
            mean_sums=torch.stack([p.mean_sums for p in parts]).sum(0),  # type: ignore[misc]
            peak=torch.stack([p.peak for p in parts]).amax(0),  # type: ignore[misc]
        )
    counts = None if first.class_counts is None else torch.stack([s.class_counts for s in scans]).sum(0)  # type: ignore[misc]
    skipped = sorted((p for s in scans for p in s.skipped), key=lambda item: first.files.index(item[0]))
    scores = None
    if first.scores is not None and all(s.scores is not None for s in scans):
        scores = first.scores.merged([(s.scores, s.read_rows()) for s in scans])  # type: ignore[misc]
    return replace(
        first,
        layers=layers,
        scanned=sum(s.scanned for s in scans),
        skipped=skipped,
        class_counts=counts,
        done=done,
        scores=scores,
    )


# --- scanning ------------------------------------------------------------------------------------------------
class _Pending:
    """Entries of a ranking ``(C, k)`` waiting to be merged, in buffers made once (``C * k`` entries): small tensors
    kept alive across batches would scatter the allocator's heap, and the process's memory would grow with the
    collection."""

    def __init__(self, ranking: Ranking) -> None:
        size, device = ranking.values.numel(), ranking.values.device
        self.units = torch.empty(size, dtype=torch.int64, device=device)
        self.scores = torch.empty(size, dtype=ranking.scores.dtype, device=device)
        self.tiebreak = torch.empty(size, dtype=ranking.tiebreak.dtype, device=device)
        self.values = torch.empty(size, dtype=ranking.values.dtype, device=device)
        self.images = torch.empty(size, dtype=torch.int64, device=device)
        self.positions = torch.empty(size, dtype=torch.int64, device=device)
        self.count = 0

    def room(self) -> int:
        return len(self.units) - self.count

    def add(
        self,
        units: torch.Tensor,
        scores: torch.Tensor,
        tiebreak: torch.Tensor,
        values: torch.Tensor,
        images: torch.Tensor,
        positions: torch.Tensor | None,
    ) -> None:
        end = self.count + len(units)
        self.units[self.count : end] = units
        self.scores[self.count : end] = scores
        self.tiebreak[self.count : end] = tiebreak
        self.values[self.count : end] = values
        self.images[self.count : end] = images
        if positions is not None:
            self.positions[self.count : end] = positions
        self.count = end


#: Entries for :func:`_merge`: ``(units, scores, tiebreak, values, images, positions)``, each ``(M,)``.
_Entries = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]


class _Reducer:
    """The hook side of a scan: each layer's output, as it is computed, reduced to its maxima, minima and means,
    and the entries that may get into a ranking set aside.

    An image gets into a unit's ranking only by beating the k-th best score so far, so each batch keeps only those
    entries (and finds only their positions); they are merged once they are as many as the ranking's slots, and
    before a checkpoint or the end (:meth:`flush`). A k-th best that is not updated yet is lower, so it lets
    through more entries, never fewer. The batch's images come after every image ranked (batches run in
    order), so a score equal to the k-th best cannot get in.

    At a layer ranked by its pre-activation (:attr:`LayerScan.ranked_by`), the input arrives first (``LAYER:input``,
    read before the module runs) and is kept until the output: the maxima and minima of the input rank, those of the
    output are shown, the position is the input's extreme.

    A batch's entries and class sums are staged while its forward runs and committed once it has run through
    (:meth:`commit`): a forward that fails part-way (on one image of the batch) leaves the rankings as they were
    (:meth:`discard`), so the batch can be run again without the image.
    """

    def __init__(self, scan: UnitScan, device: torch.device, readouts: Mapping[str, Readout]) -> None:
        self.scan, self.device, self.readouts = scan, device, readouts
        self.images = torch.empty(0, dtype=torch.int64, device=device)  # (B,) file indices of the current batch
        self.labels: torch.Tensor | None = None
        self.finite = torch.ones((), dtype=torch.bool, device=device)
        self.pending = {(name, r): _Pending(layer.ranking(r)) for name, layer in scan.layers.items() for r in RANKINGS}
        self.pre: dict[str, torch.Tensor] = {}  # a layer's input, until its output comes
        self.staged: list[tuple[str, str, _Entries]] = []  # (layer, ranking, entries) of the batch running
        self.sums: list[tuple[str, torch.Tensor]] = []  # (layer, (B, C) fixed-point means) of the batch running
        self.stats: list[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (layer, max, mean, score)

    def begin(self, images: torch.Tensor, labels: torch.Tensor | None) -> None:
        """A new batch: ``images`` ``(B,)`` file indices, ``labels`` their classes (or ``None``)."""
        self.images, self.labels = images, labels
        self.finite = torch.ones((), dtype=torch.bool, device=self.device)
        self.discard()

    def discard(self) -> None:
        """Forget what the batch running staged (its forward failed)."""
        self.staged.clear()
        self.sums.clear()
        self.stats.clear()
        self.pre.clear()

    def commit(self) -> None:
        """Add the batch's staged entries to the rankings and its class sums (its forward ran through)."""
        for name, rank, entries in self.staged:
            ranking = self.scan.layers[name].ranking(rank)
            waiting = self.pending[(name, rank)]
            if len(entries[0]) > waiting.room():
                self._merge(name, rank)
            if len(entries[0]) > waiting.room():  # more than the ranking holds (the first batches): merged at once
                _merge(ranking, *entries, lowest=rank == "bottom")
            else:
                waiting.add(*entries)
        for name, fixed in self.sums:
            sums = self.scan.layers[name].class_sums
            if sums is not None and self.labels is not None:
                sums.index_add_(1, self.labels, fixed.T)
        for name, high, mean, score in self.stats:
            layer = self.scan.layers[name]
            assert layer.fires is not None and layer.mean_sums is not None and layer.peak is not None
            layer.fires += (high > 0).sum(0)
            layer.mean_sums += torch.round(mean.double() / CLASS_QUANTUM).to(torch.int64).sum(0)
            torch.maximum(layer.peak, high.amax(0), out=layer.peak)
            if self.scan.scores is not None:
                self.scan.scores.write(name, self.images, score)
        self.discard()

    def __call__(self, name: str, output: torch.Tensor) -> None:
        base, at_input = split_input(name)
        x = output.detach()
        if x.dim() == 2:  # (B, C): a unit without positions
            x = x[:, :, None, None]
        if x.dim() != 4:
            raise KernelvizError(f"layer {name!r} gives {tuple(x.shape)} outputs: a scan reads (B, C, H, W) or (B, C)")
        if at_input:  # a copy: an in-place activation is about to overwrite it
            self.pre[base] = x.flatten(2).float().clone()  # (B, C, H*W)
            return
        if name in self.readouts:
            x = self.readouts[name](x)
        flat = x.flatten(2).float()  # (B, C, H*W)
        high, low = flat.amax(2), flat.amin(2)  # (B, C) each; far faster than aminmax or max with indices
        mean = flat.sum(2) / flat.shape[2]  # (B, C)
        self.finite &= torch.isfinite(mean).all()  # a non-finite value anywhere in a map makes its sum so
        pre = self.pre.pop(name, None)
        ranked = flat if pre is None else pre  # what the extremes' scores, tiebreaks and positions come from
        high_score, low_score = (high, low) if pre is None else (pre.amax(2), pre.amin(2))
        spread = mean if pre is None else pre.sum(2) / pre.shape[2]  # (B, C): equal extremes told apart by it
        self._collect(name, "top", high_score, spread, high, ranked)
        self._collect(name, "bottom", low_score, spread, low, ranked)
        self._collect(name, "mean", mean, high_score, mean, None)
        self.stats.append((name, high, mean, high_score))
        if self.scan.layers[name].class_sums is not None and self.labels is not None:
            self.sums.append((name, torch.round(mean.double() / CLASS_QUANTUM).to(torch.int64)))  # (B, C)

    def _collect(
        self,
        name: str,
        rank: str,
        scores: torch.Tensor,
        tiebreak: torch.Tensor,
        values: torch.Tensor,
        flat: torch.Tensor | None,
    ) -> None:
        ranking = self.scan.layers[name].ranking(rank)
        lowest = rank == "bottom"
        kth, kth_tie = ranking.scores[:, -1], ranking.tiebreak[:, -1]  # (C,): +-inf while fewer than k are ranked
        if lowest:
            beats = (scores < kth) | ((scores == kth) & (tiebreak < kth_tie))
        else:
            beats = (scores > kth) | ((scores == kth) & (tiebreak > kth_tie))
        rows, units = beats.nonzero(as_tuple=True)  # (M,) each
        if rows.numel() == 0:
            return
        pos = None
        if flat is not None:
            pos = _first_extreme(flat[rows, units].view(-1, *self.scan.layers[name].grid), lowest)
        entries = (units, scores[rows, units], tiebreak[rows, units], values[rows, units], self.images[rows], pos)
        self.staged.append((name, rank, entries))

    def _merge(self, name: str, rank: str) -> None:
        waiting = self.pending[(name, rank)]
        if not waiting.count:
            return
        n = waiting.count
        ranking = self.scan.layers[name].ranking(rank)
        pos = waiting.positions[:n] if ranking.positions is not None else None
        _merge(ranking, waiting.units[:n], waiting.scores[:n], waiting.tiebreak[:n], waiting.values[:n],
               waiting.images[:n], pos,
               lowest=rank == "bottom")  # fmt: skip
        waiting.count = 0

    def flush(self) -> None:
        """Merge every entry set aside (before a checkpoint, and at the end)."""
        for name, rank in self.pending:
            self._merge(name, rank)


def _first_extreme(maps: torch.Tensor, lowest: bool) -> torch.Tensor:
    """The flat position (``row * W + col``) of the first maximum (minimum when ``lowest``) of each map ``(M, H, W)``,
    as :func:`torch.argmax` finds it on the flattened maps, in about a fifth of its time: the first row holding the
    extreme, then the first column of that row."""
    per_row = maps.amin(2) if lowest else maps.amax(2)  # (M, H)
    row = per_row.argmin(1) if lowest else per_row.argmax(1)  # (M,)
    line = maps[torch.arange(len(maps), device=maps.device), row]  # (M, W)
    col = line.argmin(1) if lowest else line.argmax(1)
    return row * maps.shape[2] + col


def _empty_layer(plan: _Planned, k: int, classes: int | None, device: torch.device) -> LayerScan:
    def ranking(positions: bool, lowest: bool) -> Ranking:
        fill = torch.inf if lowest else -torch.inf
        return Ranking(
            torch.full((plan.units, k), fill, device=device),
            torch.full((plan.units, k), _EMPTY, dtype=torch.int64, device=device),
            torch.full((plan.units, k), 0, dtype=torch.int64, device=device) if positions else None,
            torch.full((plan.units, k), fill, device=device),
            torch.full((plan.units, k), fill, device=device),
        )

    sums = None if classes is None else torch.zeros(plan.units, classes, dtype=torch.int64, device=device)
    ranked_by = "pre-activation" if plan.pre else "activation"
    counts = torch.zeros(plan.units, dtype=torch.int64, device=device)
    return LayerScan(plan.grid, ranking(True, False), ranking(False, False), ranking(True, True), sums, ranked_by,
                     plan.floor, plan.cap, counts, counts.clone(),
                     torch.full((plan.units,), -torch.inf, device=device))  # fmt: skip


def _fingerprint(model: nn.Module) -> str:
    """A short digest of the model's parameters (a checkpoint made with other weights is not resumed)."""
    sums = [float(p.detach().sum(dtype=torch.float64)) for p in model.parameters()]
    return hashlib.sha1(repr(sums).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class _Planned:
    """How a layer is scanned: its units and grid, and whether its pre-activation ranks (``pre``; ``floor`` and
    ``cap``: where its activation is flat)."""

    units: int
    grid: tuple[int, int]
    pre: bool = False
    floor: float | None = None
    cap: float | None = None


def _plan(
    model: nn.Module, size: int, layers: Sequence[str] | None, readouts: Mapping[str, Readout]
) -> dict[str, _Planned]:
    """How each layer to scan (every convolution by default) is scanned; a layer read out through a
    :class:`Readout` has its units (and no pre-activation)."""
    plan = {}
    for name, row in asked_layers(model, size, layers, "scan"):
        if len(row.shape) not in (1, 3):
            raise KernelvizError(
                f"layer {name!r} has output {row.shape}: a scan reads units of (C, H, W) or (C,) outputs"
            )
        grid = (row.shape[1], row.shape[2]) if len(row.shape) == 3 else (1, 1)
        flat = bounds(get_module(model, row.path)) if row.kind == "activation" and name not in readouts else Bounds()
        plan[name] = _Planned(
            readouts[name].units if name in readouts else row.shape[0],
            grid,
            flat.flat,
            flat.low if flat.flat_low else None,
            flat.high if flat.flat_high else None,
        )
    unknown = sorted(set(readouts) - set(plan))
    if unknown:
        raise KernelvizError(f"readouts given for layers not scanned: {', '.join(unknown)}")
    return plan


def scan_units(
    model: nn.Module,
    images: ImagesArg,
    layers: Sequence[str] | None = None,
    *,
    k: int = 9,
    batch_size: int | None = None,
    workers: int | None = None,
    size: int | None = None,
    shard: tuple[int, int] | None = None,
    checkpoint: str | os.PathLike | None = None,
    every: int = 1024,
    progress: OnProgress | None = None,
    readouts: Mapping[str, Readout] | None = None,
    scores: bool = True,
) -> UnitScan:
    """Stream an image collection through ``model`` once and rank the images for every unit of ``layers``.

    Example::

        scan = kernelviz.scan_units(model, "val/", ["conv3_2", "conv5_3"], k=9)
        layer = scan.layers["conv3_2"]
        layer.top.values[17]        # (9,) the 9 highest maxima of unit 17, best first
        layer.top.images[17]        # (9,) their indices in scan.files
        scan.examples("conv3_2", 17)  # [(file, value, (row, col)), ...]

    Args:
        model: the network (left unchanged).
        images: a folder (class-labeled when it has the ``ImageFolder`` layout), a text file listing images, a
            sequence of files, or a :class:`~kernelviz.data.collection.Collection`.
        layers: the layers to scan; default: every convolution.
        k: images kept per unit and ranking.
        batch_size, workers, size: how the images are read (:class:`~kernelviz.data.stream.Reading`); the batches
            are fixed before the scan is shared out, so results do not depend on the number of processes.
        shard: ``(i, n)``: scan only the i-th of n shares of the batches (job arrays); default: under ``torchrun``,
            this rank's share, the shares then merged on every rank (``torch.distributed``), else everything.
        checkpoint: a file in which the running state is saved atomically every ``every`` images, and from which a
            scan made with the same model, layers, images and settings resumes; or a folder, in which each scan (each
            model, layers, images, settings and shard) has its own file (:func:`shard_file`).
        every: images between checkpoints.
        progress: reports stage ``"scan"``: images done of this process's share.
        readouts: ``{layer: readout}``: rank what the :class:`Readout` makes of the layer's output (the units of
            the result are its units), e.g. the codes of :class:`~kernelviz.units.concepts.Concepts`.
        scores: keep every unit's score on every image (:attr:`UnitScan.scores`: 4 bytes per image and unit, on
            disk beside a checkpoint), which :func:`~kernelviz.units.statistics.unit_statistics` needs for
            histograms, quantile examples and labels; ``False``: only the rankings and the running sums.

    Returns:
        A :class:`UnitScan` (for a ``shard``, that share's: :func:`merge_scans` joins the shards).

    Raises:
        KernelvizError: no image could be read, a layer has no units to rank, the activations are not finite,
            or the checkpoint was made otherwise.
    """
    meta = model_meta(check_model(model))
    device = model_device(model)
    reading = Reading(batch_size, workers, size).resolved(device, meta.input_size)
    if k < 1 or every < 1:
        raise KernelvizError(f"k and every must be >= 1 (got {k}, {every})")
    found = collection(images)
    readouts = dict(readouts or {})
    side, batch = int(reading.size or 0), int(reading.batch_size or 0)
    plan = _plan(model, side, layers, readouts)
    share = Shard.of(shard)
    n = len(found.files)
    key = {**collection_key(model, found, side), "layers": list(plan), "k": k, "batch_size": batch}
    if readouts:
        key["readouts"] = {name: r.key for name, r in sorted(readouts.items())}
    if not scores:
        key["scores"] = False
    classes = None if found.classes is None else len(found.classes)
    if checkpoint is not None and Path(checkpoint).is_dir():
        checkpoint = shard_file(checkpoint, key, share.pair)
    scan = _resumed(checkpoint, key, share.pair)
    store = None
    if scores:
        store = ScoreStore(None if checkpoint is None else score_folder(checkpoint, key),
                           {name: planned.units for name, planned in plan.items()}, n)  # fmt: skip
    if scan is None:
        scan = UnitScan(
            files=found.files,
            labels=found.labels,
            classes=found.classes,
            layers={name: _empty_layer(planned, k, classes, device) for name, planned in plan.items()},
            k=k,
            size=side,
            class_counts=None if classes is None else torch.zeros(classes, dtype=torch.int64),
            batches=plan_batches(n, batch),
            key=key,
            shard=share.pair,
            names=found.names,
        )
    else:
        scan.layers = {name: _moved(layer, device) for name, layer in scan.layers.items()}
    scan.scores = store
    scanner = _Scanner(model, scan, found, reading, device, readouts, checkpoint=checkpoint, every=every,
                       progress=progress)  # fmt: skip
    scanner.run(share)
    scan.layers = {name: _moved(layer, torch.device("cpu")) for name, layer in scan.layers.items()}
    if share.distributed:  # scores on disk are shared by the ranks; in memory they travel with the scans
        scan = merge_scans(gather(scan))
    if scan.scanned == 0 and (share.distributed or shard is None):
        named = "; ".join(f"{p.name} ({why.rpartition(': ')[2] or why})" for p, why in scan.skipped[:3])
        more = f" and {len(scan.skipped) - 3} more" if len(scan.skipped) > 3 else ""
        raise KernelvizError(
            f"none of the {len(scan.skipped)} image file(s) in {found.source} could be read: {named}{more}"
        )
    return scan


def _moved(layer: LayerScan, device: torch.device) -> LayerScan:
    def moved(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.to(device)

    return replace(layer, top=layer.top.to(device), mean=layer.mean.to(device), bottom=layer.bottom.to(device),
                   class_sums=moved(layer.class_sums), fires=moved(layer.fires), mean_sums=moved(layer.mean_sums),
                   peak=moved(layer.peak))  # fmt: skip


def _resumed(checkpoint: str | os.PathLike | None, key: dict[str, Any], shard: tuple[int, int]) -> UnitScan | None:
    """The checkpointed scan to go on with, ``None`` for a new one; a checkpoint made otherwise is refused."""
    if checkpoint is None or not Path(checkpoint).exists():
        return None
    before = load_scan(checkpoint)
    wanted, made = {**key, "shard": list(shard)}, {**before.key, "shard": list(before.shard)}
    if made != wanted:
        differ = sorted(k for k in wanted if made.get(k) != wanted[k])
        raise KernelvizError(
            f"{checkpoint} holds a scan made with other settings ({', '.join(differ)}): use another output folder, "
            "or delete it to scan again"
        )
    if key.get("scores", True) and before.scores is None:
        raise KernelvizError(
            f"the per-image scores of {checkpoint} are missing ({score_folder(checkpoint, key)}): delete the "
            "checkpoint to scan again"
        )
    return before


@dataclass
class _Scanner:
    """One process's pass over its batches of a scan: read, reduce, checkpoint, report."""

    model: nn.Module
    scan: UnitScan
    found: Collection
    reading: Reading
    device: torch.device
    readouts: Mapping[str, Readout]
    checkpoint: str | os.PathLike | None
    every: int
    progress: OnProgress | None

    def run(self, share: Shard) -> None:
        """Scan this process's batches not done yet (checkpointing as it goes)."""
        scan = self.scan
        mine = [i for i in range(len(scan.batches)) if share.owns(i)]
        todo = [i for i in mine if i not in scan.done]
        total = sum(len(scan.batches[i]) for i in mine)
        done = total - sum(len(scan.batches[i]) for i in todo)
        report(self.progress, "scan", done, total)
        if not todo:
            return
        meta = model_meta(self.model)
        reduce = _Reducer(scan, self.device, self.readouts)
        since = 0
        inputs = [f"{name}{INPUT_SUFFIX}" for name, layer in scan.layers.items() if layer.ranked_by != "activation"]
        hooks = capture(self.model, [*scan.layers, *inputs], stop=True, each=reduce)
        with guarded(self.model, keep_inplace=True), torch.no_grad(), hooks:
            for batch in stream(self.found, scan.batches, todo, self.reading, self.device):
                scan.skipped.extend(batch.skipped)
                failed = self._forward(reduce, meta, batch.images, batch.readable)
                if failed is None:
                    scan.scanned += len(batch.readable)
                else:  # the model fails on some image of the batch: each alone, the failing ones skipped
                    self._one_by_one(reduce, meta, batch.images, batch.readable, failed)
                scan.done.add(batch.number)
                done += len(batch.files)
                since += len(batch.files)
                if self.checkpoint is not None and (since >= self.every or scan.complete):
                    reduce.flush()
                    if scan.scores is not None:
                        scan.scores.flush()  # the rows first: the checkpoint says their batches are done
                    _checkpoint(scan, self.checkpoint)
                    since = 0
                report(self.progress, "scan", done, total)
        reduce.flush()
        if scan.scores is not None:
            scan.scores.flush()
        if self.checkpoint is not None and since:
            _checkpoint(scan, self.checkpoint)

    def _forward(self, reduce: _Reducer, meta: Any, images: torch.Tensor, indices: torch.Tensor) -> Exception | None:
        """Run ``images`` ``(b, 3, S, S)`` (files ``indices``) through the model and commit what they add to the
        rankings; the exception the model raised, if it did (nothing committed then)."""
        if not len(indices):
            return None
        scan = self.scan
        labels = None if scan.labels is None else scan.labels[indices]
        reduce.begin(indices.to(self.device), None if labels is None else labels.to(self.device))
        try:
            with contextlib.suppress(StopForward):  # raised once the deepest layer is reduced
                self.model(meta.normalize(images))
        except KernelvizError:
            raise  # what the scan itself refuses (a layer it cannot read): no image's fault
        except Exception as err:  # the model fails on this input; KeyboardInterrupt is not caught
            reduce.discard()
            return err
        if not bool(reduce.finite):
            files = ", ".join(scan.files[int(i)].name for i in indices[:3].tolist())
            raise NonFiniteObjectiveError(
                f"the model's activations are not finite on the batch of {files}...: check the model and its weights"
            )
        reduce.commit()
        if labels is not None and scan.class_counts is not None:
            scan.class_counts += torch.bincount(labels, minlength=len(scan.class_counts))
        return None

    def _one_by_one(
        self, reduce: _Reducer, meta: Any, images: torch.Tensor, indices: torch.Tensor, failed: Exception
    ) -> None:
        """A batch the model failed on, one image at a time in order (the result is the batch's without the failing
        images); each failing image is skipped and counted with why. When it fails on every image, the model
        cannot run at all: that is an error, in one line naming the first file."""
        scan = self.scan
        errors = []
        for j in range(len(indices)):
            err = self._forward(reduce, meta, images[j : j + 1], indices[j : j + 1])
            if err is None:
                scan.scanned += 1
            else:
                errors.append(
                    (scan.files[int(indices[j])], f"the model could not run on it ({type(err).__name__}: {err})")
                )
        if len(errors) == len(indices) and len(indices) > 1:
            raise KernelvizError(
                f"the model could not run on any image of the batch of {errors[0][0]} ({type(failed).__name__}: "
                f"{failed}): check the model and the image size (--size)"
            )
        scan.skipped.extend(errors)


def _checkpoint(scan: UnitScan, path: str | os.PathLike) -> None:
    on_cpu = replace(scan, layers={name: _moved(layer, torch.device("cpu")) for name, layer in scan.layers.items()})
    on_cpu.save(path)


def collection_key(model: nn.Module, found: Collection, size: int) -> dict[str, Any]:
    """What a scan's key says of the model and the collection: the model, a digest of its weights, the input side,
    the files (a digest of their paths) and their count. Scans with the same collection key read the same images
    through the same network (their layers, ``k`` and batches may differ)."""
    return {
        "model": model_meta(model).name,
        "weights": _fingerprint(model),
        "size": size,
        "files": hashlib.sha1("\n".join(map(str, found.files)).encode()).hexdigest(),
        "count": len(found.files),
    }


def scan_id(key: dict[str, Any]) -> str:
    """A short digest of what a scan was made with (its :attr:`UnitScan.key`)."""
    return hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def score_folder(checkpoint: str | os.PathLike, key: dict[str, Any]) -> Path:
    """Where the per-image scores of the scan made with ``key`` are kept, beside its checkpoint ``checkpoint``: one
    folder for every shard of the scan (``<scan-id>-scores``)."""
    return Path(checkpoint).parent / f"{scan_id(key)}-scores"


def shard_file(folder: str | os.PathLike, key: dict[str, Any], shard: tuple[int, int]) -> Path:
    """The checkpoint of shard ``(i, n)`` of the scan made with ``key``, in ``folder``: scans made otherwise (other
    layers, images, weights) keep their own files."""
    return Path(folder) / f"{scan_id(key)}-shard-{shard[0]}-of-{shard[1]}.pt"
