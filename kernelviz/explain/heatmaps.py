"""Heatmaps: which input regions drive a class or a filter, computed with captum.

Methods (captum class in brackets):

* ``gradcam`` (``LayerGradCam``): gradients pooled over space weight the
  layer's channels; ReLU; bilinear upsampling to the input size. Default
  layer: :func:`default_layer`, the network's last full spatial map.
* ``guided_gradcam``: guided backprop times upsampled Grad-CAM (captum's composition).
* ``guided_backprop`` and ``deconvolution`` (:mod:`kernelviz.explain.guided`: the rule applied to every
  rectifier, ReLU6/Hardtanh/LeakyReLU and functional calls included; a smooth activation such as SiLU
  is refused), ``saliency`` (``Saliency``,
  the vanilla gradient), ``integrated_gradients`` (``IntegratedGradients``,
  baseline: a black image), ``smoothgrad`` (``NoiseTunnel`` over
  ``Saliency``), ``occlusion`` (``Occlusion``, gray patches).

Pixel-space attributions ``(B, 3, H, W)`` are reduced to ``(B, H, W)``: the
gradient-based maps by the maximum absolute value over color channels (as in
Simonyan et al.'s saliency), integrated gradients and occlusion by the signed
sum over channels (positive = evidence for the target).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..core.capture import StopForward, capture, module_runs, output_tensor
from ..core.guard import guarded
from ..core.models import ModelMeta, model_device, model_meta
from ..core.names import LOGITS, get_module, layer_names, resolve_layer
from ..errors import KernelvizError, close_matches, out_of_range, unknown_choice
from .guided import rectified_gradients

__all__ = [
    "INPUT_SUFFIX",
    "METHODS",
    "SIGNED_METHODS",
    "Attribution",
    "attribute",
    "check_methods",
    "default_layer",
    "heatmap",
    "predict",
]

METHODS = (
    "gradcam",
    "guided_gradcam",
    "guided_backprop",
    "deconvolution",
    "saliency",
    "integrated_gradients",
    "smoothgrad",
    "occlusion",
)
_LAYER_METHODS = ("gradcam", "guided_gradcam")
#: A layer name ending in this means the layer's input rather than its output (``"avgpool:input"``).
INPUT_SUFFIX = ":input"

#: Methods whose maps are signed (positive = evidence for the target, negative = against).
SIGNED_METHODS = ("integrated_gradients", "occlusion")


def check_methods(methods: str | Sequence[str]) -> list[str]:
    """The methods asked for, each once, in order; an unknown one is a :class:`KernelvizError`."""
    chosen = [methods] if isinstance(methods, str) else list(methods)
    for method in chosen:
        if method not in METHODS:
            raise unknown_choice("method", method, METHODS)
    if not chosen:
        raise KernelvizError(f"no heatmap method given: choose from {', '.join(METHODS)}")
    return list(dict.fromkeys(chosen))


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
            return output_tensor(self.model(x))  # (B, classes)
        with capture(self.model, [self.filter_layer], stop=True) as acts:
            self.model(x)
        act = acts[self.filter_layer]  # (B, C, H, W)
        if self.filter_index >= act.shape[1]:
            raise out_of_range("filter", self.filter_index, act.shape[1], f"layer {self.filter_layer!r}")
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
    """The layer Grad-CAM uses by default: the network's last full spatial feature map.

    For VGG that is ``relu5_3`` (the original paper's layer). Otherwise one forward pass at the model's
    input size finds the last tensor that still has a spatial grid (more than 1x1), and names the
    outermost module that returns it, called once per forward: ResNet's ``layer4`` (the input of its
    global pooling, after the last residual addition and ReLU), DenseNet's ``features``, GoogLeNet's
    ``inception5b`` (the whole block, not one branch), EfficientNet's ``features``. When that map comes
    out of a module called several times (one activation module shared by the network), the module
    that takes it in once is named with :data:`INPUT_SUFFIX`: ``"_avg_pooling:input"``.

    Raises:
        KernelvizError: no spatial map, or one only at the start of the network (a vision transformer's
            patch embedding: Grad-CAM there says nothing about the class; pass a layer explicitly).
    """
    names = layer_names(model)
    relus = [n for n in names if n.startswith("relu") and "_" in n]
    if relus:
        return relus[-1]
    size = model_meta(model).input_size
    done: list[tuple[str, int, tuple[int, ...], int]] = []  # (path, id(output), output shape, id(input))
    calls: dict[str, int] = {}
    keep: list[torch.Tensor] = []  # keeps outputs alive so their ids stay unique

    def hook(path: str, inputs: tuple, output: object) -> None:
        calls[path] = calls.get(path, 0) + 1
        if isinstance(output, torch.Tensor):
            keep.append(output)
            done.append((path, id(output), tuple(output.shape[1:]), id(inputs[0]) if inputs else 0))

    handles = [m.register_forward_hook(lambda mod, i, o, p=p: hook(p, i, o)) for p, m in model.named_modules() if p]
    try:
        with guarded(model), torch.no_grad():
            model(torch.zeros(1, 3, size, size, device=model_device(model)))
    finally:
        for handle in handles:
            handle.remove()
    spatial = [k for k, (_, _, shape, _) in enumerate(done) if len(shape) == 3 and shape[1] * shape[2] > 1]
    if not spatial:
        raise KernelvizError("the model has no layer with a spatial output; pass layer=")
    last = spatial[-1]
    if last < len(done) // 2:
        raise KernelvizError(
            f"the last spatial map of this model is {done[last][0]!r}, near its start (a vision transformer's "
            "patch embedding?): Grad-CAM there does not explain a class; pass a layer explicitly (--layer)"
        )
    tensor = done[last][1]
    aliases = {v: k for k, v in names.items() if k != v}
    owners = [path for path, ident, _, _ in done if ident == tensor and calls[path] == 1]
    if owners:
        path = min(owners, key=lambda p: (p.count("."), len(p)))
        return aliases.get(path, path)
    # only a module called several times returns it (one activation module shared by the whole network):
    # the module that takes it in, once, is the global pooling; explain its input
    takers = [path for path, _, _, source in done if source == tensor and calls[path] == 1]
    if not takers:
        raise KernelvizError(f"the last spatial map comes from {done[last][0]!r}, called more than once; pass layer=")
    return f"{aliases.get(takers[0], takers[0])}{INPUT_SUFFIX}"


def _target_score(scored: nn.Module, target: list[int] | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """``x -> (B,)``: each image's target logit, or the filter score a filter-explaining model returns."""

    def score(x: torch.Tensor) -> torch.Tensor:
        out = scored(x)  # (B, classes) or (B,)
        if target is None:
            return out
        return out.gather(1, torch.tensor(target, device=out.device).view(-1, 1))[:, 0]

    return score


def _layer_shape(model: nn.Module, x: torch.Tensor, path: str, at_input: bool) -> torch.Size:
    """The shape of the input (``at_input``) or output of the module at ``path`` for ``x``; the forward
    stops there."""
    module = get_module(model, path)
    seen: list[torch.Size] = []

    def before(m: nn.Module, inputs: tuple) -> None:
        seen.append(inputs[0].shape)
        raise StopForward

    def after(m: nn.Module, inputs: tuple, output: object) -> None:
        seen.append(output_tensor(output, f"layer {path!r}").shape)
        raise StopForward

    handle = module.register_forward_pre_hook(before) if at_input else module.register_forward_hook(after)
    try:
        with guarded(model), torch.no_grad(), contextlib.suppress(StopForward):
            model(x)
    finally:
        handle.remove()
    return seen[0]


def predict(model: nn.Module, images: torch.Tensor, k: int = 5) -> list[list[tuple[int, str, float]]]:
    """Top-``k`` predictions per image: ``[(index, name, probability), ...]``; names are ``""`` when unknown."""
    meta = model_meta(model)
    device = model_device(model)
    with guarded(model), torch.no_grad():
        logits = output_tensor(model(meta.normalize(images.to(device))))
    if logits.dim() != 2:
        raise KernelvizError(f"the model's output has shape {tuple(logits.shape)}, not (batch, classes): no classes")
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
    out: list[int] = []
    for t in targets:
        if t is None:
            if top1 is None:
                top1 = [p[0][0] for p in predict(model, images, 1)]
            out.append(top1[len(out)])
        elif isinstance(t, str) and not t.strip().lstrip("-").isdigit():  # "-1" is an index, not a name
            lower = [c.lower() for c in cats]
            if not cats:
                raise KernelvizError(f"class name {t!r} given, but this model has no class names: use an index")
            if t.lower() not in lower:
                raise KernelvizError(f"unknown class name {t!r}.{close_matches(t, cats)}")
            out.append(lower.index(t.lower()))
        else:
            out.append(int(t))  # negative indices are refused with the range by _check_targets
    return out


def _check_targets(targets: list[int], classes: int) -> None:
    bad = [t for t in targets if not 0 <= t < classes]
    if bad:
        raise out_of_range("target class", bad[0], classes, "the model", unit="classes")


def _reduce(attr: torch.Tensor, method: str) -> torch.Tensor:
    """``(B, C, H, W)`` attribution → ``(B, H, W)``."""
    if method in SIGNED_METHODS:
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

    check_methods(method)
    if filter is not None and target is not None:
        raise KernelvizError("give either a target (a class) or a filter, not both")
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
        at_input = layer_name.endswith(INPUT_SUFFIX)
        path = resolve_layer(model, layer_name.removesuffix(INPUT_SUFFIX))
        if path == "":
            raise KernelvizError(f"{method} needs an inner layer, not {LOGITS!r}")
        if module_runs(model).get(path, 1) > 1:
            raise KernelvizError(
                f"{method} cannot explain one run of {path!r}, a module used {module_runs(model)[path]} times per "
                "forward pass: pick the layer that contains it (its block) or the one after it"
            )
        shape = _layer_shape(model, norm.normalize(x[:1]), path, at_input)
        if len(shape) != 4:
            raise KernelvizError(
                f"{method} needs a layer with a spatial output, but {layer_name!r} gives {tuple(shape[1:])}: "
                "pick a conv or pool layer (kernelviz layers MODEL lists them)"
            )
        settings["upsampling"] = "bilinear"

    with guarded(model), torch.inference_mode(False), torch.enable_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")  # captum's notice
        scored = _Scored(model, norm, filter_layer, filter_index)
        if targets is not None:
            with torch.no_grad():
                classes = scored(x[:1]).shape[1]
            _check_targets(targets, classes)
        delta = None
        inputs = x.clone().requires_grad_(True)
        try:
            if method == "gradcam":
                module = get_module(model, path)
                cam = ca.LayerGradCam(scored, module).attribute(
                    inputs, target=captum_target, relu_attributions=True, attribute_to_layer_input=at_input
                )
                maps = F.interpolate(cam, size=(h, w), mode="bilinear", align_corners=False)[:, 0]
            elif method == "guided_gradcam":  # guided backprop times the upsampled Grad-CAM, as captum composes it
                cam = ca.LayerGradCam(scored, get_module(model, path)).attribute(
                    inputs, target=captum_target, relu_attributions=True, attribute_to_layer_input=at_input
                )
                guided = rectified_gradients(_target_score(scored, captum_target), inputs, method)
                maps = _reduce(guided * F.interpolate(cam, size=(h, w), mode="bilinear"), method)
            elif method in ("guided_backprop", "deconvolution"):
                grads = rectified_gradients(
                    _target_score(scored, captum_target), inputs, method, deconv=method == "deconvolution"
                )
                maps = _reduce(grads, method)
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
        settings["reduction"] = "sum over color channels" if method in SIGNED_METHODS else "max |.| over color channels"
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
