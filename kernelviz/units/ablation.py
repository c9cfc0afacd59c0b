"""Does a unit matter? A collection through the model with some units switched off (``zero``), held at their mean
over the collection (``mean``) or multiplied by a factor (``scale``: amplified, or turned down), against the same
images untouched: what the network loses, per class, per WordNet group and per label (Bau et al., PNAS 2020).

Each batch goes through the model twice, untouched and edited, in one pass over the collection (``mean`` first
reads the collection once for the means). The edit is a forward hook on the layer that exists only inside the call
and replaces the chosen channels of its output (in the layer's own layout: a transformer's tokens, a channels-last
map; the run named, ``_swish#2``, for a module that runs several times); the model is left as it was.

**Which output is an image's class.** The class of an image is its folder's (an ``ImageFolder`` collection). Folders
named by WordNet id (``n01440764``, ``n01440764_tench``) map to their ImageNet-1k index when the model has 1000
outputs, also when the collection holds only some of the classes; otherwise folders are matched by name to the
model's category names when it carries them (torchvision's weights do); otherwise folder ``i`` of the sorted folders
is output ``i``, when there are as many folders as outputs. Anything else is refused, with what to do.

**What is reported**, each as ``(before, after)``: per class its images' accuracy (top-1 is the class) and mean
probability of the class; per WordNet group above the collection's ImageNet classes (2 images or more) its images'
accuracy (top-1 is one of the group's classes) and mean probability of the group (the sum of its classes'
probabilities); per label of a label file, its images' accuracy and probability of their own class. And the images
whose top-1 changed, and the classes most hurt and most helped (by the change of their probability).
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..core.capture import output_tensor
from ..core.guard import check_model, guarded
from ..core.layers import asked_layers
from ..core.layout import layout_of, prefix_tokens
from ..core.models import model_device, model_meta
from ..core.names import get_module, resolve_layer, split_call
from ..core.progress import OnProgress, report
from ..data.collection import Collection, ImagesArg, collection
from ..data.imagenet import imagenet, wnid_of
from ..data.labels import LabelSet, collection_labels
from ..data.stream import Reading, plan_batches, stream
from ..errors import KernelvizError

__all__ = [
    "FACTORS",
    "MODES",
    "Ablation",
    "Outcome",
    "ablate",
    "ablated_logits",
    "class_outputs",
    "edited",
    "scaling_curve",
]

#: How the chosen units are changed.
MODES = ("zero", "mean", "scale")


@dataclass(frozen=True)
class Outcome:
    """What a class, group or label of images got, untouched and edited.

    Attributes:
        id: the class folder, the group's WordNet id, the label.
        name: how it is shown.
        images: its images.
        accuracy: ``(before, after)``: the share of its images whose top-1 is the class (one of the group's).
        probability: ``(before, after)``: the mean probability of the class (the group's: the sum of its classes').
    """

    id: str
    name: str
    images: int
    accuracy: tuple[float, float]
    probability: tuple[float, float]

    @property
    def change(self) -> float:
        """The change of the probability (after - before)."""
        return self.probability[1] - self.probability[0]

    def to_json(self) -> dict[str, Any]:
        """Its record (``null`` for the numbers of a class with no readable image)."""
        plain = [[None if math.isnan(v) else v for v in pair] for pair in (self.accuracy, self.probability)]
        return {"id": self.id, "name": self.name, "images": self.images, "accuracy": plain[0], "probability": plain[1]}


@dataclass
class Ablation:
    """An ablation over a collection (:func:`ablate`).

    Attributes:
        layer: the layer edited.
        units: its units edited.
        mode: ``zero``, ``mean`` or ``scale`` (:data:`MODES`).
        factor: the factor of ``scale``, else ``None``.
        images: the images read.
        skipped: unreadable files.
        matching: how the folders were matched to the model's outputs (see the module's description).
        accuracy: ``(before, after)`` over every image.
        changed: images whose top-1 changed.
        classes, groups, labels: one :class:`Outcome` each.
        top1: ``(before, after)`` ``(N,)`` int64: each image's top-1 output (``-1``: unreadable).
        own: ``(before, after)`` ``(N,)`` float32: each image's probability of its own class (``nan``: unreadable).
        means: ``(len(units),)`` the values ``mean`` held the units at, else ``None``.
    """

    layer: str
    units: list[int]
    mode: str
    factor: float | None
    images: int
    skipped: list[tuple[str, str]]
    matching: str
    accuracy: tuple[float, float]
    changed: int
    classes: list[Outcome]
    groups: list[Outcome]
    labels: list[Outcome]
    top1: tuple[torch.Tensor, torch.Tensor] = field(repr=False)
    own: tuple[torch.Tensor, torch.Tensor] = field(repr=False)
    means: list[float] | None = None

    def hurt(self, n: int = 5) -> list[Outcome]:
        """The ``n`` classes whose probability fell most, most first (only those that fell)."""
        return [o for o in sorted(self.classes, key=lambda o: o.change) if o.change < 0][:n]

    def helped(self, n: int = 5) -> list[Outcome]:
        """The ``n`` classes whose probability rose most, most first (only those that rose)."""
        return [o for o in sorted(self.classes, key=lambda o: -o.change) if o.change > 0][:n]

    def to_json(self, n: int = 10) -> dict[str, Any]:
        """The record ``kernelviz ablate -o OUT.json`` writes (``n`` classes most hurt and helped)."""

        def keyed(outcomes: list[Outcome]) -> dict[str, dict[str, Any]]:
            counts: dict[str, int] = {}
            for o in outcomes:
                counts[o.name] = counts.get(o.name, 0) + 1
            return {(o.name if counts[o.name] == 1 else f"{o.name} ({o.id})"): o.to_json() for o in outcomes}

        return {
            "layer": self.layer,
            "units": self.units,
            "mode": self.mode,
            "factor": self.factor,
            "means": self.means,
            "images": self.images,
            "skipped": [{"file": f, "error": e} for f, e in self.skipped],
            "matching": self.matching,
            "accuracy": list(self.accuracy),
            "changed": self.changed,
            "hurt": [o.name for o in self.hurt(n)],
            "helped": [o.name for o in self.helped(n)],
            "classes": keyed(self.classes),
            "groups": keyed(self.groups),
            "labels": keyed(self.labels),
        }


# --- the edit ----------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def edited(model: nn.Module, layer: str, edit: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[None]:
    """Inside the block, the output of ``layer`` (its named run) is replaced by ``edit(maps)`` at every forward
    pass, ``maps`` the output as ``(B, C, h, w)`` maps, or ``(B, C)`` (:mod:`kernelviz.core.layout`); the result flows
    on in the layer's own layout. The hooks are removed on exit, also when the block raises."""
    path = resolve_layer(model, layer)
    run = split_call(layer)[1]
    module = get_module(model, path)
    prefix = prefix_tokens(model)
    state: dict[str, Any] = {"count": 0, "size": None}

    def new_pass(m: nn.Module, inputs: tuple) -> None:
        state["count"] = 0
        x = inputs[0] if inputs else None
        state["size"] = (x.shape[-2], x.shape[-1]) if isinstance(x, torch.Tensor) and x.dim() == 4 else None

    def after(m: nn.Module, inputs: tuple, output: object) -> object:
        state["count"] += 1
        if run is not None and state["count"] != run:
            return None
        tensor = output_tensor(output, f"layer {layer!r}")
        layout = layout_of(tensor.shape, state["size"], prefix, tensor.shape[0])
        new = layout.from_map(edit(layout.to_map(tensor)), tensor)
        if isinstance(output, tuple | list):
            k = next(i for i, o in enumerate(output) if isinstance(o, torch.Tensor))
            return type(output)([*output[:k], new, *output[k + 1 :]])
        return new

    handles = [model.register_forward_pre_hook(new_pass), module.register_forward_hook(after)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _editor(units: Sequence[int], mode: str, factor: float | None, means: torch.Tensor | None):
    """The edit of ``mode`` on the channels ``units`` of ``(B, C, ...)`` maps."""
    index = torch.tensor(list(units), dtype=torch.int64)

    def edit(maps: torch.Tensor) -> torch.Tensor:
        out = maps.clone()
        at = index.to(maps.device)
        if mode == "zero":
            out[:, at] = 0
        elif mode == "mean":
            assert means is not None
            shape = (1, len(index)) + (1,) * (maps.dim() - 2)
            out[:, at] = means.to(maps.device, maps.dtype).view(shape).expand_as(out[:, at])
        else:
            out[:, at] = maps[:, at] * float(factor or 0.0)  # a factor is checked given for "scale"
        return out

    return edit


def ablated_logits(
    model: nn.Module,
    layer: str,
    units: Sequence[int],
    x: torch.Tensor,
    *,
    mode: str = "zero",
    factor: float | None = None,
    means: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's outputs for ``x`` ``(B, 3, H, W)`` (normalized as the model wants), untouched and with ``units``
    of ``layer`` edited: ``(before, after)``, each ``(B, classes)``. The model is left as it was.

    Args:
        mode: ``zero``, ``mean`` (``means``: ``(len(units),)`` the values to hold them at) or ``scale`` (times
            ``factor``).
    """
    _check_mode(mode, factor)
    if mode == "mean" and (means is None or means.shape != (len(units),)):
        raise KernelvizError(f"mode 'mean' needs one mean per unit ({len(units)})")
    with guarded(model), torch.no_grad():
        return _both(model, layer, _editor(units, mode, factor, means), x)


#: The factors :func:`scaling_curve` scales a unit by: off, halved, untouched, amplified up to 4x.
FACTORS = (0.0, 0.5, 1.0, 2.0, 3.0, 4.0)


def scaling_curve(
    model: nn.Module,
    layer: str,
    unit: int,
    image: torch.Tensor,
    *,
    factors: Sequence[float] = FACTORS,
    k: int = 3,
) -> dict[str, Any]:
    """How one image's prediction moves as one unit is scaled: the model's class probabilities for ``image``
    ``(3, S, S)`` in [0, 1] with unit ``unit`` of ``layer`` multiplied by each of ``factors`` (the model left as it
    was).

    Returns:
        ``{"factors": [...], "classes": [{"index", "name", "p": [one per factor]}]}``: the classes in the top ``k``
        at any factor, by their probability at the largest factor.
    """
    meta = model_meta(check_model(model))
    side = image.shape[-1]
    [(name, row)] = asked_layers(model, side, [layer], "scale")
    count = row.shape[0] if row.shape else 0
    if not 0 <= unit < count:
        raise KernelvizError(f"unit {unit} out of range: {name} has {count} units (0-{count - 1})")
    x = meta.normalize(image[None].to(model_device(model)))
    probs = []
    with guarded(model), torch.no_grad():
        for f in factors:
            with edited(model, name, _editor([unit], "scale", float(f), None)):
                logits = output_tensor(model(x)).float()
            if logits.dim() != 2:
                raise KernelvizError(
                    f"the model's output is {tuple(logits.shape[1:])} per image: it reads class scores"
                )
            probs.append(logits.softmax(1)[0].cpu())
    p = torch.stack(probs)  # (F, classes)
    shown = sorted({int(c) for row_p in p for c in row_p.topk(min(k, p.shape[1])).indices}, key=lambda c: -p[-1, c])
    names = list(meta.categories)
    return {
        "layer": name,
        "unit": unit,
        "factors": [float(f) for f in factors],
        "classes": [
            {"index": c, "name": names[c] if c < len(names) else str(c), "p": [float(v) for v in p[:, c]]}
            for c in shown
        ],
    }


def _check_mode(mode: str, factor: float | None) -> None:
    """Refuse an unknown mode, a ``scale`` without a finite factor, a factor given to another mode."""
    if mode not in MODES:
        raise KernelvizError(f"unknown mode {mode!r}: choose from {', '.join(MODES)}")
    if mode == "scale" and (factor is None or not math.isfinite(factor)):
        raise KernelvizError(f"mode 'scale' needs a finite factor (got {factor})")
    if mode != "scale" and factor is not None:
        raise KernelvizError(f"a factor goes with mode 'scale', not {mode!r}")


# --- classes ----------------------------------------------------------------------------------------------------


def _normal(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", name).strip().lower()


def class_outputs(found: Collection, outputs: int, categories: Sequence[str] = ()) -> tuple[list[int], str]:
    """The model output of each class of ``found`` (an ``ImageFolder`` collection), and how they were matched (see the
    module's description).

    Raises:
        KernelvizError: the collection has no classes, or they cannot be matched to the model's outputs.
    """
    if found.classes is None:
        raise KernelvizError(
            "the images have no classes: give a folder with one subfolder per class (ImageFolder), so that accuracy "
            "can be measured"
        )
    wnids = [wnid_of(c) for c in found.classes]
    if outputs == 1000 and all(w is not None for w in wnids):
        table = imagenet()
        index = [table.index(w) for w in wnids if w is not None]
        if all(i is not None for i in index):
            return [int(i) for i in index if i is not None], "folders named by WordNet id: their ImageNet-1k index"
    if categories:
        by_name: dict[str, int] = {}
        for i, c in enumerate(categories):
            by_name.setdefault(_normal(c), i)
        shown = found.names or found.classes
        matched = [by_name.get(_normal(s), by_name.get(_normal(c))) for s, c in zip(shown, found.classes, strict=True)]
        missing = [c for c, m in zip(found.classes, matched, strict=True) if m is None]
        if not missing:
            return [int(m) for m in matched if m is not None], "folders matched by name to the model's categories"
        if len(missing) < len(found.classes):
            raise KernelvizError(
                f"{len(missing)} class folder(s) name no category of the model: {', '.join(missing[:5])} (name the "
                "folders as the model's categories, or by WordNet id for an ImageNet model)"
            )
    if len(found.classes) == outputs:
        return list(range(outputs)), "folder i of the sorted folders is output i (as many folders as outputs)"
    raise KernelvizError(
        f"cannot tell which of the model's {outputs} outputs each of the {len(found.classes)} class folders is: name "
        "the folders by WordNet id (n01440764) for an ImageNet model, as the model's categories, or give one folder "
        "per output"
    )


# --- the ablation -----------------------------------------------------------------------------------------------


def ablate(
    model: nn.Module,
    layer: str,
    units: Sequence[int],
    images: ImagesArg,
    *,
    mode: str = "zero",
    factor: float | None = None,
    label_file: str | None = None,
    batch_size: int | None = None,
    workers: int | None = None,
    size: int | None = None,
    progress: OnProgress | None = None,
) -> Ablation:
    """Switch ``units`` of ``layer`` off (``zero``), hold them at their mean over the collection (``mean``) or
    multiply them by ``factor`` (``scale``), and measure what the network loses on ``images`` (see the module's
    description).

    Example::

        found = kernelviz.ablate(model, "_swish#2", [17, 40], "val/")      # zeroed
        found.accuracy, found.hurt(3)          # (0.77, 0.74), [Outcome(name='tabby', probability=(0.61, 0.22)), ...]
        kernelviz.ablate(model, "layer4", [5], "val/", mode="scale", factor=4.0)

    Args:
        units: the units (channels) of ``layer``.
        images: an ``ImageFolder`` collection (a folder, or a :class:`~kernelviz.data.collection.Collection`).
        label_file: a CSV of image paths and labels (:mod:`kernelviz.data.labels`): reported per label too.
        batch_size, workers, size: how the images are read (:class:`~kernelviz.data.stream.Reading`).
        progress: reports stage ``"mean"`` (mode ``mean``: the pass for the means), then ``"ablate"``.

    Raises:
        KernelvizError: an unknown layer or mode, a unit out of range, no classes or none that match the model's
            outputs, no readable image, outputs that are not finite.
    """
    meta = model_meta(check_model(model))
    device = model_device(model)
    reading = Reading(batch_size, workers, size).resolved(device, meta.input_size)
    side = int(reading.size or 0)
    [(name, row)] = asked_layers(model, side, [layer], "ablate")
    count = row.shape[0] if row.shape else 0
    chosen = list(dict.fromkeys(int(u) for u in units))
    if not chosen:
        raise KernelvizError("no unit to ablate: name one or more (17, 0-15, 3,5,9)")
    bad = [u for u in chosen if not 0 <= u < count]
    if bad:
        raise KernelvizError(f"unit {bad[0]} out of range: {name} has {count} units (0-{count - 1})")
    _check_mode(mode, factor)
    found = collection(images)
    labels = collection_labels(found, label_file)  # a bad label file fails before any work
    batches = plan_batches(len(found.files), int(reading.batch_size or 1))
    numbers = list(range(len(batches)))
    with guarded(model), torch.no_grad():
        probe = output_tensor(model(torch.zeros(1, 3, side, side, device=device)))
        if probe.dim() != 2:
            raise KernelvizError(f"the model's output is {tuple(probe.shape[1:])} per image: ablate reads class scores")
        outputs = probe.shape[1]
        targets, matching = class_outputs(found, outputs, meta.categories)
        means = _means(model, name, chosen, found, batches, reading, device, progress) if mode == "mean" else None
        edit = _editor(chosen, mode, factor if mode == "scale" else None, means)
        n = len(found.files)
        top1 = (torch.full((n,), -1, dtype=torch.int64), torch.full((n,), -1, dtype=torch.int64))
        own = (torch.full((n,), math.nan), torch.full((n,), math.nan))
        group_index = _group_outputs(labels, found, outputs, matching)
        group_prob = [torch.full((len(group_index), n), math.nan), torch.full((len(group_index), n), math.nan)]
        skipped: list[tuple[str, str]] = []
        done = 0
        assert found.labels is not None
        own_output = torch.tensor(targets)[found.labels]  # (N,) each image's class as an output index
        for batch in stream(found, batches, numbers, reading, device):
            skipped += [(str(f), why) for f, why in batch.skipped]
            if len(batch.readable):
                x = meta.normalize(batch.images)
                rows = batch.readable
                for k, logits in enumerate(_both(model, name, edit, x)):
                    if not torch.isfinite(logits).all():
                        raise KernelvizError(
                            f"the model's outputs are not finite {'after the edit' if k else 'on these images'} "
                            f"({', '.join(str(found.files[int(i)]) for i in rows[:3])})"
                        )
                    p = logits.float().softmax(1).cpu()
                    top1[k][rows] = p.argmax(1)
                    own[k][rows] = p.gather(1, own_output[rows][:, None])[:, 0]
                    for g, classes in enumerate(group_index):
                        group_prob[k][g, rows] = p[:, classes].sum(1)
            done += len(batch.files)
            report(progress, "ablate", done, n)
    read = top1[0] >= 0
    if not bool(read.any()):
        raise KernelvizError(f"no image could be read ({len(skipped)} unreadable)")
    hit = [(top1[k] == own_output) & read for k in (0, 1)]
    grouped = _group_labels(labels) if group_index else []
    folders = found.classes or []
    return Ablation(
        layer=name,
        units=chosen,
        mode=mode,
        factor=factor if mode == "scale" else None,
        images=int(read.sum()),
        skipped=skipped,
        matching=matching,
        accuracy=_pair([h[read].float().mean() for h in hit]),
        changed=int(((top1[0] != top1[1]) & read).sum()),
        classes=[
            _outcome(folder, shown, (found.labels == c) & read, hit, own)
            for c, (folder, shown) in enumerate(zip(folders, found.names or folders, strict=True))
        ],
        groups=[
            _outcome(
                labels.ids[j],
                labels.names[j],
                _members(labels.members[j], n) & read,
                [torch.isin(top1[k], outputs_of) & read for k in (0, 1)],
                (group_prob[0][g], group_prob[1][g]),
            )
            for g, (j, outputs_of) in enumerate(zip(grouped, group_index, strict=True))
        ],
        labels=[
            _outcome(labels.ids[j], labels.names[j], _members(labels.members[j], n) & read, hit, own)
            for j, kind in enumerate(labels.kinds)
            if kind == "label"
        ],
        top1=top1,
        own=own,
        means=None if means is None else [float(m) for m in means],
    )


def _both(model: nn.Module, layer: str, edit: Callable, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The outputs for ``x`` untouched and edited."""
    before = output_tensor(model(x))
    with edited(model, layer, edit):
        after = output_tensor(model(x))
    return before, after


def _means(
    model: nn.Module, layer: str, units: list[int], found: Collection, batches: list[list[int]], reading: Reading,
    device: torch.device, progress: OnProgress | None,
) -> torch.Tensor:  # fmt: skip
    """``(len(units),)`` each unit's mean over the collection (its maps' mean over positions, then images)."""
    index = torch.tensor(units)
    sums = torch.zeros(len(units), dtype=torch.float64)
    seen = 0

    def record(maps: torch.Tensor) -> torch.Tensor:
        nonlocal seen
        picked = maps[:, index.to(maps.device)].double()
        sums.add_(picked.flatten(2).mean(2).sum(0).cpu() if picked.dim() > 2 else picked.sum(0).cpu())
        seen += len(maps)
        return maps

    meta = model_meta(model)
    done = 0
    with edited(model, layer, record):
        for batch in stream(found, batches, list(range(len(batches))), reading, device):
            if len(batch.readable):
                model(meta.normalize(batch.images))
            done += len(batch.files)
            report(progress, "mean", done, len(found.files))
    if seen == 0:
        raise KernelvizError("no image could be read")
    return (sums / seen).float()


def _group_labels(labels: LabelSet) -> list[int]:
    return [j for j, kind in enumerate(labels.kinds) if kind == "group"]


def _group_outputs(labels: LabelSet, found: Collection, outputs: int, matching: str) -> list[torch.Tensor]:
    """Per WordNet group label, the ImageNet-1k outputs of every class under it (empty when the outputs are not
    ImageNet's)."""
    groups = _group_labels(labels)
    if not groups or outputs != 1000 or not matching.startswith("folders named by WordNet id"):
        return []  # groups are of ImageNet-1k's classes: another model's outputs are not them
    table = imagenet()
    position = {wnid: g for g, (wnid, _) in enumerate(table.groups)}
    under: list[list[int]] = [[] for _ in table.groups]
    for c, above in enumerate(table.above):
        for g in above:
            under[g].append(c)
    return [torch.tensor(under[position[labels.ids[j]]], dtype=torch.int64) for j in groups]


def _members(indices: list[int], n: int) -> torch.Tensor:
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.tensor(indices, dtype=torch.int64)] = True
    return mask


def _pair(values: Sequence[torch.Tensor | float]) -> tuple[float, float]:
    return float(values[0]), float(values[1])


def _outcome(
    id: str, name: str, mask: torch.Tensor, hits: Sequence[torch.Tensor], probs: Sequence[torch.Tensor]
) -> Outcome:
    """The outcome of the images ``mask`` ``(N,)``: ``hits`` and ``probs`` ``(N,)`` before and after."""
    count = int(mask.sum())
    if count == 0:
        return Outcome(id, name, 0, (math.nan, math.nan), (math.nan, math.nan))
    return Outcome(
        id,
        name,
        count,
        _pair([hits[k][mask].float().mean() for k in (0, 1)]),
        _pair([probs[k][mask].double().mean() for k in (0, 1)]),
    )
