"""Heatmaps: which input regions drive a class or a filter.

:func:`attribute` runs any method of :data:`~kernelviz.explain.methods.METHODS` (one row per method, with where it
comes from) behind one signature: the target (a class index or name, each image's top-1, or a filter), the layer of
a layer method (default: :func:`~kernelviz.core.layers.default_layer`, the last full spatial map), the model guard,
seeded noise and the checks of what goes in and comes out.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..core.capture import module_runs, output_tensor
from ..core.guard import check_finite, check_images, check_model, guarded
from ..core.layers import INPUT_SUFFIX, default_layer, layer_shape
from ..core.layout import prefix_tokens
from ..core.models import model_device, model_meta
from ..core.names import LOGITS, get_module, resolve_layer
from ..errors import KernelvizError, NoClassesError, NotFoundError, close_matches, out_of_range, unknown_choice
from .baselines import BASELINES, baseline_image, describe_baseline
from .methods import (
    FAMILIES,
    IG_TOLERANCE,
    METHODS,
    REDUCTIONS,
    Job,
    Method,
    ScoredModel,
    TargetScore,
    methods_help,
    seeded_noise,
)
from .rollout import ROLLOUT_METHODS, reads_attention

__all__ = [
    "BASELINES",
    "DEFAULT_BASELINES",
    "FAMILIES",
    "IG_TOLERANCE",
    "INPUT_SUFFIX",
    "LAYER_METHODS",
    "METHODS",
    "SIGNED_METHODS",
    "Attribution",
    "attribute",
    "available_methods",
    "check_methods",
    "check_targets",
    "default_layer",
    "get_method",
    "heatmap",
    "method_family",
    "methods_help",
    "predict",
    "resolve_targets",
]

#: Methods that read one layer.
LAYER_METHODS = tuple(name for name, m in METHODS.items() if m.reads_layer)
#: Methods whose maps are signed (positive = evidence for the target, negative = against).
SIGNED_METHODS = tuple(name for name, m in METHODS.items() if m.signed)
#: Each method's default baseline (methods that compare the image with a reference).
DEFAULT_BASELINES = {name: m.baseline for name, m in METHODS.items() if m.baseline is not None}


def get_method(name: str) -> Method:
    """The row of method ``name``; an unknown one is a :class:`~kernelviz.errors.NotFoundError` with close names."""
    found = METHODS.get(name)
    if found is None:
        raise unknown_choice("method", name, METHODS)
    return found


def method_family(name: str) -> str:
    """The family of method ``name`` (a key of :data:`FAMILIES`, or the method itself for a CAM in units of its
    own): maps of one family are in the same units."""
    return get_method(name).family


def check_methods(methods: str | Sequence[str]) -> list[str]:
    """The methods asked for, each once, in order; an unknown one is a :class:`KernelvizError`."""
    chosen = [methods] if isinstance(methods, str) else list(methods)
    for name in chosen:
        get_method(name)
    if not chosen:
        raise KernelvizError(f"no heatmap method given: choose from {', '.join(METHODS)}")
    return list(dict.fromkeys(chosen))


def available_methods(model: nn.Module) -> list[str]:
    """The methods ``model`` can run, in :data:`METHODS` order: every one but the attention methods
    (:data:`~kernelviz.explain.rollout.ROLLOUT_METHODS`) on a model without self-attention they can read."""
    attention = reads_attention(model)
    return [name for name in METHODS if attention or name not in ROLLOUT_METHODS]


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

    @property
    def label(self) -> str:
        """The method and, for a layer method, its layer: ``"gradcam @ relu5_3"``."""
        return f"{self.method}{' @ ' + self.layer if self.layer else ''}"

    def what(self, index: int) -> str:
        """What map ``index`` explains, in words: the filter (``"conv3_2:17"``), else the class name, else
        ``"class N"``."""
        if self.filter is not None:
            return self.filter
        if self.target_names and self.target_names[index]:
            return self.target_names[index]
        return f"class {self.targets[index]}" if self.targets is not None else "the model's output"

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


def predict(model: nn.Module, images: torch.Tensor, k: int = 5) -> list[list[tuple[int, str, float]]]:
    """Top-``k`` predictions per image: ``[(index, name, probability), ...]``; names are ``""`` when unknown."""
    check_model(model)
    images = check_images(images)
    meta = model_meta(model)
    device = model_device(model)
    with guarded(model), torch.no_grad():
        logits = output_tensor(model(meta.normalize(images.to(device))))
    check_finite(
        logits, "the model's outputs", ": the model's output is not finite for these images (NaN or infinite weights?)"
    )
    if logits.dim() != 2:
        raise NoClassesError(f"the model's output has shape {tuple(logits.shape)}, not (batch, classes): no classes")
    probs = logits.float().softmax(1).cpu()
    top = probs.topk(min(k, probs.shape[1]), dim=1)
    cats = meta.categories
    return [
        [(int(i), cats[i] if i < len(cats) else "", float(p)) for p, i in zip(ps, idx, strict=True)]
        for ps, idx in zip(top.values, top.indices, strict=True)
    ]


def resolve_targets(
    model: nn.Module, images: torch.Tensor, target: int | str | Sequence[int | str] | None
) -> list[int]:
    """The class index each image of ``images`` ``(B, 3, H, W)`` is explained for: ``target`` (an index or a class
    name, once or once per image) or, where ``None``, the image's top-1 prediction.

    Raises:
        KernelvizError: as many targets as images are not given, or a name is given to a model without names.
        NotFoundError: an unknown class name (with close names).
    """
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
                raise NotFoundError(f"unknown class name {t!r}.{close_matches(t, cats)}")
            out.append(lower.index(t.lower()))
        else:
            out.append(int(t))  # negative indices are refused with the range by check_targets
    return out


def check_targets(targets: list[int], classes: int) -> None:
    """Refuse a class index outside ``0 .. classes - 1`` (with the range)."""
    bad = [t for t in targets if not 0 <= t < classes]
    if bad:
        raise out_of_range("target class", bad[0], classes, "the model", unit="classes")


def _layer_of(
    model: nn.Module, method: str, layer: str | None, filter_layer: str | None, x: torch.Tensor
) -> tuple[str, str, bool]:
    """The layer a layer method reads: its name, module path and whether its input is meant."""
    layer_name = layer or filter_layer or default_layer(model)
    at_input = layer_name.endswith(INPUT_SUFFIX)
    path = resolve_layer(model, layer_name.removesuffix(INPUT_SUFFIX))
    if path == "":
        raise KernelvizError(f"{method} needs an inner layer, not {LOGITS!r}")
    runs = module_runs(model).get(path, 1)
    if runs > 1:
        raise KernelvizError(
            f"{method} cannot explain one run of {path!r}, a module used {runs} times per "
            "forward pass: pick the layer that contains it (its block) or the one after it"
        )
    shape = layer_shape(model, x, path, at_input)
    if len(shape) != 4:
        raise KernelvizError(
            f"{method} needs a layer with a spatial output, but {layer_name!r} gives {tuple(shape[1:])}: "
            "pick a conv or pool layer, or a transformer layer whose tokens make the patch grid "
            "(kernelviz layers MODEL lists them)"
        )
    return layer_name, path, at_input


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
    baseline: str | None = None,
    ig_steps: int | None = None,
    smooth_samples: int = 16,
    smooth_std: float = 0.15,
    shap_samples: int = 32,
    occlusion_window: int | None = None,
    segments: int = 64,
    eigen_smooth: bool = False,
    aug_smooth: bool = False,
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
        layer: the layer of the layer methods (:data:`LAYER_METHODS`; default:
            :func:`default_layer`; for a filter target, the filter's layer).
        mean, std: override the model's normalization.
        baseline: the reference image of integrated gradients, DeepLift, GradientShap, occlusion, feature
            ablation and Score-CAM, one of :data:`BASELINES` (default per method: :data:`DEFAULT_BASELINES`;
            GradientShap's default is the expectation over all four).
        ig_steps: integration steps of integrated gradients; ``None`` doubles them from 32 until the
            completeness error is within :data:`IG_TOLERANCE` (at most 256).
        smooth_samples, smooth_std: SmoothGrad's noisy copies and their noise
            level (fraction of the [0, 1] range).
        shap_samples: GradientShap's random points.
        occlusion_window: side of the occluding patch (default: 1/8 of
            the image side); the stride is half of it.
        segments: about how many superpixels feature ablation removes one at a time.
        eigen_smooth, aug_smooth: CAM options (:func:`kernelviz.explain.cams.cam`).

    Returns:
        An :class:`Attribution`; its ``maps`` are ``(B, H, W)``.
    """
    check_model(model)
    images = check_images(images)
    row = get_method(method)
    if filter is not None and target is not None:
        raise KernelvizError("give either a target (a class) or a filter, not both")
    if (eigen_smooth or aug_smooth) and not row.cam:
        cams = ", ".join(name for name, m in METHODS.items() if m.cam)
        raise KernelvizError(f"eigen_smooth and aug_smooth apply to the CAM methods ({cams}), not {method}")
    meta = model_meta(model)
    norm = meta.with_normalization(mean, std)
    device = model_device(model)
    x = images.to(device, torch.float32)

    filter_layer, filter_index = None, 0
    if filter is not None:
        name, _, idx = filter.rpartition(":")
        if not name or not idx.isdigit():
            raise KernelvizError(f"cannot read filter {filter!r}: write LAYER:INDEX, e.g. conv3_2:17")
        resolve_layer(model, name)
        filter_layer, filter_index = name, int(idx)
        targets = None
    else:
        targets = resolve_targets(model, x, target)

    settings: dict[str, Any] = {"normalization": {"mean": norm.mean, "std": norm.std}}
    kind = baseline or row.baseline
    if baseline is not None:
        if row.baseline is None:
            raise KernelvizError(f"{method} has no baseline; baselines apply to {', '.join(DEFAULT_BASELINES)}")
        describe_baseline(baseline)
    reference = None
    if kind is not None:
        reference = None if kind == "all" else baseline_image(x, kind, norm.mean)
        settings["baseline"] = (
            "; ".join(describe_baseline(k) for k in BASELINES) if kind == "all" else describe_baseline(kind)
        )
    layer_name, module, at_input = None, None, False
    if row.reads_layer:
        layer_name, path, at_input = _layer_of(model, method, layer, filter_layer, norm.normalize(x[:1]))
        module = get_module(model, path)
        settings["upsampling"] = "bilinear"
        if eigen_smooth or aug_smooth:
            settings.update(eigen_smooth=eigen_smooth, aug_smooth=aug_smooth)

    with guarded(model), torch.inference_mode(False), torch.enable_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")  # captum's notice
        scored = ScoredModel(model, norm, filter_layer, filter_index)
        if targets is not None:
            with torch.no_grad():
                classes = scored(x[:1]).shape[1]
            check_targets(targets, classes)
        job = Job(
            scored=scored,
            score=TargetScore(scored, targets),
            images=x,
            inputs=x.clone().requires_grad_(True),
            target=targets,
            mean=norm.mean,
            baseline=reference,
            baseline_kind=kind,
            module=module,
            at_input=at_input,
            prefix=prefix_tokens(model),
            options={
                "ig_steps": ig_steps,
                "smooth_samples": smooth_samples,
                "smooth_std": smooth_std,
                "shap_samples": shap_samples,
                "occlusion_window": occlusion_window,
                "segments": segments,
                "eigen_smooth": eigen_smooth,
                "aug_smooth": aug_smooth,
            },
            settings=settings,
        )
        try:
            with seeded_noise(x.device, row.stochastic):
                maps = row.compute(job)  # (B, H, W) for a CAM, else (B, 3, H, W)
        except (AssertionError, RuntimeError) as err:
            if filter_layer is not None and layer_name is not None:
                raise KernelvizError(
                    f"{method} at {layer_name!r} failed for filter {filter}: the layer must come at or "
                    f"before the filter's layer ({err})"
                ) from err
            raise
    if row.reduction is not None:
        maps = REDUCTIONS[row.reduction](maps)  # (B, H, W)
        settings["reduction"] = row.reduction
    maps = check_finite(
        maps.detach().float().cpu(),
        f"the {method} maps",
        ": the model's output or gradients are not finite for these images (NaN or infinite weights?)",
    )
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
        delta=job.delta,
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
