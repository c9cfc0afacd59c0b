"""Every heatmap method in one table: a :class:`Method` row per method, holding its facts and its compute function.

:func:`~kernelviz.explain.heatmaps.attribute` looks a method up here and calls its ``compute`` with a :class:`Job`
(the scored model, the images, the targets, the layer, the baseline); the CLI's help, the plots' color scales, the
display blur and the faithfulness scores read the same rows. Adding a pixel method is one row and one function.

Pixel-space attributions ``(B, 3, H, W)`` are reduced to ``(B, H, W)`` as the row says: the gradient maps by the
maximum absolute value over color channels (as in Simonyan et al.'s saliency), the signed reference methods by the
sum over channels (positive = evidence for the target; it adds up to the score's change), the perturbation methods
by the mean over channels (the score's drop when the region is replaced). A CAM is a map already.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..core.capture import capture, output_tensor
from ..core.models import ModelMeta
from ..errors import KernelvizError, out_of_range
from .baselines import BASELINES, baseline_image
from .cams import cam
from .deeplift import deeplift
from .guided import rectified_gradients
from .rollout import ROLLOUT_METHODS, rollout

__all__ = [
    "FAMILIES",
    "FAMILY_LABELS",
    "IG_TOLERANCE",
    "METHODS",
    "REDUCTIONS",
    "Job",
    "Method",
    "ScoredModel",
    "TargetScore",
    "methods_help",
    "seeded_noise",
]

#: The families whose maps share units (one color scale under ``--scale shared``). The CAMs that weight
#: channels otherwise (Grad-CAM++'s alphas, Score-CAM's softmax, Ablation-CAM's relative drops, EigenCAM's
#: projection) are each a family of their own.
FAMILIES = {
    "cam": "gradient-weighted activations (Grad-CAM, XGrad-CAM, HiResCAM, LayerCAM)",
    "gradient": "gradient magnitude per pixel",
    "attribution": "score change per pixel",
    "perturbation": "score drop when a region is replaced",
}
#: The colorbar label of each shared family.
FAMILY_LABELS = {
    "cam": "CAM (shared)",
    "gradient": "|gradient| (shared)",
    "attribution": "score change / px (shared)",
    "perturbation": "score drop (shared)",
}
#: How ``(B, 3, H, W)`` pixel attributions become ``(B, H, W)`` maps, by the name a row gives.
REDUCTIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "max |.| over color channels": lambda a: a.abs().amax(1),
    "sum over color channels": lambda a: a.sum(1),
    "mean over color channels": lambda a: a.mean(1),
}
#: Integrated gradients' completeness error (fraction of the score's change) that more steps must bring below.
IG_TOLERANCE = 0.05
_IG_MAX_STEPS = 256


class ScoredModel(nn.Module):
    """The user's model behind its normalization, returning either logits or one filter's mean.

    A module (not a function) because guided backprop overrides the ReLU modules it contains. Wrapping leaves
    the user's model itself untouched.
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


class TargetScore:
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


@dataclass
class Job:
    """What every method needs: the scored model, the images, the targets, the layer, the baseline.

    A compute function may add to ``settings`` (what it chose: steps, window...) and set ``delta``.
    """

    scored: nn.Module
    score: TargetScore
    images: torch.Tensor  # (B, 3, H, W) in [0, 1]
    inputs: torch.Tensor  # (B, 3, H, W), the same, requiring grad
    target: list[int] | None  # captum's target argument
    mean: Sequence[float] | None  # the normalization's mean (the "mean" baseline)
    baseline: torch.Tensor | None  # (B, 3, H, W)
    baseline_kind: str | None
    module: nn.Module | None  # the layer of a layer method
    at_input: bool
    prefix: int | None  # the model's tokens before its patch tokens (a vision transformer's layer)
    options: dict[str, Any]
    settings: dict[str, Any]
    delta: torch.Tensor | None = None


@dataclass(frozen=True)
class Method:
    """One heatmap method.

    Attributes:
        name: what users type.
        family: maps of one family are in the same units (a key of :data:`FAMILIES`, or the method's own name).
        compute: ``Job -> (B, H, W)`` map for a CAM, ``(B, 3, H, W)`` pixel attribution otherwise.
        reduction: a key of :data:`REDUCTIONS` for a pixel method; ``None`` for a map already.
        signed: positive is evidence for the target, negative against (a diverging color scale).
        baseline: the default reference image of a method that compares the image with one
            (:data:`~kernelviz.explain.baselines.BASELINES`, or ``"all"``: the expectation over them).
        reads_layer: it reads one layer (its ``layer``; default: the last full spatial map).
        cam: a member of the CAM family (eigen- and aug-smoothing apply).
        stochastic: it draws noise (seeded 0: the same map on a rerun).
    """

    name: str
    family: str
    compute: Callable[[Job], torch.Tensor] = field(repr=False)
    reduction: str | None = None
    signed: bool = False
    baseline: str | None = None
    reads_layer: bool = False
    cam: bool = False
    stochastic: bool = False

    @property
    def per_pixel(self) -> bool:
        """A map with one value per pixel (speckled: blurred for display)."""
        return self.family in ("gradient", "attribution")


@contextlib.contextmanager
def seeded_noise(device: torch.device, stochastic: bool) -> Iterator[None]:
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


def _cam(name: str) -> Callable[[Job], torch.Tensor]:
    def compute(job: Job) -> torch.Tensor:
        assert job.module is not None
        return cam(
            name,
            job.score,
            job.module,
            job.inputs,
            at_input=job.at_input,
            eigen_smooth=job.options["eigen_smooth"],
            aug_smooth=job.options["aug_smooth"],
            baseline=job.baseline,
            prefix=job.prefix,
        )

    return compute


def _guided_gradcam(job: Job) -> torch.Tensor:
    assert job.module is not None
    gradcam = cam("gradcam", job.score, job.module, job.inputs, at_input=job.at_input, prefix=job.prefix)  # (B, H, W)
    return rectified_gradients(job.score, job.inputs, "guided_gradcam") * gradcam[:, None]


def _rollout(gradient: bool) -> Callable[[Job], torch.Tensor]:
    def compute(job: Job) -> torch.Tensor:
        model = job.scored.model if isinstance(job.scored, ScoredModel) else job.scored
        prefix = job.prefix if job.prefix is not None else 0
        job.settings.update(
            prefix_tokens=prefix, heads="mean" if not gradient else "mean of relu(gradient x attention)"
        )
        return rollout(model, job.score, job.inputs, prefix, gradient=gradient)

    return compute


def _rectified(deconv: bool) -> Callable[[Job], torch.Tensor]:
    method = "deconvolution" if deconv else "guided_backprop"
    return lambda job: rectified_gradients(job.score, job.inputs, method, deconv=deconv)


def _saliency(job: Job) -> torch.Tensor:
    import captum.attr as ca

    return ca.Saliency(job.scored).attribute(job.inputs, target=job.target, abs=False)


def _input_x_gradient(job: Job) -> torch.Tensor:
    import captum.attr as ca

    return ca.InputXGradient(job.scored).attribute(job.inputs, target=job.target)


def _smoothgrad(job: Job) -> torch.Tensor:
    import captum.attr as ca

    samples, noise = job.options["smooth_samples"], job.options["smooth_std"]
    job.settings.update(samples=samples, noise_std=noise, seed=0)
    return ca.NoiseTunnel(ca.Saliency(job.scored)).attribute(
        job.inputs,
        nt_type="smoothgrad",
        nt_samples=samples,
        stdevs=noise,
        target=job.target,
        nt_samples_batch_size=max(1, samples),
    )


def _integrated_gradients(job: Job) -> torch.Tensor:
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
    return attr


def _deeplift(job: Job) -> torch.Tensor:
    assert job.baseline is not None
    attr, error = deeplift(job.score, job.inputs, job.baseline)
    job.delta = error.float().cpu()
    job.settings["rule"] = "rescale on every activation function; max pooling by its gradient"
    return attr


def _gradient_shap(job: Job) -> torch.Tensor:
    import captum.attr as ca

    kinds = BASELINES if job.baseline_kind in (None, "all") else (job.baseline_kind,)
    attrs = []
    for i in range(job.images.shape[0]):
        refs = torch.cat([baseline_image(job.images[i : i + 1], k, job.mean) for k in kinds])  # (kinds, 3, H, W)
        attrs.append(
            ca.GradientShap(job.scored).attribute(
                job.inputs[i : i + 1],
                baselines=refs,
                target=None if job.target is None else job.target[i],
                n_samples=job.options["shap_samples"],
                stdevs=0.09,
            )
        )
    job.settings.update(samples=job.options["shap_samples"], noise_std=0.09, seed=0)
    return torch.cat(attrs)


def _feature_ablation(job: Job) -> torch.Tensor:
    import captum.attr as ca

    try:
        from skimage.segmentation import slic
    except ImportError as err:
        raise KernelvizError(
            "feature_ablation needs scikit-image for its superpixels: pip install scikit-image"
        ) from err
    segments = job.options["segments"]
    attrs = []
    for i in range(job.images.shape[0]):
        picture = job.images[i].permute(1, 2, 0).cpu().double().numpy()  # (H, W, 3)
        labels = slic(picture, n_segments=segments, compactness=10, start_label=0, channel_axis=-1)
        mask = torch.from_numpy(labels).to(job.inputs.device).long()[None, None].expand(1, 3, -1, -1)
        attrs.append(
            ca.FeatureAblation(job.scored).attribute(
                job.inputs[i : i + 1],
                baselines=job.baseline[i : i + 1] if job.baseline is not None else None,
                target=None if job.target is None else job.target[i],
                feature_mask=mask,
                perturbations_per_eval=16,
            )
        )
    job.settings.update(superpixels=f"SLIC, about {segments} segments (scikit-image)")
    return torch.cat(attrs)


def _occlusion(job: Job) -> torch.Tensor:
    import captum.attr as ca

    h, w = job.images.shape[-2:]
    win = job.options["occlusion_window"] or max(2, min(h, w) // 8)
    stride = max(1, win // 2)
    job.settings.update(window=win, stride=stride)
    return ca.Occlusion(job.scored).attribute(
        job.inputs,
        sliding_window_shapes=(3, win, win),
        strides=(3, stride, stride),
        baselines=job.baseline,
        target=job.target,
        perturbations_per_eval=8,
    )


_GRADIENT, _SIGNED, _PERTURBED = (
    "max |.| over color channels",
    "sum over color channels",
    "mean over color channels",
)

#: Every method, in the order the CLI and the pages list them.
METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        # the CAM family (kernelviz.explain.cams); gradcam equals captum's LayerGradCam (tested)
        Method("gradcam", "cam", _cam("gradcam"), reads_layer=True, cam=True),
        Method("gradcam++", "gradcam++", _cam("gradcam++"), reads_layer=True, cam=True),
        Method("xgradcam", "cam", _cam("xgradcam"), reads_layer=True, cam=True),
        Method("hirescam", "cam", _cam("hirescam"), reads_layer=True, cam=True),
        Method("layercam", "cam", _cam("layercam"), reads_layer=True, cam=True),
        Method("scorecam", "scorecam", _cam("scorecam"), baseline="black", reads_layer=True, cam=True),
        Method("ablationcam", "ablationcam", _cam("ablationcam"), reads_layer=True, cam=True),
        Method("eigencam", "eigencam", _cam("eigencam"), reads_layer=True, cam=True),
        # a vision transformer's attention (kernelviz.explain.rollout)
        Method("rollout", "rollout", _rollout(gradient=False)),
        Method("attention_gradient", "attention_gradient", _rollout(gradient=True)),
        # guided backprop times the upsampled Grad-CAM (captum's composition)
        Method("guided_gradcam", "gradient", _guided_gradcam, _GRADIENT, reads_layer=True),
        # gradients (kernelviz.explain.guided: the rule on every rectifier; captum for the rest)
        Method("guided_backprop", "gradient", _rectified(deconv=False), _GRADIENT),
        Method("deconvolution", "gradient", _rectified(deconv=True), _GRADIENT),
        Method("saliency", "gradient", _saliency, _GRADIENT),
        Method("smoothgrad", "gradient", _smoothgrad, _GRADIENT, stochastic=True),
        Method("input_x_gradient", "attribution", _input_x_gradient, _SIGNED, signed=True),
        # path and reference methods, against a baseline (kernelviz.explain.baselines)
        Method("integrated_gradients", "attribution", _integrated_gradients, _SIGNED, signed=True, baseline="black"),
        Method("deeplift", "attribution", _deeplift, _SIGNED, signed=True, baseline="black"),
        Method("gradient_shap", "attribution", _gradient_shap, _SIGNED, signed=True, baseline="all", stochastic=True),
        # perturbation (captum Occlusion, FeatureAblation over SLIC superpixels)
        Method("occlusion", "perturbation", _occlusion, _PERTURBED, signed=True, baseline="mean"),
        Method("feature_ablation", "perturbation", _feature_ablation, _PERTURBED, signed=True, baseline="mean"),
    )
}


def methods_help() -> str:
    """The methods by kind, for help texts: ``"CAMs: gradcam, ...; gradients: ...; ..."``."""
    kinds = {"CAMs": [n for n, m in METHODS.items() if m.cam]}
    for family, label in (("gradient", "gradients"), ("attribution", "attributions"), ("perturbation", "perturbation")):
        kinds[label] = [n for n, m in METHODS.items() if not m.cam and m.family == family]
    kinds["vision transformers"] = list(ROLLOUT_METHODS)
    return "; ".join(f"{label}: {', '.join(names)}" for label, names in kinds.items() if names)
