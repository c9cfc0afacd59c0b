"""The class-activation-map family: a layer's channels, weighted, summed, rectified and upsampled.

Every method reads the activations ``A`` ``(B, K, h, w)`` of one layer and weights its ``K`` channels by
how much they matter to the target score ``y``:

* ``gradcam`` (Selvaraju et al., 2017): the spatial mean of the gradient ``dy/dA``.
* ``gradcam++`` (Chattopadhay et al., 2018): positive gradients weighted per position by
  ``g^2 / (2 g^2 + sum(A) g^3)`` (the closed form for an exponential score).
* ``xgradcam`` (Fu et al., 2020): ``sum(g * A) / sum(A)`` per channel.
* ``hirescam`` (Draelos and Carin, 2020): no pooling, ``g * A`` summed over channels position by position
  (faithful to the score for a network whose head is global pooling and a linear layer).
* ``layercam`` (Jiang et al., 2021): ``relu(g) * A`` position by position.
* ``scorecam`` (Wang et al., 2020): no gradient; each channel, upsampled and scaled to ``[0, 1]``, masks the
  image (towards a baseline), and the target's score on the masked image, softmaxed over channels, is the
  channel's weight. ``K`` forward passes per image.
* ``ablationcam`` (Desai and Ramaswamy, 2020): no gradient; each channel is zeroed in turn and the relative
  drop of the score, ``(y - y_k) / |y|``, is its weight. ``K`` forward passes per image.
* ``eigencam`` (Muhammad and Yeasin, 2020): no gradient and no target; the first principal component of the
  activations (their projection on it, the sign chosen to agree with the channel sum).

Options shared by all of them: ``eigen_smooth`` replaces the sum of the weighted channels by their first
principal component (less noise, as pytorch-grad-cam proposes); ``aug_smooth`` averages the maps of the
image flipped and rescaled (x0.875, x1, x1.125), each mapped back onto the image.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from ..core.capture import output_tensor
from ..core.layout import layout_of
from ..errors import KernelvizError

__all__ = ["CAM_METHODS", "GRADIENT_CAMS", "cam", "layer_activations"]

#: CAMs whose channel weights come from the gradient of the target.
GRADIENT_CAMS = ("gradcam", "gradcam++", "xgradcam", "hirescam", "layercam")
#: Every CAM method.
CAM_METHODS = (*GRADIENT_CAMS, "scorecam", "ablationcam", "eigencam")

_EPS = 1e-7


class Score(Protocol):
    """The target score of images: a class logit or a filter's mean activation."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W) -> (B,)``: each image's own target."""

    def for_image(self, x: torch.Tensor, index: int) -> torch.Tensor:
        """``(n, 3, H, W) -> (n,)``: every row scored for the target of image ``index``."""


def _with_first(output: object, tensor: torch.Tensor) -> object:
    """``output`` with the tensor :func:`output_tensor` reads in it replaced by ``tensor``."""
    if isinstance(output, tuple | list):
        k = next(i for i, o in enumerate(output) if isinstance(o, torch.Tensor))
        return type(output)([*output[:k], tensor, *output[k + 1 :]])
    return tensor


@contextlib.contextmanager
def _layer_hook(
    module: nn.Module,
    at_input: bool,
    edit: Callable[[torch.Tensor], torch.Tensor] | None = None,
    *,
    size: tuple[int, int] | None = None,
    prefix: int | None = None,
) -> Iterator[list[torch.Tensor]]:
    """Inside the block, the tensor the module takes in (``at_input``) or gives out is appended to the
    yielded list at each call, as ``(B, K, h, w)`` maps (:mod:`kernelviz.core.layout`: a transformer's tokens for
    an image of ``size`` with ``prefix`` tokens before the patches, or a channels-last map, are read as maps);
    ``edit`` may replace the maps (its result flows on through the network in the layer's own layout)."""
    seen: list[torch.Tensor] = []

    def read(tensor: torch.Tensor) -> torch.Tensor | None:
        """The maps of ``tensor`` appended; what flows on instead of ``tensor`` (``None``: ``tensor`` itself)."""
        layout = layout_of(tensor.shape, size, prefix)
        maps = layout.to_map(tensor)
        seen.append(maps)
        if edit is not None:
            maps = edit(maps)
        elif layout.kind in ("map", "other"):
            return None
        # the maps, back in the layer's layout, flow on: the score then depends on them (their gradient exists)
        return layout.from_map(maps, tensor)

    def before(m: nn.Module, inputs: tuple) -> tuple | None:
        new = read(inputs[0])
        return None if new is None else (new, *inputs[1:])

    def after(m: nn.Module, inputs: tuple, output: object) -> object:
        new = read(output_tensor(output))
        return None if new is None else _with_first(output, new)

    handle = module.register_forward_pre_hook(before) if at_input else module.register_forward_hook(after)
    try:
        yield seen
    finally:
        handle.remove()


def layer_activations(
    score: Score,
    module: nn.Module,
    x: torch.Tensor,
    at_input: bool = False,
    grads: bool = True,
    prefix: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The layer's activations ``A`` and, with ``grads``, the gradient of the summed scores on them.

    Args:
        score: the target score of each image.
        module: the layer; ``at_input`` reads what it takes in instead of what it gives out.
        x: ``(B, 3, H, W)``.
        prefix: the model's tokens before its patch tokens (:func:`~kernelviz.core.layout.prefix_tokens`), for a
            transformer layer.

    Returns:
        ``A`` and ``dy/dA``, both ``(B, K, h, w)`` and detached (``None`` for the gradient without ``grads``).
    """
    with _layer_hook(module, at_input, size=(x.shape[-2], x.shape[-1]), prefix=prefix) as seen:
        if grads:
            y = score(x)
        else:
            with torch.no_grad():
                y = score(x)
    acts = seen[0]
    if not grads:
        return acts.detach(), None
    (g,) = torch.autograd.grad(y.sum(), acts)
    return acts.detach(), g.detach()


def _first_component(weighted: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Projection of each position's ``K`` values on their first principal component.

    ``weighted`` is ``(B, K, h, w)``; the sign of each map is chosen so that it correlates positively with
    ``reference`` ``(B, h, w)`` (a principal component has no sign of its own). Returns ``(B, h, w)``.
    """
    b, _, h, w = weighted.shape
    flat = weighted.flatten(2).transpose(1, 2).double()  # (B, hw, K)
    centred = flat - flat.mean(1, keepdim=True)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)  # vh: (B, min, K)
    proj = (centred @ vh[:, 0, :, None])[..., 0]  # (B, hw)
    ref = reference.flatten(1).double()
    ref = ref - ref.mean(1, keepdim=True)
    sign = torch.where((proj * ref).sum(1) < 0, -1.0, 1.0).to(proj)
    return (proj * sign[:, None]).view(b, h, w).to(weighted.dtype)


def _combine(weighted: torch.Tensor, eigen_smooth: bool) -> torch.Tensor:
    """``(B, K, h, w)`` weighted activations → ``(B, h, w)``, rectified."""
    summed = weighted.sum(1)
    return torch.relu(_first_component(weighted, summed) if eigen_smooth else summed)


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def _scorecam_weights(
    score: Score, acts: torch.Tensor, x: torch.Tensor, baseline: torch.Tensor, batch: int
) -> torch.Tensor:
    b, k = acts.shape[:2]
    masks = F.interpolate(acts, size=x.shape[-2:], mode="bilinear", align_corners=False)  # (B, K, H, W)
    lo = masks.flatten(2).amin(2)[..., None, None]
    hi = masks.flatten(2).amax(2)[..., None, None]
    masks = (masks - lo) / (hi - lo).clamp(min=_EPS)  # each channel scaled to [0, 1]
    scores = torch.empty(b, k)
    with torch.no_grad():
        for i in range(b):
            for part in _chunks(k, batch):
                m = masks[i, part, None]  # (n, 1, H, W)
                mixed = baseline[i] + m * (x[i] - baseline[i])  # the channel keeps the image, elsewhere the baseline
                scores[i, part] = score.for_image(mixed, i).float().cpu()
    return scores.softmax(1).to(acts)


def _ablation_weights(
    score: Score,
    module: nn.Module,
    at_input: bool,
    acts: torch.Tensor,
    x: torch.Tensor,
    batch: int,
    prefix: int | None = None,
) -> torch.Tensor:
    """``(B, K)``: the relative drop of each image's score when each channel is zeroed.

    The layers before ``module`` run once per chunk on the single image; the hook widens the batch there to
    one copy per ablated channel, so only the rest of the network runs ``K`` times. A network that joins a
    later tensor with an earlier one by concatenation cannot take the widened batch: then every copy
    runs the whole network.
    """
    b, k = acts.shape[:2]
    weights = torch.empty(b, k)
    size = (x.shape[-2], x.shape[-1])
    with torch.no_grad():
        full = score(x).float().cpu()  # (B,)
        widen = True
        for i in range(b):
            for part in _chunks(k, batch):
                channels = torch.arange(part.start, part.stop)

                def zero_one(t: torch.Tensor, channels: torch.Tensor = channels) -> torch.Tensor:
                    t = t.expand(len(channels), *t.shape[1:]).clone()
                    t[torch.arange(len(channels)), channels] = 0
                    return t

                one = x[i : i + 1]
                ablated = None
                if widen:
                    try:
                        with _layer_hook(module, at_input, zero_one, size=size, prefix=prefix):
                            ablated = score.for_image(one, i)
                        widen = ablated.shape[0] == len(channels)
                    except RuntimeError:
                        widen = False
                if not widen:
                    with _layer_hook(module, at_input, zero_one, size=size, prefix=prefix):
                        ablated = score.for_image(one.expand(len(channels), -1, -1, -1), i)
                assert ablated is not None
                weights[i, part] = (full[i] - ablated.float().cpu()) / full[i].abs().clamp(min=_EPS)
    return weights.to(acts)


def _cam_once(
    method: str,
    score: Score,
    module: nn.Module,
    x: torch.Tensor,
    at_input: bool,
    eigen_smooth: bool,
    baseline: torch.Tensor,
    batch: int,
    prefix: int | None,
) -> torch.Tensor:
    """One CAM ``(B, h, w)`` at the layer's resolution."""
    grads = method in GRADIENT_CAMS
    acts, g = layer_activations(score, module, x, at_input, grads=grads, prefix=prefix)
    if acts.dim() != 4:
        raise ValueError(f"a CAM needs (B, K, h, w) activations, got {tuple(acts.shape)}")
    if method == "eigencam":
        return torch.relu(_first_component(acts, acts.sum(1)))
    if g is not None:
        if method == "gradcam":
            weighted = g.mean((2, 3), keepdim=True) * acts
        elif method == "gradcam++":
            g2, g3 = g.pow(2), g.pow(3)
            denom = 2 * g2 + acts.sum((2, 3), keepdim=True) * g3
            alpha = g2 / torch.where(denom != 0, denom, torch.ones_like(denom))
            weighted = (alpha * torch.relu(g)).sum((2, 3), keepdim=True) * acts
        elif method == "xgradcam":
            weighted = (g * acts).sum((2, 3), keepdim=True) / (acts.sum((2, 3), keepdim=True) + _EPS) * acts
        elif method == "hirescam":
            weighted = g * acts
        else:  # layercam
            weighted = torch.relu(g) * acts
        return _combine(weighted, eigen_smooth)
    if method == "scorecam":
        w = _scorecam_weights(score, acts, x, baseline, batch)
    else:
        w = _ablation_weights(score, module, at_input, acts, x, batch, prefix)
    return _combine(w[..., None, None] * acts, eigen_smooth)


def cam(
    method: str,
    score: Score,
    module: nn.Module,
    x: torch.Tensor,
    *,
    at_input: bool = False,
    eigen_smooth: bool = False,
    aug_smooth: bool = False,
    baseline: torch.Tensor | None = None,
    batch: int = 64,
    prefix: int | None = None,
) -> torch.Tensor:
    """A CAM of each image, upsampled (bilinear) to the image size.

    Args:
        method: one of :data:`CAM_METHODS`.
        score: each image's target score (logit or filter mean).
        module: the layer read; ``at_input`` reads what it takes in.
        x: ``(B, 3, H, W)`` images in ``[0, 1]``.
        baseline: ``(B, 3, H, W)``, what Score-CAM masks the image towards (default black).
        batch: forward passes per batch for Score-CAM and Ablation-CAM.
        prefix: for a transformer layer, the tokens before the patch tokens (class, distillation, registers: see
            :func:`~kernelviz.core.layout.prefix_tokens`); its tokens are read as ``(B, K, h, w)`` maps of patches.

    Returns:
        ``(B, H, W)``, non-negative.
    """
    h, w = x.shape[-2:]
    base = torch.zeros_like(x) if baseline is None else baseline

    def at(images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        small = _cam_once(method, score, module, images, at_input, eigen_smooth, reference, batch, prefix)
        return F.interpolate(small[:, None], size=(h, w), mode="bilinear", align_corners=False)[:, 0]

    if not aug_smooth:
        return at(x, base)
    maps = []
    for flip in (False, True):
        for factor in (1.0, 0.875, 1.125):
            side = (max(8, round(h * factor)), max(8, round(w * factor)))
            images = F.interpolate(x, size=side, mode="bilinear", align_corners=False, antialias=True)
            ref = F.interpolate(base, size=side, mode="bilinear", align_corners=False, antialias=True)
            if flip:
                images, ref = images.flip(-1), ref.flip(-1)
            try:
                small = _cam_once(method, score, module, images, at_input, eigen_smooth, ref, batch, prefix)
            except (AssertionError, RuntimeError) as err:
                if factor == 1.0:
                    raise
                raise KernelvizError(
                    f"aug_smooth rescales the image to {side[1]}x{side[0]} px, and the model refuses it (a fixed "
                    f"input size, as a vision transformer's): leave aug_smooth out (--aug-smooth) ({err})"
                ) from err
            if flip:
                small = small.flip(-1)
            maps.append(F.interpolate(small[:, None], size=(h, w), mode="bilinear", align_corners=False)[:, 0])
    return torch.stack(maps).mean(0)
