"""Concepts of a layer: directions in its activation space that many images' positions are made of.

A unit of a deep layer often responds to several unrelated things; a *concept* is a direction in the layer's
channel space found by non-negative matrix factorization (NMF) of the activation vectors of many positions of many
images (Lucid's neuron groups; CRAFT, Fel et al. 2023, per class). Each position's vector ``a`` (``C``) is
approximated by ``sum_k u_k d_k``: ``d_k`` the concepts' unit directions (``(K, C)``, non-negative), ``u_k >= 0``
the position's *codes*. The module finds the concepts (:func:`find_concepts`), the codes of any activations
(:func:`concept_codes`: non-negative least squares on the directions), each concept's share of the reconstruction
and its importance for a class (gradient x code, below), and, through a dataset scan of the codes, the patches
that carry each concept.

**Importance** of concept ``k`` for a class score ``s``: the mean over images of ``sum_p u_k(p) * (grad_a s(p) .
d_k)``, the first-order part of ``s`` that the concept's codes carry (a Taylor term in the codes, as the
"gradient x input" of attribution; exact when what follows the layer is linear, as a global-average-pool and
linear head is). Positive: the concept raises the class score; negative: it lowers it.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.capture import StopForward, capture
from ..core.guard import check_images, check_model, guarded
from ..core.layers import asked_layers
from ..core.models import model_device, model_meta
from ..core.progress import OnProgress, renamed, report
from ..data.collection import ImagesArg, collection
from ..data.stream import Reading, plan_batches, stream
from ..errors import KernelvizError, NoClassesError, NonFiniteObjectiveError
from ..explain.heatmaps import check_targets, resolve_targets
from ..files.images import load_image
from .scan import UnitScan, scan_units

__all__ = [
    "IMPORTANCE",
    "Concepts",
    "Patch",
    "Sampled",
    "concept_codes",
    "concept_importance",
    "concept_maps",
    "describe",
    "error_reading",
    "find_concepts",
    "fit_concepts",
    "sample_activations",
]

#: How :func:`concept_importance` estimates a concept's importance (written into every record).
IMPORTANCE = (
    "gradient x code: the mean over the images of sum over positions of code_k * (d score / d activation . "
    "direction_k), the first-order part of the class score carried by concept k (exact for a linear head)"
)

#: Positions' codes are refined by coordinate descent until no code moves by more than this (relative to the
#: largest code of the batch), at most :data:`_SWEEPS` times.
_TOLERANCE = 1e-6
_SWEEPS = 2000


# --- the activation vectors -------------------------------------------------------------------------------------
@dataclass
class Sampled:
    """Activation vectors of a layer at sampled positions of a collection's images.

    Attributes:
        vectors: ``(N, C)`` float32, one row per sampled position.
        images: ``(N,)`` int64: the file (index into ``files``) of each row.
        positions: ``(N,)`` int64: the flat position (``row * width + col``) of each row in the layer's grid.
        grid: ``(H, W)`` of the layer's output (``(1, 1)`` without positions).
        files: the collection's files.
        per_image: positions sampled per image.
        skipped: ``(file, why)`` of the files that could not be read.
    """

    vectors: torch.Tensor
    images: torch.Tensor
    positions: torch.Tensor
    grid: tuple[int, int]
    files: list[Path]
    per_image: int
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def _grid_of(model: nn.Module, layer: str, size: int) -> tuple[int, tuple[int, int]]:
    """``(channels, (H, W))`` of ``layer``'s output."""
    (_, row), *_ = asked_layers(model, size, [layer], "concepts")
    if len(row.shape) == 3:
        return row.shape[0], (row.shape[1], row.shape[2])
    if len(row.shape) == 1:
        return row.shape[0], (1, 1)
    raise KernelvizError(f"layer {layer!r} has output {row.shape}: concepts are read from (C, H, W) or (C,) outputs")


def _positions(seed: int, image: int, count: int, per_image: int) -> torch.Tensor:
    """The sampled flat positions of image ``image``: the same whatever batch the image is read in."""
    if per_image >= count:
        return torch.arange(count)
    g = torch.Generator().manual_seed(seed * 1_000_003 + image)
    return torch.randperm(count, generator=g)[:per_image].sort().values


def sample_activations(
    model: nn.Module,
    layer: str,
    images: ImagesArg,
    *,
    samples: int = 16384,
    seed: int = 0,
    batch_size: int | None = None,
    workers: int | None = None,
    size: int | None = None,
    progress: OnProgress | None = None,
) -> Sampled:
    """The activation vectors of ``layer`` at about ``samples`` positions spread over the images' grids.

    Each image gives ``ceil(samples / images)`` positions (every position when the grid has fewer), drawn with
    ``seed`` and the image's index, so the sample does not depend on the batches.

    Args:
        progress: reports stage ``"sampling"``: the images read.

    Raises:
        KernelvizError: no image could be read, or the activations are not finite.
    """
    meta = model_meta(check_model(model))
    device = model_device(model)
    reading = Reading(batch_size, workers, size).resolved(device, meta.input_size)
    found = collection(images)
    channels, grid = _grid_of(model, layer, int(reading.size or 0))
    count = grid[0] * grid[1]
    per_image = min(count, max(1, math.ceil(samples / len(found.files))))
    n = len(found.files)
    batches = plan_batches(n, int(reading.batch_size or 1))
    vectors: list[torch.Tensor] = []
    where: list[torch.Tensor] = []
    at: list[torch.Tensor] = []
    skipped: list[tuple[Path, str]] = []
    done = 0
    with guarded(model), torch.no_grad(), capture(model, [layer], stop=True, detach=True) as acts:
        for batch in stream(found, batches, range(len(batches)), reading, device):
            skipped.extend(batch.skipped)
            if len(batch.readable):
                with contextlib.suppress(StopForward):  # raised once the layer is computed
                    model(meta.normalize(batch.images))
                out = acts[layer].float()
                out = out.flatten(2) if out.dim() == 4 else out[:, :, None]  # (B, C, H*W)
                if not torch.isfinite(out).all():
                    raise NonFiniteObjectiveError(f"the activations of {layer!r} are not finite: check the model")
                for j, i in enumerate(batch.readable.tolist()):
                    pos = _positions(seed, i, count, per_image)
                    vectors.append(out[j, :, pos.to(device)].T.cpu())
                    where.append(torch.full((len(pos),), i, dtype=torch.int64))
                    at.append(pos)
            done += len(batch.files)
            report(progress, "sampling", done, n)
    if not vectors:
        raise KernelvizError(f"none of the {n} image file(s) in {found.source} could be read")
    assert channels == vectors[0].shape[1]
    return Sampled(torch.cat(vectors), torch.cat(where), torch.cat(at), grid, found.files, per_image, skipped)


# --- the factorization ------------------------------------------------------------------------------------------
def _check_non_negative(vectors: torch.Tensor, layer: str) -> None:
    low = float(vectors.min())
    if low < 0:
        raise KernelvizError(
            f"layer {layer!r} has negative activations (down to {low:.3g}): concepts are found by a non-negative "
            f"factorization, so choose the output of a ReLU-like activation (kernelviz layers MODEL --type relu)"
        )


def fit_concepts(
    vectors: torch.Tensor, k: int, *, seed: int = 0, max_iter: int = 500, tol: float = 1e-4
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Factor ``vectors`` ``(N, C) >= 0`` as ``codes @ directions`` with scikit-learn's NMF (coordinate descent,
    NNDSVDa start, Frobenius loss, no regularization).

    Returns:
        ``(codes (N, K), directions (K, C), error)``: the directions scaled to unit norm (the codes scaled the other
        way, so the product is scikit-learn's), and the relative reconstruction error
        ``||vectors - codes @ directions|| / ||vectors||``.

    Raises:
        KernelvizError: ``k`` is out of range, a value is negative, or fewer than ``k`` directions were found.
    """
    from sklearn.decomposition import NMF

    n, c = vectors.shape
    if not 1 <= k <= min(n, c):
        raise KernelvizError(f"-k {k}: ask for 1 to {min(n, c)} concepts ({n} vectors of {c} channels)")
    if float(vectors.min()) < 0:
        raise KernelvizError("NMF needs non-negative activations")
    if float(vectors.max()) == 0:
        raise KernelvizError(
            "the activations are zero at every sampled position: nothing to factor (a dead layer, or images it "
            "does not respond to)"
        )
    x = vectors.detach().cpu().numpy()
    nmf = NMF(n_components=k, init="nndsvda", solver="cd", max_iter=max_iter, tol=tol, random_state=seed)
    codes = torch.from_numpy(nmf.fit_transform(x)).float()
    directions = torch.from_numpy(nmf.components_).float()
    norms = directions.norm(dim=1)
    if bool((norms == 0).any()) or bool((codes.sum(0) == 0).any()):
        empty = int(((norms == 0) | (codes.sum(0) == 0)).sum())
        raise KernelvizError(
            f"{empty} of the {k} concepts came out empty: these activations hold fewer independent directions; "
            f"ask fewer (-k {k - empty}) or give more images"
        )
    directions = directions / norms[:, None]
    codes = codes * norms[None, :]
    error = float((vectors.float() - codes @ directions).norm() / vectors.float().norm().clamp(min=1e-30))
    return codes, directions, error


def concept_codes(activations: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """The non-negative codes of each position's activation vector on the concepts' directions.

    Solves ``min_{u >= 0} ||a - u @ directions||`` per position by coordinate descent (what scikit-learn's
    ``NMF.transform`` solves), on the device of ``activations``.

    Args:
        activations: ``(B, C, H, W)``, ``(B, C)`` or ``(N, C)``.
        directions: ``(K, C)``.

    Returns:
        ``(B, K, H, W)`` for a 4-D input, else ``(B, K)``.
    """
    spatial = activations.dim() == 4
    b, c = activations.shape[:2]
    x = activations.float().flatten(2).transpose(1, 2).reshape(-1, c) if spatial else activations.float()
    d = directions.to(x.device, torch.float32)
    if d.shape[1] != c:
        raise KernelvizError(f"{d.shape[0]} concepts of {d.shape[1]} channels given for activations of {c} channels")
    gram = d @ d.T  # (K, K)
    target = x @ d.T  # (N, K)
    u = torch.linalg.lstsq(gram, target.T).solution.T.clamp(min=0)  # the unconstrained solution, clipped
    diagonal = gram.diagonal()
    for _ in range(_SWEEPS):
        moved = torch.zeros((), device=x.device)
        for j in range(len(d)):
            step = (target[:, j] - u @ gram[:, j]) / diagonal[j]
            new = (u[:, j] + step).clamp(min=0)
            moved = torch.maximum(moved, (new - u[:, j]).abs().max())
            u[:, j] = new
        if float(moved) <= _TOLERANCE * max(float(u.max()) if u.numel() else 0.0, 1e-30):
            break
    if not spatial:
        return u
    h, w = activations.shape[2:]
    return u.view(b, h * w, -1).transpose(1, 2).reshape(b, -1, h, w)


class ConceptReadout:
    """A scan's :class:`~kernelviz.units.scan.Readout` of a layer's concept codes: the scan then ranks the images
    for each concept as it does for each unit."""

    def __init__(self, directions: torch.Tensor) -> None:
        self.directions = directions.detach().float().cpu()
        self.units = int(directions.shape[0])
        self.key = hashlib.sha1(self.directions.numpy().tobytes()).hexdigest()[:16]

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return concept_codes(output, self.directions)


# --- importance -------------------------------------------------------------------------------------------------
def concept_importance(
    model: nn.Module,
    layer: str,
    directions: torch.Tensor,
    images: torch.Tensor,
    target: int | str | Sequence[int | str] | None = None,
    *,
    batch_size: int = 8,
) -> tuple[torch.Tensor, list[int]]:
    """Each concept's importance for the class score of each image (see the module's docstring).

    Args:
        model: the network (left unchanged).
        layer: the concepts' layer.
        directions: ``(K, C)``.
        images: ``(B, 3, H, W)`` in ``[0, 1]``.
        target: a class index or name, one per image, or ``None``: each image's top-1 prediction.

    Returns:
        ``(importance (B, K), targets)``: per image, the concepts' contributions to its target's logit.
    """
    meta = model_meta(check_model(model))
    device = model_device(model)
    targets = resolve_targets(model, images, target)
    d = directions.to(device, torch.float32)
    parts = []
    with guarded(model):
        for start in range(0, len(images), batch_size):
            x = meta.normalize(images[start : start + batch_size].to(device)).requires_grad_(True)
            with capture(model, [layer]) as acts:
                logits = model(x)
            if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
                raise NoClassesError("the model's output is not (batch, classes): concept importance needs classes")
            chosen = torch.tensor(targets[start : start + batch_size], device=device)
            check_targets(chosen.tolist(), logits.shape[1])
            a = acts[layer]
            (grad,) = torch.autograd.grad(logits.gather(1, chosen[:, None]).sum(), a)
            a, grad = a.detach().float(), grad.float()
            if a.dim() == 2:
                a, grad = a[:, :, None, None], grad[:, :, None, None]
            codes = concept_codes(a, d)  # (b, K, H, W)
            along = torch.einsum("bchw,kc->bkhw", grad, d)  # the score's gradient along each direction
            parts.append((codes * along).sum((2, 3)).cpu())
    return torch.cat(parts), targets


# --- the whole job ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Patch:
    """Where a concept is strongest in one image.

    Attributes:
        path: the image file.
        value: the concept's largest code over the image's positions.
        position: ``(row, col)`` of it in the layer's grid.
        caption: how the image is captioned (its class's name in a collection with classes, else its file name).
    """

    path: Path
    value: float
    position: tuple[int, int]
    caption: str = ""


@dataclass
class Concepts:
    """A layer's concepts over an image collection (:func:`find_concepts`).

    Attributes:
        layer: the layer.
        size: the input side the images were read at.
        grid: ``(H, W)`` of the layer's output.
        directions: ``(K, C)`` unit, non-negative directions.
        share: ``(K,)`` each concept's share of the reconstruction of the sampled vectors (sum of its part of the
            reconstructed activations over the sum of all; the shares add up to 1).
        importance: ``(K,)`` mean importance for the target class (:data:`IMPORTANCE`), or ``None`` when the model
            has no class output.
        targets: the class each image's importance was measured for.
        target_name: the target's class name, or ``"top-1 prediction"`` when each image's own was used.
        error: relative reconstruction error of the sampled vectors.
        samples: vectors the factorization was fitted on; ``per_image`` of each image.
        files: the images the concepts were found over (one class's with ``class_name``).
        class_name: the collection's class the images were chosen from, or ``None``.
        patches: per concept, the images where it is strongest, best first (from the scan of the codes).
        scan: the scan of the concept codes over ``files``: the units of ``scan.layers[layer]`` are the concepts
            (rankings by the largest, mean and smallest code; class means when the collection has classes).
        seed: the sampling and factorization seed.
    """

    layer: str
    size: int
    grid: tuple[int, int]
    directions: torch.Tensor
    share: torch.Tensor
    importance: torch.Tensor | None
    targets: list[int]
    target_name: str
    error: float
    samples: int
    per_image: int
    files: list[Path]
    class_name: str | None
    patches: list[list[Patch]]
    scan: UnitScan | None
    seed: int = 0

    @property
    def k(self) -> int:
        return int(self.directions.shape[0])

    def codes(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """The concepts' codes over the layer's grid for ``images`` ``(B, 3, H, W)`` in ``[0, 1]``: ``(B, K, h, w)``."""
        return concept_maps(model, self.layer, self.directions, images, upsample=False)

    def maps(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """Where each concept is in ``images`` ``(B, 3, H, W)``: the codes upsampled to ``(B, K, H, W)``."""
        return concept_maps(model, self.layer, self.directions, images)


def concept_maps(
    model: nn.Module, layer: str, directions: torch.Tensor, images: torch.Tensor, *, upsample: bool = True
) -> torch.Tensor:
    """Where each concept is in each image: the codes of ``layer``'s activations on ``directions`` ``(K, C)``.

    Args:
        images: ``(B, 3, H, W)`` or ``(3, H, W)`` in ``[0, 1]``.
        upsample: bilinearly upsample the codes from the layer's grid to ``(H, W)``.

    Returns:
        ``(B, K, H, W)`` (``(B, K, h, w)`` on the layer's grid without ``upsample``).
    """
    x = check_images(images)
    meta = model_meta(check_model(model))
    with guarded(model), torch.no_grad(), capture(model, [layer], stop=True, detach=True) as acts:
        model(meta.normalize(x.to(model_device(model))))  # the block ends once the layer is computed
    a = acts[layer]
    if a.dim() == 2:
        a = a[:, :, None, None]
    codes = concept_codes(a, directions).cpu()
    if not upsample:
        return codes
    return torch.nn.functional.interpolate(codes, size=x.shape[2:], mode="bilinear", align_corners=False)


def _class_target(model: nn.Module, class_name: str | None) -> int | None:
    """The model's class named like the collection's class, if there is one."""
    if class_name is None:
        return None
    cats = [c.lower() for c in model_meta(model).categories]
    if class_name.lower() in cats:
        return cats.index(class_name.lower())
    return int(class_name) if class_name.isdigit() else None


def _evenly(count: int, most: int) -> list[int]:
    """``most`` indices spread evenly over ``range(count)`` (all when ``count <= most``)."""
    if count <= most:
        return list(range(count))
    return sorted({int(i * count / most) for i in range(most)})


def find_concepts(
    model: nn.Module,
    layer: str,
    images: ImagesArg,
    k: int = 8,
    *,
    class_name: str | None = None,
    target: int | str | None = None,
    samples: int = 16384,
    seed: int = 0,
    top: int = 9,
    importance_images: int = 128,
    batch_size: int | None = None,
    workers: int | None = None,
    size: int | None = None,
    max_iter: int = 500,
    progress: OnProgress | None = None,
) -> Concepts:
    """Discover ``k`` concepts of ``layer`` over an image collection, weigh them for a class and find where each
    is strongest.

    Example::

        concepts = kernelviz.find_concepts(model, "_swish#2", "photos/", k=8)
        concepts.directions        # (8, 1280) unit, non-negative
        concepts.share             # (8,) shares of the reconstruction, adding up to 1
        concepts.patches[0][0]     # Patch(path, value, (row, col)): where concept 0 is strongest
        concepts.maps(model, x)    # (B, 8, H, W): where each concept is in new images

    Args:
        model: the network (left unchanged).
        layer: a layer with non-negative outputs (after a ReLU-like activation).
        images: a folder (class-labeled with the ``ImageFolder`` layout), a list file, files, or a
            :class:`~kernelviz.units.scan.Collection`.
        k: concepts.
        class_name: only the images of this class of the collection (CRAFT's per-class concepts); the importance
            is then for the model's class of that name when it has one.
        target: the class (index or name) the importance is measured for; default: ``class_name``'s class, else
            each image's top-1 prediction.
        samples: activation vectors to fit on (spread evenly over the images, positions drawn with ``seed``).
        seed: seeds the sampled positions and the factorization.
        top: patches kept per concept.
        importance_images: images the importance is averaged over (spread evenly over the collection).
        batch_size, workers, size: as for :func:`~kernelviz.scan_units`.
        max_iter: NMF iterations at most.
        progress: reports the stages ``"sampling"``, ``"coding"`` (the scan of the codes: images) and
            ``"importance"`` (images).

    Raises:
        KernelvizError: an unknown layer or class, negative activations, too many concepts for the data, no
            readable image.
    """
    side = size or model_meta(check_model(model)).input_size
    found = collection(images)
    if class_name is not None:
        found = found.of_class(class_name)
    if top < 1 or samples < 1 or importance_images < 0:
        raise KernelvizError(f"top and samples must be >= 1 and importance_images >= 0 (got {top}, {samples})")

    sampled = sample_activations(
        model, layer, found, samples=samples, seed=seed, batch_size=batch_size, workers=workers, size=side,
        progress=progress,
    )  # fmt: skip
    _check_non_negative(sampled.vectors, layer)
    codes, directions, error = fit_concepts(sampled.vectors, k, seed=seed, max_iter=max_iter)
    mass = codes.double().sum(0) * directions.double().sum(1)  # (K,) each concept's part of the reconstruction
    share = mass / mass.sum()
    scan = scan_units(
        model, found, [layer], k=top, batch_size=batch_size, workers=workers, size=side,
        progress=renamed(progress, "coding"), readouts={layer: ConceptReadout(directions)},
    )  # fmt: skip
    patches = [
        [Patch(path, value, pos, scan.caption(path)) for path, value, pos in scan.examples(layer, j) if pos is not None]
        for j in range(k)
    ]
    readable = sorted(set(sampled.images.tolist()))
    chosen = [readable[i] for i in _evenly(len(readable), importance_images)]
    wanted = target if target is not None else _class_target(model, class_name)
    importance: torch.Tensor | None = None
    targets: list[int] = []
    if chosen:
        report(progress, "importance", 0, len(chosen))
        x = torch.stack([load_image(sampled.files[i], side) for i in chosen])
        try:
            each, targets = concept_importance(model, layer, directions, x, wanted)
            importance = each.double().mean(0)
        except NoClassesError:  # a model without class scores: concepts without importance
            pass
        report(progress, "importance", len(chosen), len(chosen))
    cats = model_meta(model).categories
    if wanted is None:
        name = "top-1 prediction"
    else:
        index = targets[0] if targets else int(wanted) if str(wanted).isdigit() else -1
        name = cats[index] if 0 <= index < len(cats) else str(wanted)
    return Concepts(
        layer=layer,
        size=side,
        grid=sampled.grid,
        directions=directions,
        share=share,
        importance=importance,
        targets=targets,
        target_name=name,
        error=error,
        samples=len(sampled.vectors),
        per_image=sampled.per_image,
        files=sampled.files,
        class_name=class_name,
        patches=patches,
        scan=scan,
        seed=seed,
    )


def error_reading(error: float, k: int, classes: bool = True) -> str:
    """The reconstruction error in words: what it measures and, when it is high, what to do."""
    said = (
        f"reconstruction error {100 * error:.1f}%: the part of the activations (their norm) that the {k} concepts "
        "leave unexplained"
    )
    if error < 0.5:
        return said
    per_class = "find them per class (--class), or " if classes else ""
    return (
        f"{said}; that is most of it, so they describe little of the layer over these images: {per_class}ask for "
        "more (-k)"
    )


def describe(concepts: Concepts) -> dict[str, Any]:
    """The settings and sizes of a fit, JSON-ready."""
    return {
        "method": "nmf (scikit-learn NMF: coordinate descent, nndsvda start, Frobenius loss)",
        "k": concepts.k,
        "samples": concepts.samples,
        "positions_per_image": concepts.per_image,
        "images": len(concepts.files),
        "seed": concepts.seed,
        "reconstruction_error": round(concepts.error, 6),
        "importance_method": IMPORTANCE,
        "target": concepts.target_name,
    }
