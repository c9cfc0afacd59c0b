"""Heatmaps: which input regions drive a class or a filter.

Methods, by family (the source of each in brackets):

* the CAM family (:mod:`kernelviz.explain.cams`): ``gradcam``, ``gradcam++``, ``xgradcam``, ``hirescam``,
  ``layercam``, ``scorecam``, ``ablationcam``, ``eigencam``; they read one layer (default:
  :func:`default_layer`, the network's last full spatial map) and are upsampled bilinearly to the input.
  ``gradcam`` equals captum's ``LayerGradCam`` (tested).
* ``guided_gradcam``: guided backprop times the upsampled Grad-CAM (captum's composition).
* gradients: ``guided_backprop`` and ``deconvolution`` (:mod:`kernelviz.explain.guided`: the rule applied to
  every rectifier; a smooth activation such as SiLU is refused), ``saliency`` (captum ``Saliency``, the
  vanilla gradient), ``smoothgrad`` (captum ``NoiseTunnel`` over ``Saliency``), ``input_x_gradient``
  (captum ``InputXGradient``).
* path and reference methods, against a baseline (:mod:`kernelviz.explain.baselines`):
  ``integrated_gradients`` (captum ``IntegratedGradients``; steps chosen from the completeness error),
  ``deeplift`` (:mod:`kernelviz.explain.deeplift`, the Rescale rule on every activation function),
  ``gradient_shap`` (captum ``GradientShap``, an expectation over several baselines).
* perturbation: ``occlusion`` (captum ``Occlusion``, square patches) and ``feature_ablation`` (captum
  ``FeatureAblation`` over SLIC superpixels from scikit-image).

Pixel-space attributions ``(B, 3, H, W)`` are reduced to ``(B, H, W)``: the gradient maps by the maximum
absolute value over color channels (as in Simonyan et al.'s saliency), the signed reference methods by the
sum over channels (positive = evidence for the target; it adds up to the score's change), the perturbation
methods by the mean over channels (the score's drop when the region is replaced).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..core.capture import StopForward, capture, module_runs, output_tensor
from ..core.guard import check_finite, check_images, check_model, guarded
from ..core.models import ModelMeta, model_device, model_meta
from ..core.names import LOGITS, get_module, layer_names, resolve_layer
from ..errors import KernelvizError, NotFound, close_matches, out_of_range, unknown_choice
from .baselines import BASELINES, baseline_image, describe_baseline
from .cams import CAM_METHODS, cam
from .deeplift import deeplift
from .guided import rectified_gradients

__all__ = [
    "BASELINES",
    "FAMILIES",
    "IG_TOLERANCE",
    "INPUT_SUFFIX",
    "LAYER_METHODS",
    "METHODS",
    "SIGNED_METHODS",
    "Attribution",
    "attribute",
    "check_methods",
    "default_layer",
    "heatmap",
    "method_family",
    "predict",
]

METHODS = (
    *CAM_METHODS,
    "guided_gradcam",
    "guided_backprop",
    "deconvolution",
    "saliency",
    "smoothgrad",
    "input_x_gradient",
    "integrated_gradients",
    "deeplift",
    "gradient_shap",
    "occlusion",
    "feature_ablation",
)
#: Methods that read one layer.
LAYER_METHODS = (*CAM_METHODS, "guided_gradcam")
#: A layer name ending in this means the layer's input rather than its output (``"avgpool:input"``).
INPUT_SUFFIX = ":input"

#: Methods whose maps are signed (positive = evidence for the target, negative = against).
SIGNED_METHODS = (
    "input_x_gradient",
    "integrated_gradients",
    "deeplift",
    "gradient_shap",
    "occlusion",
    "feature_ablation",
)
_PERTURBATION = ("occlusion", "feature_ablation")
#: Each method's default baseline (methods that compare the image with a reference).
DEFAULT_BASELINES = {
    "integrated_gradients": "black",
    "deeplift": "black",
    "gradient_shap": "all",
    "occlusion": "mean",
    "feature_ablation": "mean",
    "scorecam": "black",
}
#: Integrated gradients' completeness error (fraction of the score's change) that more steps must bring below.
IG_TOLERANCE = 0.05
_IG_MAX_STEPS = 256


#: The families whose maps share units (one color scale under ``--scale shared``). The CAMs that weight
#: channels otherwise (Grad-CAM++'s alphas, Score-CAM's softmax, Ablation-CAM's relative drops, EigenCAM's
#: projection) are each a family of their own.
FAMILIES = {
    "cam": "gradient-weighted activations (Grad-CAM, XGrad-CAM, HiResCAM, LayerCAM)",
    "gradient": "gradient magnitude per pixel",
    "attribution": "score change per pixel",
    "perturbation": "score drop when a region is replaced",
}


def method_family(method: str) -> str:
    """The family of ``method`` (a key of :data:`FAMILIES`, or the method itself for a CAM in units of its
    own): maps of one family are in the same units."""
    check_methods(method)
    if method in ("gradcam", "xgradcam", "hirescam", "layercam"):
        return "cam"
    if method in CAM_METHODS:
        return method
    if method in _PERTURBATION:
        return "perturbation"
    return "attribution" if method in SIGNED_METHODS else "gradient"


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


class _TargetScore:
    """Each image's target score: its class logit, or the filter score a filter-explaining model returns.

    Called on ``k * B`` rows (images stacked with their baselines, say), the targets repeat.
    """

    def __init__(self, scored: nn.Module, targets: list[int] | None) -> None:
        self.scored = scored
        self.targets = targets

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self.scored(x)  # (N, classes) or (N,)
        if self.targets is None:
            return out
        index = torch.tensor(self.targets, device=out.device).repeat(out.shape[0] // len(self.targets))
        return out.gather(1, index.view(-1, 1))[:, 0]

    def for_image(self, x: torch.Tensor, index: int) -> torch.Tensor:
        """``(n, 3, H, W) -> (n,)``, every row scored for the target of image ``index``."""
        out = self.scored(x)
        return out if self.targets is None else out[:, self.targets[index]]


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
                raise NotFound(f"unknown class name {t!r}.{close_matches(t, cats)}")
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
    if method in _PERTURBATION:
        return attr.mean(1)
    if method in SIGNED_METHODS:
        return attr.sum(1)
    return attr.abs().amax(1)


@dataclass
class _Job:
    """What every method needs: the scored model, the images, the targets, the layer, the baseline."""

    scored: nn.Module
    score: _TargetScore
    inputs: torch.Tensor  # (B, 3, H, W), requires grad
    target: list[int] | None  # captum's target argument
    baseline: torch.Tensor | None  # (B, 3, H, W)
    baseline_kind: str | None
    module: nn.Module | None
    at_input: bool
    options: dict[str, Any]
    settings: dict[str, Any]
    delta: torch.Tensor | None = None


def _cam_map(job: _Job, method: str) -> torch.Tensor:
    assert job.module is not None
    return cam(
        method,
        job.score,
        job.module,
        job.inputs,
        at_input=job.at_input,
        eigen_smooth=job.options["eigen_smooth"],
        aug_smooth=job.options["aug_smooth"],
        baseline=job.baseline,
    )


def _guided_gradcam(job: _Job) -> torch.Tensor:
    gradcam = cam("gradcam", job.score, job.module, job.inputs, at_input=job.at_input)  # type: ignore[arg-type]
    guided = rectified_gradients(job.score, job.inputs, "guided_gradcam")
    return _reduce(guided * gradcam[:, None], "guided_gradcam")


def _integrated_gradients(job: _Job) -> torch.Tensor:
    import captum.attr as ca

    ig = ca.IntegratedGradients(job.scored)
    fixed = job.options["ig_steps"]
    n, b = fixed or 32, job.inputs.shape[0]
    while True:
        attr, delta = ig.attribute(
            job.inputs,
            baselines=job.baseline,
            target=job.target,
            n_steps=n,
            internal_batch_size=max(1, 2 * n // max(b, 1)),
            return_convergence_delta=True,
        )
        change = attr.detach().flatten(1).sum(1) - delta.detach()  # the score's change, baseline to image
        error = float((delta.detach().abs() / change.abs().clamp(min=1e-12)).max())
        if fixed or error <= IG_TOLERANCE or n >= _IG_MAX_STEPS:
            break
        n = min(2 * n, _IG_MAX_STEPS)
    job.delta = delta.detach().float().cpu()
    how = (
        "fixed"
        if fixed
        else f"doubled from 32 until the completeness error was within {IG_TOLERANCE:.0%} (max {_IG_MAX_STEPS})"
    )
    job.settings.update(steps=n, steps_chosen=how)
    return _reduce(attr, "integrated_gradients")


def _deeplift(job: _Job) -> torch.Tensor:
    assert job.baseline is not None
    attr, error = deeplift(job.score, job.inputs, job.baseline)
    job.delta = error.float().cpu()
    job.settings["rule"] = "rescale on every activation function; max pooling by its gradient"
    return _reduce(attr, "deeplift")


def _gradient_shap(job: _Job, images: torch.Tensor, mean: Sequence[float] | None) -> torch.Tensor:
    import captum.attr as ca

    kinds = BASELINES if job.baseline_kind in (None, "all") else (job.baseline_kind,)
    maps = []
    for i in range(images.shape[0]):
        refs = torch.cat([baseline_image(images[i : i + 1], k, mean) for k in kinds])  # (kinds, 3, H, W)
        attr = ca.GradientShap(job.scored).attribute(
            job.inputs[i : i + 1],
            baselines=refs,
            target=None if job.target is None else job.target[i],
            n_samples=job.options["shap_samples"],
            stdevs=0.09,
        )
        maps.append(_reduce(attr, "gradient_shap"))
    job.settings.update(samples=job.options["shap_samples"], noise_std=0.09, seed=0)
    return torch.cat(maps)


def _feature_ablation(job: _Job, images: torch.Tensor) -> torch.Tensor:
    import captum.attr as ca

    try:
        from skimage.segmentation import slic
    except ImportError as err:
        raise KernelvizError(
            "feature_ablation needs scikit-image for its superpixels: pip install scikit-image"
        ) from err
    segments = job.options["segments"]
    maps = []
    for i in range(images.shape[0]):
        picture = images[i].permute(1, 2, 0).cpu().double().numpy()
        labels = slic(picture, n_segments=segments, compactness=10, start_label=0, channel_axis=-1)
        mask = torch.from_numpy(labels).to(job.inputs.device).long()[None, None].expand(1, 3, -1, -1)
        attr = ca.FeatureAblation(job.scored).attribute(
            job.inputs[i : i + 1],
            baselines=job.baseline[i : i + 1] if job.baseline is not None else None,
            target=None if job.target is None else job.target[i],
            feature_mask=mask,
            perturbations_per_eval=16,
        )
        maps.append(_reduce(attr, "feature_ablation"))
    job.settings.update(superpixels=f"SLIC, about {segments} segments (scikit-image)")
    return torch.cat(maps)


def _occlusion(job: _Job, h: int, w: int) -> torch.Tensor:
    import captum.attr as ca

    win = job.options["occlusion_window"] or max(2, min(h, w) // 8)
    stride = max(1, win // 2)
    attr = ca.Occlusion(job.scored).attribute(
        job.inputs,
        sliding_window_shapes=(3, win, win),
        strides=(3, stride, stride),
        baselines=job.baseline,
        target=job.target,
        perturbations_per_eval=8,
    )
    job.settings.update(window=win, stride=stride)
    return _reduce(attr, "occlusion")


_STOCHASTIC = ("smoothgrad", "gradient_shap")


@contextlib.contextmanager
def _seeded(device: torch.device, stochastic: bool) -> Iterator[None]:
    """Seed 0 for the noise of a stochastic method (the same map on a rerun), the caller's torch and numpy
    generators left as they were (captum's GradientShap draws its path points with numpy)."""
    if not stochastic:
        yield
        return
    import numpy as np

    state = np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(0)
            np.random.seed(0)
            yield
    finally:
        np.random.set_state(state)


def _compute(job: _Job, method: str, images: torch.Tensor, mean: Sequence[float] | None) -> torch.Tensor:
    """The ``(B, H, W)`` map of ``method``."""
    import captum.attr as ca

    h, w = images.shape[-2:]
    if method in CAM_METHODS:
        return _cam_map(job, method)
    if method == "guided_gradcam":
        return _guided_gradcam(job)
    if method in ("guided_backprop", "deconvolution"):
        return _reduce(rectified_gradients(job.score, job.inputs, method, deconv=method == "deconvolution"), method)
    if method == "saliency":
        return _reduce(ca.Saliency(job.scored).attribute(job.inputs, target=job.target, abs=False), method)
    if method == "input_x_gradient":
        return _reduce(ca.InputXGradient(job.scored).attribute(job.inputs, target=job.target), method)
    if method == "smoothgrad":
        samples, noise = job.options["smooth_samples"], job.options["smooth_std"]
        attr = ca.NoiseTunnel(ca.Saliency(job.scored)).attribute(
            job.inputs,
            nt_type="smoothgrad",
            nt_samples=samples,
            stdevs=noise,
            target=job.target,
            nt_samples_batch_size=max(1, samples),
        )
        job.settings.update(samples=samples, noise_std=noise, seed=0)
        return _reduce(attr, method)
    if method == "integrated_gradients":
        return _integrated_gradients(job)
    if method == "deeplift":
        return _deeplift(job)
    if method == "gradient_shap":
        return _gradient_shap(job, images, mean)
    if method == "feature_ablation":
        return _feature_ablation(job, images)
    return _occlusion(job, h, w)


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
    shape = _layer_shape(model, x, path, at_input)
    if len(shape) != 4:
        raise KernelvizError(
            f"{method} needs a layer with a spatial output, but {layer_name!r} gives {tuple(shape[1:])}: "
            "pick a conv or pool layer (kernelviz layers MODEL lists them)"
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
    check_methods(method)
    if filter is not None and target is not None:
        raise KernelvizError("give either a target (a class) or a filter, not both")
    if (eigen_smooth or aug_smooth) and method not in CAM_METHODS:
        raise KernelvizError(
            f"eigen_smooth and aug_smooth apply to the CAM methods ({', '.join(CAM_METHODS)}), not {method}"
        )
    if images.dim() == 3:
        images = images.unsqueeze(0)
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
        targets = _resolve_targets(model, x, target)

    settings: dict[str, Any] = {"normalization": {"mean": norm.mean, "std": norm.std}}
    kind = baseline or DEFAULT_BASELINES.get(method)
    if baseline is not None:
        if method not in DEFAULT_BASELINES:
            raise KernelvizError(f"{method} has no baseline; baselines apply to {', '.join(DEFAULT_BASELINES)}")
        describe_baseline(baseline)
    reference = None
    if kind is not None:
        reference = None if kind == "all" else baseline_image(x, kind, norm.mean)
        settings["baseline"] = (
            "; ".join(describe_baseline(k) for k in BASELINES) if kind == "all" else describe_baseline(kind)
        )
    layer_name, module, at_input = None, None, False
    if method in LAYER_METHODS:
        layer_name, path, at_input = _layer_of(model, method, layer, filter_layer, norm.normalize(x[:1]))
        module = get_module(model, path)
        settings["upsampling"] = "bilinear"
        if eigen_smooth or aug_smooth:
            settings.update(eigen_smooth=eigen_smooth, aug_smooth=aug_smooth)

    with guarded(model), torch.inference_mode(False), torch.enable_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")  # captum's notice
        scored = _Scored(model, norm, filter_layer, filter_index)
        if targets is not None:
            with torch.no_grad():
                classes = scored(x[:1]).shape[1]
            _check_targets(targets, classes)
        job = _Job(
            scored=scored,
            score=_TargetScore(scored, targets),
            inputs=x.clone().requires_grad_(True),
            target=targets,
            baseline=reference,
            baseline_kind=kind,
            module=module,
            at_input=at_input,
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
            with _seeded(x.device, method in _STOCHASTIC):
                maps = _compute(job, method, x, norm.mean)
        except (AssertionError, RuntimeError) as err:
            if filter_layer is not None and layer_name is not None:
                raise KernelvizError(
                    f"{method} at {layer_name!r} failed for filter {filter}: the layer must come at or "
                    f"before the filter's layer ({err})"
                ) from err
            raise
    if method not in CAM_METHODS:
        settings["reduction"] = (
            "mean over color channels"
            if method in _PERTURBATION
            else "sum over color channels"
            if method in SIGNED_METHODS
            else "max |.| over color channels"
        )
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
