"""Objectives: what the optimizer maximizes.

An :class:`Objective` maps the captured activations to one score per image,
shape ``(B,)``. **We always maximize**: a penalty is subtracted
(``channel("conv3_2", 17) - 0.05 * total_variation()``). Objectives combine
with ``+``, ``-``, unary ``-`` and multiplication or division by a number.

The activations mapping holds each layer the objective reads (keyed by the
layer name it was built with) and, under ``"input"``, the rendered image
``(B, 3, H, W)`` in ``[0, 1]`` before transforms.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

from ..core.names import LOGITS
from ..errors import KernelvizError, out_of_range

__all__ = [
    "INPUT",
    "Objective",
    "as_objective",
    "caricature",
    "channel",
    "class_logit",
    "class_logprob",
    "deepdream",
    "direction",
    "diversity",
    "l1",
    "l2",
    "merge_needs",
    "neuron",
    "proximity",
    "total_variation",
]

#: Key of the rendered image in the activations mapping.
INPUT = "input"

Acts = Mapping[str, torch.Tensor]
#: Which channels of a layer an objective reads: one for every image (int),
#: one per image (tuple, image i reads entry i), or any (None).
Need = int | tuple[int, ...] | None


def merge_needs(a: dict[str, Need], b: dict[str, Need]) -> dict[str, Need]:
    """The layers (and channels) two objectives read together: a layer read for different channels is read whole."""
    merged = dict(a)
    for layer, need in b.items():
        if layer in merged and merged[layer] != need:
            merged[layer] = None
        else:
            merged.setdefault(layer, need)
    return merged


class Objective:
    """A scalar-per-image function of activations, to be maximized.

    Args:
        fn: ``acts -> (B,)`` tensor.
        description: human-readable form, recorded with results.
        needs: the layers ``fn`` reads, each with the channels it reads (see
            :data:`Need`); lets the optimizer run only what is needed.
    """

    def __init__(self, fn: Callable[[Acts], torch.Tensor], description: str, needs: dict[str, Need]) -> None:
        self.fn = fn
        self.description = description
        self.needs = needs

    def __call__(self, acts: Acts) -> torch.Tensor:
        """Score each image: returns ``(B,)``."""
        return self.fn(acts)

    @property
    def layers(self) -> list[str]:
        """The network layers read (the rendered image excluded)."""
        return [name for name in self.needs if name != INPUT]

    def __repr__(self) -> str:
        return f"Objective({self.description})"

    def __add__(self, other: Objective | float) -> Objective:
        if isinstance(other, int | float):
            k = float(other)
            return Objective(lambda a: self(a) + k, f"{self.description} + {other}", self.needs)
        other = as_objective(other)
        return Objective(
            lambda a: self(a) + other(a),
            f"{self.description} + {other.description}",
            merge_needs(self.needs, other.needs),
        )

    __radd__ = __add__

    def __neg__(self) -> Objective:
        return Objective(lambda a: -self(a), f"-({self.description})", self.needs)

    def __sub__(self, other: Objective | float) -> Objective:
        if isinstance(other, int | float):
            return self + (-other)
        other = as_objective(other)
        return Objective(
            lambda a: self(a) - other(a),
            f"{self.description} - ({other.description})",
            merge_needs(self.needs, other.needs),
        )

    def __rsub__(self, other: float) -> Objective:
        return (-self) + other

    def __mul__(self, k: float) -> Objective:
        if not isinstance(k, int | float):
            return NotImplemented
        return Objective(lambda a: k * self(a), f"{k} * ({self.description})", self.needs)

    __rmul__ = __mul__

    def __truediv__(self, k: float) -> Objective:
        if not isinstance(k, int | float):
            return NotImplemented
        return self * (1.0 / k)


def _check_index(n: int, what: str) -> int:
    if isinstance(n, bool) or not isinstance(n, int):
        raise KernelvizError(f"{what} must be an integer, got {n!r}")
    if n < 0:
        raise KernelvizError(f"{what} must be >= 0, got {n}")
    return n


def _per_image(n: int | Sequence[int], what: str) -> Need:
    if isinstance(n, int):
        return _check_index(n, what)
    values = tuple(_check_index(int(v), what) for v in n)
    if not values:
        raise KernelvizError(f"{what}: empty list")
    return values


_INDEX_CACHE: dict[tuple[tuple[int, ...], str], tuple[torch.Tensor, torch.Tensor]] = {}


def _indices(n: tuple[int, ...], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(arange(B), tensor(n))`` on ``device``, made once per (channels, device): the optimizer asks every step."""
    key = (n, str(device))
    if key not in _INDEX_CACHE:
        if len(_INDEX_CACHE) > 256:
            _INDEX_CACHE.clear()
        _INDEX_CACHE[key] = (torch.arange(len(n), device=device), torch.tensor(n, device=device))
    return _INDEX_CACHE[key]


def _select(act: torch.Tensor, layer: str, n: Need) -> torch.Tensor:
    """Channel ``n`` of ``act`` for each image: ``(B, C, ...)`` -> ``(B, ...)``."""
    channels = act.shape[1]
    wanted = [n] if isinstance(n, int) else list(n or [])
    bad = [c for c in wanted if c >= channels]
    if bad:
        raise out_of_range("filter", bad[0], channels, f"layer {layer!r}", unit="channels")
    if isinstance(n, int):
        return act[:, n]
    assert n is not None, "objectives that read any channel do not select one"
    if len(n) != act.shape[0]:
        raise KernelvizError(f"{len(n)} channels listed for {layer!r} but the batch has {act.shape[0]} images")
    rows, index = _indices(n, act.device)
    return act[rows, index]


def channel(layer: str, n: int | Sequence[int]) -> Objective:
    """Mean activation of filter ``n`` over all positions: what "a filter's picture" maximizes.

    Args:
        layer: layer name (``"conv3_2"``, ``"features.12"``).
        n: the filter, or one filter per image of the batch.

    For a fully connected layer (``(B, C)`` output) this is unit ``n`` itself.
    """
    need = _per_image(n, "filter index")

    def fn(acts: Acts) -> torch.Tensor:
        x = _select(acts[layer], layer, need)  # (B, H, W) or (B,)
        return x.flatten(1).mean(1) if x.dim() > 1 else x

    return Objective(fn, f"channel({layer}:{n})", {layer: need})


def neuron(layer: str, n: int | Sequence[int], x: int | None = None, y: int | None = None) -> Objective:
    """Activation of filter ``n`` at one spatial position (default: the center).

    Args:
        layer: a conv layer name.
        n: the filter, or one per image.
        x, y: column and row in the layer's output grid.
    """
    need = _per_image(n, "filter index")

    def fn(acts: Acts) -> torch.Tensor:
        a = _select(acts[layer], layer, need)  # (B, H, W)
        h, w = a.shape[-2:]
        row = h // 2 if y is None else y
        col = w // 2 if x is None else x
        if not (0 <= row < h and 0 <= col < w):
            raise KernelvizError(f"position ({col}, {row}) is outside {layer!r}'s {w}x{h} grid")
        return a[:, row, col]

    where = "center" if x is None and y is None else f"x={x}, y={y}"
    return Objective(fn, f"neuron({layer}:{n} @ {where})", {layer: need})


def class_logit(n: int | Sequence[int]) -> Objective:
    """The logit (pre-softmax score) of class ``n``: a class visualization."""
    obj = channel(LOGITS, n)
    obj.description = f"class_logit({n})"
    return obj


def class_logprob(n: int | Sequence[int]) -> Objective:
    """The log-probability (log-softmax) of class ``n``.

    Unlike :func:`class_logit`, raising it also lowers the other classes' logits, so the image is
    pushed toward what tells class ``n`` apart rather than toward whatever raises every logit.
    """
    need = _per_image(n, "class index")

    def fn(acts: Acts) -> torch.Tensor:
        return _select(acts[LOGITS].log_softmax(1), LOGITS, need)  # (B, classes) -> (B,)

    # the logits are never computed one class at a time, so declaring the classes read is safe
    return Objective(fn, f"class_logprob({n})", {LOGITS: need})


def direction(
    layer: str, vector: torch.Tensor | Sequence[float] | Sequence[Sequence[float]], cosine_power: float = 0.0
) -> Objective:
    """Mean over positions of the activation's dot product with a unit direction in channel space.

    Args:
        layer: layer name.
        vector: ``(C,)`` direction, or ``(B, C)``: image ``i`` of the batch reads row ``i`` (each row normalized
            here).
        cosine_power: weigh each position's dot product by its cosine with the direction to this power (the cosine
            floored at 0.1): above 0, the image must point along the direction, not only be strong along it
            (Olah et al. 2018's "dot x cos^p"; a non-negative direction is otherwise served by any strong activation).
    """
    v = torch.as_tensor(vector, dtype=torch.float32)
    if v.dim() not in (1, 2) or not torch.isfinite(v).all() or (v.norm(dim=-1) == 0).any():
        raise KernelvizError("direction vector must be finite, non-zero, of shape (C,) or (B, C) (one per image)")
    v = v / v.norm(dim=-1, keepdim=True)
    rows = v.shape[0] if v.dim() == 2 else None

    def fn(acts: Acts) -> torch.Tensor:
        a = acts[layer]  # (B, C, ...)
        if a.shape[1] != v.shape[-1]:
            raise KernelvizError(f"direction has {v.shape[-1]} entries but {layer!r} has {a.shape[1]} channels")
        if rows is not None and a.shape[0] != rows:
            raise KernelvizError(f"{rows} directions for a batch of {a.shape[0]} images: give one per image")
        shape = (-1 if rows else 1, a.shape[1]) + (1,) * (a.dim() - 2)
        dot = (a * v.to(a.device, a.dtype).view(shape)).sum(1)  # (B, ...)
        if cosine_power:
            cos = dot / a.norm(dim=1).clamp(min=1e-8)
            dot = dot * cos.clamp(min=0.1) ** cosine_power
        return dot.flatten(1).mean(1) if dot.dim() > 1 else dot

    power = f", cos^{cosine_power:g}" if cosine_power else ""
    return Objective(fn, f"direction({layer}{power})", {layer: None})


def diversity(layer: str) -> Objective:
    """Minus each image's mean cosine similarity of Gram matrices to the other images of the batch.

    Add it (with a weight) to push the images of a batch toward different
    styles of the same feature (Olah et al., 2017). Zero for a batch of one.
    """

    def fn(acts: Acts) -> torch.Tensor:
        a = acts[layer]  # (B, C, H, W)
        b, c = a.shape[:2]
        if b < 2:
            return a.new_zeros(b)
        flat = a.reshape(b, c, -1)
        gram = F.normalize(torch.bmm(flat, flat.transpose(1, 2)).reshape(b, -1), dim=1)  # (B, C*C)
        sim = gram @ gram.T  # (B, B)
        return -(sim.sum(1) - sim.diagonal()) / (b - 1)

    return Objective(fn, f"diversity({layer})", {layer: None})


def _matched(target: torch.Tensor, a: torch.Tensor, layer: str) -> torch.Tensor:
    """``target`` ``(C, ...)`` on ``a``'s device, resized to ``a``'s spatial size ``(B, C, h, w)`` when the rendered
    image's map differs from the photo's (a random rescale of the transforms), as ``(1, C, h, w)``."""
    t = target.to(a.device, a.dtype)[None]
    if t.shape[1] != a.shape[1]:
        raise KernelvizError(f"the target has {t.shape[1]} channels but {layer!r} has {a.shape[1]}")
    if t.dim() == 4 and t.shape[-2:] != a.shape[-2:]:
        t = F.interpolate(t, size=a.shape[-2:], mode="bilinear", align_corners=False)
    return t


def caricature(layer: str, target: torch.Tensor, power: float = 1.0) -> Objective:
    """Match a photo's activation at ``layer`` as a whole: ``<a, t> / |t| x cos(a, t)^power`` over the flattened map.

    The picture shows what the layer keeps of the photo: its activations point the photo's way and are as strong
    (Lucid's caricature recipe: a dot product times a power of the cosine).

    Args:
        target: the photo's activation at ``layer``, ``(C, H, W)`` (or ``(C,)``); resized to the rendered map.
        power: the cosine's exponent (the cosine floored at 0.1); 0 is the plain dot product.
    """
    t0 = torch.as_tensor(target, dtype=torch.float32).detach()
    if not torch.isfinite(t0).all() or float(t0.norm()) == 0:
        raise KernelvizError("the caricature's target activation must be finite and not all zero")

    def fn(acts: Acts) -> torch.Tensor:
        a = acts[layer]
        t = _matched(t0, a, layer).expand_as(a)
        flat_a, flat_t = a.flatten(1), t.flatten(1)
        dot = (flat_a * flat_t).sum(1) / flat_t.norm(dim=1)
        if not power:
            return dot
        cos = dot / flat_a.norm(dim=1).clamp(min=1e-8)
        return dot * cos.clamp(min=0.1) ** power

    return Objective(fn, f"caricature({layer}, cos^{power:g})", {layer: None})


def deepdream(layer: str) -> Objective:
    """The layer's activation energy: the mean square of all its activations (DeepDream's objective: whatever the
    layer sees in the image, it is made stronger)."""

    def fn(acts: Acts) -> torch.Tensor:
        return (acts[layer].float() ** 2).flatten(1).mean(1)

    return Objective(fn, f"deepdream({layer})", {layer: None})


def proximity(layer: str, target: torch.Tensor) -> Objective:
    """How close ``layer``'s activation stays to a photo's: minus the mean squared difference over the photo's mean
    square (0 at the photo, -1 as far as an all-zero activation). Add it with a weight to keep a picture near a photo
    (feature accentuation).

    Args:
        target: the photo's activation at ``layer``, ``(C, H, W)``; resized to the rendered map.
    """
    t0 = torch.as_tensor(target, dtype=torch.float32).detach()
    scale = float((t0**2).mean())
    if not torch.isfinite(t0).all() or scale == 0:
        raise KernelvizError("the proximity target must be finite and not all zero")

    def fn(acts: Acts) -> torch.Tensor:
        a = acts[layer]
        t = _matched(t0, a, layer)
        return -((a.float() - t.float()) ** 2).flatten(1).mean(1) / scale

    return Objective(fn, f"proximity({layer})", {layer: None})


def _image_penalty(name: str, per_pixel: Callable[[torch.Tensor], torch.Tensor]) -> Objective:
    return Objective(lambda a: per_pixel(a[INPUT]).flatten(1).mean(1), name, {INPUT: None})


def l1(constant: float = 0.5) -> Objective:
    """Mean absolute difference between the image and ``constant`` (a penalty: subtract it)."""
    return _image_penalty(f"l1({constant})", lambda x: (x - constant).abs())


def l2(constant: float = 0.5) -> Objective:
    """Mean squared difference between the image and ``constant`` (a penalty: subtract it)."""
    return _image_penalty(f"l2({constant})", lambda x: (x - constant) ** 2)


def total_variation() -> Objective:
    """Mean absolute difference between neighbouring pixels (a penalty: subtract it)."""

    def fn(a: Acts) -> torch.Tensor:
        x = a[INPUT]  # (B, 3, H, W)
        dx = (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1).mean(1)
        dy = (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).mean(1)
        return dx + dy

    return Objective(fn, "total_variation()", {INPUT: None})


_SPEC = re.compile(r"^(?P<layer>[^:\s]+):(?P<n>\d+(?:,\d+)*)$")


def as_objective(spec: Objective | str) -> Objective:
    """Coerce ``"layer:N"`` (or ``"layer:N1,N2,..."``, one filter per image) to :func:`channel`."""
    if isinstance(spec, Objective):
        return spec
    if isinstance(spec, str):
        match = _SPEC.match(spec.strip())
        if match:
            ns = [int(v) for v in match["n"].split(",")]
            return channel(match["layer"], ns[0] if len(ns) == 1 else ns)
        raise KernelvizError(f"cannot read objective {spec!r}: write LAYER:FILTER, e.g. 'conv3_2:17'")
    raise KernelvizError(f"an objective must be an Objective or 'LAYER:FILTER', got {type(spec).__name__}")
