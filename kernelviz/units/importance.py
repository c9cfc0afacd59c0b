"""What each unit matters for: the classes whose probability it carries most over a collection, for every unit of a
layer at once.

Switching every unit off one by one (:func:`~kernelviz.units.ablation.ablate`) costs one pass over the collection
per unit: 1280 passes for EfficientNet-Lite0's last feature map. This module estimates all of them in one pass, to
first order (gradient x activation, as the concepts' importance): for image ``i`` of class ``c`` and unit ``u``,
``drop[i, u] = sum over positions of dp_c/da_u * a_u``, the first-order change of the image's probability of its
own class when ``a_u`` goes to 0. A class's value for a unit is the mean over its images; a WordNet group's (and a
label's) the mean over its images of the same own-class drop (not of the group's summed probability, which would
need one backward pass per group). How well the estimate ranks what exact ablation finds is measured in
``benchmarks/bench_ablation.py importance`` (rank correlation per unit over the classes).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..core.capture import output_tensor
from ..core.guard import check_model, guarded
from ..core.layers import asked_layers
from ..core.models import model_device, model_meta
from ..core.progress import OnProgress, report
from ..data.collection import ImagesArg, collection
from ..data.labels import collection_labels
from ..data.stream import Reading, plan_batches, stream
from ..errors import KernelvizError
from .ablation import class_outputs, edited

__all__ = ["ESTIMATE", "Importance", "exact_drops", "unit_importance"]

#: How the record says what the values are.
ESTIMATE = (
    "first-order estimate (gradient x activation) of the drop of each image's probability of its own class when the "
    "unit is switched off, averaged over the class's (group's, label's) images"
)


@dataclass(frozen=True)
class Importance:
    """Every unit's estimated importance for every class, group and label of a collection (:func:`unit_importance`).

    Attributes:
        layer: the layer.
        names: ``[classes..., groups..., labels...]``: how each column is shown.
        ids: the same: class folder, group WordNet id, label.
        kinds: the same: ``"class"``, ``"group"`` or ``"label"``.
        images: ``(K,)`` images read of each column.
        drop: ``(U, K)`` float32: per unit, the mean estimated drop of the own-class probability over each column's
            images (positive: the unit carries it; negative: the unit works against it).
        per_image: ``(N, U)`` float32: each image's estimated drop (``nan``: unreadable).
        matching: how the folders were matched to the model's outputs.
    """

    layer: str
    names: list[str]
    ids: list[str]
    kinds: list[str]
    images: torch.Tensor
    drop: torch.Tensor
    per_image: torch.Tensor
    matching: str

    def top(self, unit: int, kind: str = "class", n: int = 5) -> list[tuple[str, str, float, int]]:
        """The ``n`` columns of ``kind`` whose probability unit ``unit`` carries most, largest first: ``(id,
        name, estimated drop, images)``."""
        cols = [j for j, k in enumerate(self.kinds) if k == kind]
        if not cols:
            return []
        values = self.drop[unit, cols]
        order = values.argsort(descending=True, stable=True)[:n].tolist()
        return [(self.ids[cols[j]], self.names[cols[j]], float(values[j]), int(self.images[cols[j]])) for j in order]

    def carried(self, unit: int) -> float:
        """The unit's largest estimated drop over the classes (what the layer page sorts by)."""
        found = self.top(unit, "class", 1)
        return found[0][2] if found else math.nan

    def unit_json(self, unit: int, n: int = 5) -> dict[str, Any]:
        """The unit's ``"matters_for"`` entry of ``units.json``: the ``n`` classes, groups and labels it carries most
        (those with an estimated drop above 0)."""

        def rows(kind: str) -> list[dict[str, Any]]:  # only what it carries: a drop above 0
            return [
                {"id": i, "name": name, "drop": round(v, 6), "images": k}
                for i, name, v, k in self.top(unit, kind, n)
                if v > 0
            ]

        return {"estimate": ESTIMATE, "classes": rows("class"), "groups": rows("group"), "labels": rows("label")}


def unit_importance(
    model: nn.Module,
    layer: str,
    images: ImagesArg,
    *,
    label_file: str | None = None,
    batch_size: int | None = None,
    workers: int | None = None,
    size: int | None = None,
    progress: OnProgress | None = None,
) -> Importance:
    """Estimate, for every unit of ``layer``, how much each class's probability rests on it over ``images``, in
    one pass with one backward per batch (see the module's description). The model is left as it was.

    Example::

        found = kernelviz.unit_importance(model, "_swish#2", "val/")
        found.top(17)        # [('n02085620', 'Chihuahua', 0.031, 1), ...]: the classes unit 17 carries most

    Args:
        images: an ``ImageFolder`` collection (classes matched to the outputs as :func:`~kernelviz.ablate` does).
        label_file: a CSV of image paths and labels: columns per label too.
        batch_size, workers, size: how the images are read (:class:`~kernelviz.data.stream.Reading`).
        progress: reports stage ``"importance"`` (images done).

    Raises:
        KernelvizError: an unknown layer, a collection without classes or none matching the outputs, no readable
            image, outputs or gradients that are not finite.
    """
    meta = model_meta(check_model(model))
    device = model_device(model)
    reading = Reading(batch_size, workers, size).resolved(device, meta.input_size)
    side = int(reading.size or 0)
    [(name, _)] = asked_layers(model, side, [layer], "importance")
    found = collection(images)
    labels = collection_labels(found, label_file)
    batches = plan_batches(len(found.files), int(reading.batch_size or 1))
    with guarded(model), torch.no_grad():
        probe = output_tensor(model(torch.zeros(1, 3, side, side, device=device)))
    if probe.dim() != 2:
        raise KernelvizError(f"the model's output is {tuple(probe.shape[1:])} per image: importance reads classes")
    targets, matching = class_outputs(found, probe.shape[1], meta.categories)
    assert found.labels is not None
    own_output = torch.tensor(targets)[found.labels]
    n = len(found.files)
    per_image: torch.Tensor | None = None
    held: dict[str, torch.Tensor] = {}

    def keep(maps: torch.Tensor) -> torch.Tensor:
        leaf = maps.detach().requires_grad_(True)  # the gradient stops here: the layers below are not needed
        held["maps"] = leaf
        return leaf

    done = 0
    with guarded(model), edited(model, name, keep), torch.enable_grad():
        for batch in stream(found, batches, list(range(len(batches))), reading, device):
            if len(batch.readable):
                rows = batch.readable
                logits = output_tensor(model(meta.normalize(batch.images))).float()
                p = logits.softmax(1)
                own = p.gather(1, own_output[rows].to(device)[:, None])[:, 0]
                (grad,) = torch.autograd.grad(own.sum(), held["maps"])
                maps = held["maps"].detach()
                drop = (grad * maps).flatten(2).sum(2) if maps.dim() > 2 else grad * maps  # (B, U)
                if not torch.isfinite(drop).all():
                    raise KernelvizError(f"the gradients at {name} are not finite on these images")
                if per_image is None:
                    per_image = torch.full((n, drop.shape[1]), math.nan)
                per_image[rows] = drop.float().cpu()
            done += len(batch.files)
            report(progress, "importance", done, n)
    if per_image is None:
        raise KernelvizError("no image could be read")
    read = ~per_image[:, 0].isnan()
    members = [torch.tensor(m, dtype=torch.int64) for m in labels.members]
    columns = torch.zeros(len(members), n, dtype=torch.bool)
    for j, m in enumerate(members):
        columns[j, m] = True
    columns &= read
    counts = columns.sum(1)
    drops = torch.nan_to_num(per_image).T @ columns.float().T  # (U, K) sums
    drops = drops / counts.clamp_min(1).float()
    drops[:, counts == 0] = math.nan
    return Importance(
        layer=name,
        names=list(labels.names),
        ids=list(labels.ids),
        kinds=list(labels.kinds),
        images=counts,
        drop=drops,
        per_image=per_image,
        matching=matching,
    )


def exact_drops(
    model: nn.Module, layer: str, units: Sequence[int], images: ImagesArg, **reading: Any
) -> dict[int, torch.Tensor]:
    """Per unit, the exact drop of each image's own-class probability when it alone is zeroed: ``{unit: (N,)}``
    (one pass over ``images`` per unit, :func:`~kernelviz.ablate`): what :func:`unit_importance` estimates."""
    from .ablation import ablate

    drops = {}
    for u in units:
        own = ablate(model, layer, [u], images, **reading).own  # (before, after), each (N,)
        drops[u] = own[0] - own[1]
    return drops
