"""Heatmaps: which input regions drive a class or a filter, computed with captum.

Methods (captum class in brackets):

* ``gradcam`` (``LayerGradCam``): gradients pooled over space weight the
  layer's channels; ReLU; bilinear upsampling to the input size. Default
  layer: ``relu5_3`` for VGG (the original paper's), else the last layer with
  a spatial output.
* ``guided_gradcam`` (``GuidedGradCam``): guided backprop times upsampled Grad-CAM.
* ``guided_backprop`` (``GuidedBackprop``), ``saliency`` (``Saliency``,
  the vanilla gradient), ``integrated_gradients`` (``IntegratedGradients``,
  baseline: a black image), ``smoothgrad`` (``NoiseTunnel`` over
  ``Saliency``), ``occlusion`` (``Occlusion``, gray patches).

Pixel-space attributions ``(B, 3, H, W)`` are reduced to ``(B, H, W)``: the
gradient-based maps by the maximum absolute value over color channels (as in
Simonyan et al.'s saliency), integrated gradients and occlusion by the signed
sum over channels (positive = evidence for the target).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn

from .capture import capture
from .errors import KernelvizError, close_matches
from .guard import guarded
from .layers import LOGITS, get_module, layer_names, list_layers, resolve_layer
from .models import ModelMeta, model_device, model_meta

__all__ = [
    "METHODS",
    "Attribution",
    "attribute",
    "default_layer",
    "heatmap",
    "overlay",
    "plot_heatmap",
    "predict",
]

METHODS = (
    "gradcam",
    "guided_gradcam",
    "guided_backprop",
    "saliency",
    "integrated_gradients",
    "smoothgrad",
    "occlusion",
)
_LAYER_METHODS = ("gradcam", "guided_gradcam")
_SIGNED = ("integrated_gradients", "occlusion")


class _Scored(nn.Module):
    """The user's model behind its normalization, returning either logits or one filter's mean.

    A module (not a function) because guided backprop overrides the ReLU
    modules it contains. Wrapping leaves the user's model itself untouched.
    """

    def __init__(self, model: nn.Module, meta: ModelMeta, filter_layer: str | None, filter_index: int) -> None:
        super().__init__()
        self.model = model
        self.meta = meta
        self.filter_layer = filter_layer
        self.filter_index = filter_index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.meta.normalize(x)
        if self.filter_layer is None:
            return self.model(x)  # (B, classes)
        with capture(self.model, [self.filter_layer], stop=True) as acts:
            self.model(x)
        act = acts[self.filter_layer]  # (B, C, H, W)
        if self.filter_index >= act.shape[1]:
            raise KernelvizError(
                f"filter {self.filter_index} is out of range: layer {self.filter_layer!r} "
                f"has {act.shape[1]} filters (0-{act.shape[1] - 1})"
            )
        return act[:, self.filter_index].flatten(1).mean(1)  # (B,): the filter's mean activation


@dataclass
class Attribution:
    """Heatmaps with everything needed to read and reproduce them.

    Attributes:
        maps: ``(B, H, W)`` heatmaps at the input size (raw values, not rescaled).
        method: the method name.
        layer: the layer of a layer method (``None`` for pixel methods).
        targets: the class index per image (``None`` for a filter target).
        target_names: the class names when the model has categories.
        filter: ``"layer:index"`` when a filter was explained.
        zero: ``(B,)`` true where the map is all zero (nothing to show).
        delta: ``(B,)`` integrated gradients' convergence delta (else ``None``).
        settings: method settings (baseline, steps, window, reduction...).
    """

    maps: torch.Tensor
    method: str
    layer: str | None
    targets: list[int] | None
    target_names: list[str] | None
    filter: str | None
    zero: torch.Tensor
    delta: torch.Tensor | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    def record(self, index: int) -> dict[str, Any]:
        """JSON-ready description of heatmap ``index``."""
        m = self.maps[index]
        return {
            "method": self.method,
            "layer": self.layer,
            "target": None if self.targets is None else self.targets[index],
            "target_name": None if self.target_names is None else self.target_names[index],
            "filter": self.filter,
            "all_zero": bool(self.zero[index]),
            "convergence_delta": None if self.delta is None else float(self.delta[index]),
            "min": float(m.min()),
            "max": float(m.max()),
            "settings": self.settings,
        }


def default_layer(model: nn.Module) -> str:
    """The layer Grad-CAM uses by default: ``relu5_3`` (or the last VGG ReLU) for VGG, else the
    last layer, run once per forward pass, whose output still has a spatial grid."""
    names = layer_names(model)
    relus = [n for n in names if n.startswith("relu") and "_" in n]
    if relus:
        return relus[-1]
    rows = list_layers(model, model_meta(model).input_size)
    once = {r.path for r in rows} - {r.path for i, r in enumerate(rows) if r.path in {q.path for q in rows[:i]}}
    # a module called twice in one forward (a shared activation) has no single output to explain
    spatial = [r for r in rows if len(r.shape) == 3 and r.shape[1] * r.shape[2] > 1 and r.path in once]
    if not spatial:
        raise KernelvizError("the model has no layer with a spatial output; pass layer=")
    return spatial[-1].name


def predict(model: nn.Module, images: torch.Tensor, k: int = 5) -> list[list[tuple[int, str, float]]]:
    """Top-``k`` predictions per image: ``[(index, name, probability), ...]``; names are ``""`` when unknown."""
    meta = model_meta(model)
    device = model_device(model)
    with guarded(model), torch.no_grad():
        logits = model(meta.normalize(images.to(device)))
    probs = logits.float().softmax(1).cpu()
    top = probs.topk(min(k, probs.shape[1]), dim=1)
    cats = meta.categories
    return [
        [(int(i), cats[i] if i < len(cats) else "", float(p)) for p, i in zip(ps, idx, strict=True)]
        for ps, idx in zip(top.values, top.indices, strict=True)
    ]


def _resolve_targets(
    model: nn.Module, images: torch.Tensor, target: int | str | Sequence[int | str] | None
) -> list[int]:
    b = images.shape[0]
    cats = model_meta(model).categories
    if target is None or isinstance(target, int | str):
        targets = [target] * b
    else:
        targets = list(target)
        if len(targets) != b:
            raise KernelvizError(f"{len(targets)} targets for {b} images: give one, or one per image")
    top1 = None
    out = []
    for t in targets:
        if t is None:
            if top1 is None:
                top1 = [p[0][0] for p in predict(model, images, 1)]
            out.append(top1[len(out)])
        elif isinstance(t, str) and not t.isdigit():
            lower = [c.lower() for c in cats]
            if not cats:
                raise KernelvizError(f"class name {t!r} given, but this model has no class names: use an index")
            if t.lower() not in lower:
                raise KernelvizError(f"unknown class name {t!r}.{close_matches(t, cats)}")
            out.append(lower.index(t.lower()))
        else:
            out.append(int(t))
    return out


def _check_targets(targets: list[int], classes: int) -> None:
    bad = [t for t in targets if not 0 <= t < classes]
    if bad:
        raise KernelvizError(f"target class {bad[0]} is out of range: the model has {classes} classes")


def _reduce(attr: torch.Tensor, method: str) -> torch.Tensor:
    """``(B, C, H, W)`` attribution → ``(B, H, W)``."""
    if method in _SIGNED:
        return attr.sum(1)
    return attr.abs().amax(1)


def attribute(
    model: nn.Module,
    images: torch.Tensor,
    method: str = "gradcam",
    *,
    target: int | str | Sequence[int | str] | None = None,
    filter: str | None = None,
    layer: str | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    ig_steps: int = 32,
    smooth_samples: int = 16,
    smooth_std: float = 0.15,
    occlusion_window: int | None = None,
) -> Attribution:
    """Compute heatmaps with one method for a batch of images.

    Args:
        model: the network (unchanged by the call; works with frozen weights
            and with torchvision's in-place ReLUs).
        images: ``(B, 3, H, W)`` or ``(3, H, W)`` RGB in ``[0, 1]``.
        method: one of :data:`METHODS`.
        target: class index, class name, a list with one per image, or
            ``None`` for each image's top-1 prediction.
        filter: ``"layer:index"`` to explain a filter's mean activation instead of a class.
        layer: the layer of Grad-CAM / Guided Grad-CAM (default:
            :func:`default_layer`; for a filter target, the filter's layer).
        mean, std: override the model's normalization.
        ig_steps: integration steps of integrated gradients.
        smooth_samples, smooth_std: SmoothGrad's noisy copies and their noise
            level (fraction of the [0, 1] range).
        occlusion_window: side of the gray occluding patch (default: 1/8 of
            the image side); the stride is half of it.

    Returns:
        An :class:`Attribution`; its ``maps`` are ``(B, H, W)``.
    """
    import captum.attr as ca

    if method not in METHODS:
        raise KernelvizError(
            f"unknown method {method!r}.{close_matches(method, METHODS)} Choose from: {', '.join(METHODS)}"
        )
    if images.dim() == 3:
        images = images.unsqueeze(0)
    meta = model_meta(model)
    norm = meta.with_normalization(mean, std)
    device = model_device(model)
    x = images.to(device, torch.float32)
    b, _, h, w = x.shape

    filter_layer, filter_index = None, 0
    if filter is not None:
        name, _, idx = filter.rpartition(":")
        if not name or not idx.isdigit():
            raise KernelvizError(f"cannot read filter {filter!r}: write LAYER:INDEX, e.g. conv3_2:17")
        resolve_layer(model, name)
        filter_layer, filter_index = name, int(idx)
        targets = None
        captum_target = None
    else:
        targets = _resolve_targets(model, x, target)
        captum_target = targets

    settings: dict[str, Any] = {"normalization": {"mean": norm.mean, "std": norm.std}}
    layer_name = None
    if method in _LAYER_METHODS:
        layer_name = layer or filter_layer or default_layer(model)
        path = resolve_layer(model, layer_name)
        if path == "":
            raise KernelvizError(f"{method} needs an inner layer, not {LOGITS!r}")
        settings["upsampling"] = "bilinear"

    with guarded(model), torch.inference_mode(False), torch.enable_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")  # captum's notice
        scored = _Scored(model, norm, filter_layer, filter_index)
        if filter_layer is None:
            with torch.no_grad():
                classes = scored(x[:1]).shape[1]
            _check_targets(targets, classes)
        delta = None
        inputs = x.clone().requires_grad_(True)
        try:
            if method == "gradcam":
                module = get_module(model, path)
                cam = ca.LayerGradCam(scored, module).attribute(inputs, target=captum_target, relu_attributions=True)
                maps = F.interpolate(cam, size=(h, w), mode="bilinear", align_corners=False)[:, 0]
            elif method == "guided_gradcam":
                module = get_module(model, path)
                attr = ca.GuidedGradCam(scored, module).attribute(
                    inputs, target=captum_target, interpolate_mode="bilinear"
                )
                maps = _reduce(attr, method)
            elif method == "guided_backprop":
                maps = _reduce(ca.GuidedBackprop(scored).attribute(inputs, target=captum_target), method)
            elif method == "saliency":
                maps = _reduce(ca.Saliency(scored).attribute(inputs, target=captum_target, abs=False), method)
            elif method == "integrated_gradients":
                baseline = torch.zeros_like(inputs)
                attr, delta = ca.IntegratedGradients(scored).attribute(
                    inputs,
                    baselines=baseline,
                    target=captum_target,
                    n_steps=ig_steps,
                    internal_batch_size=max(1, 2 * ig_steps // max(b, 1)),
                    return_convergence_delta=True,
                )
                maps = _reduce(attr, method)
                delta = delta.detach().float().cpu()
                settings.update(baseline="black image (all zeros in [0, 1] space)", steps=ig_steps)
            elif method == "smoothgrad":
                nt = ca.NoiseTunnel(ca.Saliency(scored))
                attr = nt.attribute(
                    inputs,
                    nt_type="smoothgrad",
                    nt_samples=smooth_samples,
                    stdevs=smooth_std,
                    target=captum_target,
                    nt_samples_batch_size=max(1, smooth_samples),
                )
                maps = _reduce(attr, method)
                settings.update(samples=smooth_samples, noise_std=smooth_std)
            else:  # occlusion
                win = occlusion_window or max(2, min(h, w) // 8)
                stride = max(1, win // 2)
                attr = ca.Occlusion(scored).attribute(
                    inputs,
                    sliding_window_shapes=(3, win, win),
                    strides=(3, stride, stride),
                    baselines=0.5,
                    target=captum_target,
                    perturbations_per_eval=8,
                )
                maps = _reduce(attr, method)
                settings.update(window=win, stride=stride, baseline="gray 0.5")
        except (AssertionError, RuntimeError) as err:
            if filter_layer is not None and layer_name is not None:
                raise KernelvizError(
                    f"{method} at {layer_name!r} failed for filter {filter}: the layer must come at or "
                    f"before the filter's layer ({err})"
                ) from err
            raise
    if method not in _LAYER_METHODS or method == "guided_gradcam":
        settings["reduction"] = "sum over color channels" if method in _SIGNED else "max |.| over color channels"
    maps = maps.detach().float().cpu()
    zero = maps.flatten(1).abs().amax(1) == 0
    cats = meta.categories
    names = None if targets is None or not cats else [cats[t] if t < len(cats) else "" for t in targets]
    return Attribution(
        maps=maps,
        method=method,
        layer=layer_name,
        targets=targets,
        target_names=names,
        filter=filter,
        zero=zero,
        delta=delta,
        settings=settings,
    )


def heatmap(
    model: nn.Module,
    images: torch.Tensor,
    method: str = "gradcam",
    *,
    target: int | str | Sequence[int | str] | None = None,
    layer: str | None = None,
    filter: str | None = None,
    **kwargs: Any,
) -> torch.Tensor:
    """Heatmaps ``(B, H, W)`` at the input size; see :func:`attribute` for the arguments."""
    return attribute(model, images, method, target=target, layer=layer, filter=filter, **kwargs).maps


# -- pictures -----------------------------------------------------------------------------------


def _limits(maps: Sequence[torch.Tensor], signed: bool, clip: float = 99.5) -> tuple[float, float]:
    """Display range: up to the ``clip`` percentile of ``|map|`` (a few extreme pixels must not wash
    out the rest), symmetric for signed maps; ``(0, 1)`` for all-zero maps."""
    values = torch.cat([m.detach().abs().flatten().float().cpu() for m in maps]) if maps else torch.zeros(1)
    peak = float(torch.quantile(values[:: max(1, values.numel() // 1_000_000)], clip / 100)) if clip < 100 else 0.0
    peak = peak or float(values.max()) or 1.0
    return (-peak, peak) if signed else (0.0, peak)


def _cmap(cmap: str | None, signed: bool) -> str:
    return cmap or ("RdBu_r" if signed else "jet")


def overlay(
    image: torch.Tensor,
    heat: torch.Tensor,
    *,
    ax: plt.Axes | None = None,
    cmap: str | None = None,
    alpha: float = 0.5,
    vmin: float | None = None,
    vmax: float | None = None,
    title: str | None = None,
    colorbar: bool = True,
) -> Figure:
    """Draw ``heat`` ``(H, W)`` over ``image`` ``(3, H, W)`` RGB in ``[0, 1]``.

    The color range defaults to ``0..p`` for non-negative maps (``jet``) and a
    symmetric ``-p..p`` for signed ones (``RdBu_r``: red for, blue against),
    ``p`` the 99.5th percentile of ``|heat|``; an all-zero map draws the image
    with an empty overlay (and says so in the title) instead of failing.

    Returns:
        The figure that holds ``ax``.
    """
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.2, 3.8))
    fig = ax.figure
    signed = bool((heat < 0).any())
    lo, hi = _limits([heat], signed)
    vmin = lo if vmin is None else vmin
    vmax = hi if vmax is None else vmax
    ax.imshow(image.permute(1, 2, 0).clamp(0, 1).cpu().numpy())
    mappable = ax.imshow(heat.cpu().numpy(), cmap=_cmap(cmap, signed), alpha=alpha, vmin=vmin, vmax=vmax)
    if bool((heat == 0).all()):
        title = f"{title or ''} (all-zero map)".strip()
    if title:
        ax.set_title(title, fontsize=9)
    ax.axis("off")
    if colorbar:
        fig.colorbar(mappable, ax=ax, fraction=0.046, pad=0.03)
    return fig


def plot_heatmap(
    images: torch.Tensor,
    maps: Sequence[torch.Tensor] | torch.Tensor,
    *,
    titles: Sequence[str] | None = None,
    scale: str = "per-map",
    cmap: str | None = None,
    alpha: float = 0.5,
    fig: Figure | None = None,
) -> Figure:
    """Several heatmaps side by side: one row per image, the image then one overlay per map.

    Args:
        images: ``(B, 3, H, W)`` in ``[0, 1]``.
        maps: a list of ``(B, H, W)`` tensors (one per method), or one such tensor.
        titles: one column title per map.
        scale: ``"per-map"`` (each overlay its own range) or ``"shared"``
            (one range for all, so strengths compare; one colorbar).
        cmap: colormap; default ``jet`` for non-negative maps, ``RdBu_r`` for signed ones.
    """
    if isinstance(maps, torch.Tensor):
        maps = [maps]
    if scale not in ("per-map", "shared"):
        raise KernelvizError(f"scale must be 'per-map' or 'shared', got {scale!r}")
    images = images.unsqueeze(0) if images.dim() == 3 else images
    b, cols = images.shape[0], len(maps) + 1
    fig = fig or plt.figure(figsize=(3.3 * cols, 3.0 * b + 0.4))
    axes = fig.subplots(b, cols, squeeze=False)
    signed = any(bool((m < 0).any()) for m in maps)
    shared = _limits([m for ms in maps for m in ms], signed)
    for i in range(b):
        axes[i, 0].imshow(images[i].permute(1, 2, 0).clamp(0, 1).cpu().numpy())
        axes[i, 0].axis("off")
        if i == 0:
            axes[i, 0].set_title("input", fontsize=9)
        for j, ms in enumerate(maps):
            lim = shared if scale == "shared" else (None, None)
            overlay(
                images[i],
                ms[i],
                ax=axes[i, j + 1],
                cmap=cmap,
                alpha=alpha,
                vmin=lim[0],
                vmax=lim[1],
                title=(titles[j] if titles else None) if i == 0 else None,
                colorbar=scale == "per-map",
            )
    if scale == "shared":
        mappable = plt.cm.ScalarMappable(norm=plt.Normalize(*shared), cmap=_cmap(cmap, signed))
        fig.colorbar(mappable, ax=axes.ravel().tolist(), fraction=0.02, pad=0.02, label="attribution (shared scale)")
    return fig
