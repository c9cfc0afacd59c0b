"""The optimizer: gradient ascent on an image, the network's weights frozen."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.capture import StopForward, can_slice, capture
from ..core.guard import check_allocation, check_images, check_model, guarded
from ..core.models import ModelMeta, model_device, model_meta, resolve_device
from ..core.names import LOGITS, get_module, split_call, split_input
from ..core.progress import OnProgress, report
from ..errors import KernelvizError, NonFiniteObjectiveError, out_of_range
from ..files.records import provenance, versions
from ..files.write import save_json, save_png, write_each
from .objectives import INPUT, Objective, as_objective
from .params import ImageParam, image_param
from .perf import keep_heap
from .relu import redirected_relus
from .settings import DEFAULTS, OptimSettings
from .transforms import Transform, build_transforms

__all__ = ["VisResult", "filter_seed", "resolve_precision", "visualize"]


# -- result --------------------------------------------------------------------------------------


@dataclass
class VisResult:
    """The outcome of :func:`visualize`.

    Attributes:
        images: ``(B, 3, H, W)`` in ``[0, 1]``, on the CPU.
        history: ``(steps_done, B)`` objective value per step (on the
            transformed image the step saw).
        final: ``(B,)`` objective value for the final image, untransformed.
        objective: the objective's description.
        settings: every setting used (steps, size, lr, param, transforms,
            seed, precision, device, ...).
        dead: ``(B,)`` true where the target never responded (the objective
            stayed exactly zero: a unit that does not fire for any image tried).
        interrupted: the run was stopped by Ctrl-C; ``images`` hold the last step.
        steps_done: optimizer steps actually taken.
        seconds: wall time of the optimization.
        extra: fields every image's record holds.
        per_image: named ``(B,)`` values, each image's record holding its own (a capped unit's pre-activation).
    """

    images: torch.Tensor
    history: torch.Tensor
    final: torch.Tensor
    objective: str
    settings: dict[str, Any]
    dead: torch.Tensor
    interrupted: bool = False
    steps_done: int = 0
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    per_image: dict[str, torch.Tensor] = field(default_factory=dict)

    def record(self, index: int = 0, meta: ModelMeta | None = None, **fields: Any) -> dict[str, Any]:
        """The JSON-ready record of image ``index``: settings, curve, final value, versions.

        With ``meta``, the record starts with the model and its weights
        (:func:`~kernelviz.files.records.provenance`); extra keyword ``fields`` follow the run's own.
        """
        settings = dict(self.settings)
        seeds = settings.pop("image_seeds", None)
        settings["image_seed"] = seeds[index] if seeds is not None else None
        body = {
            "objective": self.objective,
            "settings": settings,
            "final_value": float(self.final[index]),
            "curve": [round(float(v), 6) for v in self.history[:, index]],
            "dead_unit": bool(self.dead[index]),
            "interrupted": self.interrupted,
            "steps_done": self.steps_done,
            "wall_seconds": round(self.seconds, 3),
            **self.extra,
            **{name: values[index].item() for name, values in self.per_image.items()},
            **fields,
        }
        if meta is not None:
            return provenance(meta, **body)
        return {**body, "versions": versions()}

    def minimized(self) -> VisResult:
        """This result of maximizing minus a unit, told as the unit's minimization: ``final`` and ``history`` are the
        unit's values (the objective's negated) and the record says ``"negative": true``."""
        return replace(self, final=-self.final, history=-self.history, extra={**self.extra, "negative": True})

    def save(self, path: str | Path, index: int = 0, meta: ModelMeta | None = None, **fields: Any) -> Path:
        """Write image ``index`` as PNG at ``path`` and its record (:meth:`record`) as JSON beside it.

        Both files are written atomically. Extra keyword fields go into the JSON.
        """
        path = Path(path)
        record = self.record(index, meta, **fields)
        write_each(lambda: save_png(self.images[index], path), lambda: save_json(record, path.with_suffix(".json")))
        return path


# -- the optimizer -------------------------------------------------------------------------------


def _batch_size(objective: Objective, batch: int | None) -> int:
    sizes = {len(n) for n in objective.needs.values() if isinstance(n, tuple)}
    if len(sizes) > 1:
        raise KernelvizError(f"the objective lists different numbers of per-image filters: {sorted(sizes)}")
    if batch is None:
        return sizes.pop() if sizes else 1
    if sizes and batch not in sizes:
        raise KernelvizError(f"batch={batch} but the objective lists {sizes.pop()} per-image filters")
    return batch


def _slicing(
    model: nn.Module, objective: Objective, paths: dict[str, str]
) -> tuple[str, nn.Conv2d, nn.Module | None] | None:
    """Whether only the objective's channels of its one target layer need computing.

    Returns ``(layer, conv, relu)`` where ``conv`` is the ``Conv2d`` to slice and
    ``relu`` the activation after it when the target is that activation.
    """
    layers = objective.layers
    if len(layers) != 1 or objective.needs[layers[0]] is None or layers[0] == LOGITS:
        return None
    layer = layers[0]
    if split_input(layer)[1] or split_call(layer)[1] is not None:  # an input, one run of a shared module: in full
        return None
    path = paths[layer]
    module = get_module(model, path)
    if isinstance(module, nn.Conv2d) and can_slice(module):
        return layer, module, None
    if isinstance(module, nn.ReLU) and "." in path:  # relu right after a conv in a Sequential
        parent_path, _, idx = path.rpartition(".")
        parent = get_module(model, parent_path)
        if isinstance(parent, nn.Sequential) and idx.isdigit() and int(idx) > 0:
            prev = parent[int(idx) - 1]
            if isinstance(prev, nn.Conv2d) and can_slice(prev):
                return layer, prev, module
    return None


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"auto"`` → bf16 on a CUDA GPU that supports it, else fp32; other values kept."""
    if precision == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return "bf16"
        return "fp32"
    return precision


def visualize(
    model: nn.Module,
    objective: Objective | str,
    *,
    steps: int = DEFAULTS.steps,
    size: int | None = DEFAULTS.size,
    lr: float = DEFAULTS.lr,
    param: str | Callable[..., ImageParam] = DEFAULTS.param,
    decay: float = DEFAULTS.decay,
    detail: float = DEFAULTS.detail,
    transforms: str | Sequence[Transform] | None = DEFAULTS.transforms,
    seed: int = DEFAULTS.seed,
    image_seeds: Sequence[int] | None = None,
    device: str | torch.device | None = None,
    batch: int | None = None,
    init: torch.Tensor | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    precision: str = DEFAULTS.precision,
    redirect_steps: int = 16,
    channels_last: bool = True,
    progress: OnProgress | None = None,
) -> VisResult:
    """Synthesize images that maximize ``objective``, changing only their pixels.

    The model is borrowed unchanged (eval mode, weights frozen, no weight
    gradients, everything restored on return); the forward pass stops at the
    deepest layer the objective reads, and for a one-filter objective at a
    convolution only that filter's output channel is computed. The defaults of
    the optimization settings are :data:`~kernelviz.optvis.settings.DEFAULTS`
    (an :class:`~kernelviz.OptimSettings` gives them all at once:
    ``visualize(model, obj, **settings.visualize_kwargs())``).

    Args:
        model: any ``nn.Module`` taking ``(B, 3, H, W)``.
        objective: an :class:`~kernelviz.objectives.Objective` or
            ``"layer:filter"`` (``"conv3_2:17"``; ``"conv3_2:0,1,2"`` makes one
            image per listed filter).
        steps: optimizer steps (Adam).
        size: image side in pixels; default: the model's input size.
        lr: Adam learning rate.
        param: ``"fourier"`` (default: decorrelated spectrum, far less noisy)
            or ``"pixel"`` (the article's plain pixels), or a callable with
            :func:`~kernelviz.params.pixel_image`'s signature.
        decay: the fourier image's spectrum exponent (``1/f**decay``).
        detail: the fourier image's resolution as a fraction of ``size`` (built smaller, upsampled).
        transforms: ``"standard"`` (Lucid's pad/jitter/scale/rotate recipe),
            ``None`` for none, or a list of functions ``tensor -> tensor``.
        seed: seeds the start image and the transforms: the same seed and
            settings give the same images on the CPU.
        image_seeds: one seed per image for its start (the transforms still
            use ``seed``): an image then comes out the same whatever batch it is
            optimized in (used by the CLI, grids and atlases; see :func:`filter_seed`).
        device: where to optimize; default: where the model's weights are.
        batch: number of images; default: one per listed filter, else 1.
        init: start from this image ``(B, 3, H, W)`` or ``(3, H, W)`` in
            ``[0, 1]`` instead of noise (feature accentuation, DeepDream).
        mean, std: input normalization; default: the model's own
            (:func:`~kernelviz.model_meta`), none for a plain model.
        precision: ``"auto"`` (bf16 on CUDA where supported, else fp32),
            ``"fp32"``, ``"bf16"`` or ``"fp16"`` for the model's forward/backward.
        redirect_steps: during the first steps, ReLU gradients are redirected
            for images whose gradient is blocked entirely (dead units).
        channels_last: feed the network channels-last tensors (faster convolutions; same values).
        progress: reports stage ``"optimize"`` (steps done of ``steps``, the batch's mean objective) every 16
            steps; it may raise :class:`StopOptimization` to stop there.

    Returns:
        A :class:`VisResult`. Ctrl-C stops early and returns what was reached
        (``interrupted=True``).

    Raises:
        KernelvizError: bad layer, filter, or setting.
        NonFiniteObjectiveError: the objective became NaN/inf (lower ``lr``
            or use fp32).
    """
    objective = as_objective(objective)
    keep_heap()  # no page faults from re-mapping activation buffers every step (see kernelviz.optvis.perf)
    checked = OptimSettings(  # validates every setting, with one wording for every front-end
        steps=steps, size=size, lr=lr, param=param, decay=decay, detail=detail, transforms=transforms, seed=seed,
        precision=precision,
    )  # fmt: skip
    meta = model_meta(check_model(model))
    dev = resolve_device(device) if device is not None else model_device(model)
    precision = resolve_precision(checked.precision, dev)
    b, init, hw = _batch_shape(objective, batch, init, int(size or meta.input_size))
    # The image, its parameters, Adam's two moments, the gradient and the transformed copies: about 12 floats
    # a pixel before the network's own activations; checked before anything that size is allocated.
    check_allocation(
        12 * 4 * b * 3 * hw[0] * hw[1],
        f"optimizing {b} image(s) of {hw[1]}x{hw[0]} px",
        dev,
        "use a smaller size or fewer filters at once (size=, batch_size=; --size, --batch-size)",
    )
    norm = meta.with_normalization(mean, std)
    with guarded(model), torch.inference_mode(False), torch.enable_grad():  # even inside a caller's no_grad
        # the image and the constants are made here: tensors made under a caller's inference_mode cannot be
        # saved for the backward pass
        generator = torch.Generator().manual_seed(seed)
        image = _start_image(param, b, hw, generator, image_seeds, dev, init, decay, detail)
        settings = _settings_record(checked, transforms, image, hw, init, image_seeds, b)
        settings.update(
            precision=precision,
            device=str(dev),
            normalization={"mean": norm.mean, "std": norm.std},
            redirect_steps=redirect_steps,
            init="image" if init is not None else "noise",
        )
        start = time.perf_counter()
        cap = capture(model, objective.layers, stop=True)
        sliced = _plan_forward(model, objective, cap, b, dev)
        settings["computed"] = "one channel of the target layer" if sliced else "full layers"
        # channels-last makes oneDNN/cuDNN convolutions faster (measured: 24% less time per step on
        # a 2-core AVX2 CPU at conv3_2); MPS gains nothing from it.
        memory_format = torch.channels_last if channels_last and dev.type != "mps" else torch.contiguous_format
        settings["channels_last"] = memory_format is torch.channels_last
        normalize = norm.normalizer(dev)

        def score(x: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
            cap.acts.clear()
            # StopForward is raised once every layer the objective reads is computed
            with _autocast(dev, precision), contextlib.suppress(StopForward):
                model(normalize(x).contiguous(memory_format=memory_format))
            acts = dict(cap.acts)
            acts[INPUT] = img
            return objective({k: v.float() for k, v in acts.items()})  # (B,)

        chain = build_transforms(transforms, generator, hw[-1])
        with cap:
            history, interrupted = _climb(model, image, chain, score, objective, steps, lr, redirect_steps, progress)
            with torch.no_grad():
                img = image.render().detach()
                final = score(img, img).detach()
    seconds = time.perf_counter() - start
    hist = torch.stack(history).float().cpu() if history else torch.zeros(0, b)
    final = final.float().cpu()
    dead = (final == 0) & ((hist == 0).all(0) if len(hist) else torch.ones(b, dtype=torch.bool))
    return VisResult(
        images=img.float().cpu(),
        history=hist,
        final=final,
        objective=objective.description,
        settings=settings,
        dead=dead,
        interrupted=interrupted,
        steps_done=len(history),
        seconds=seconds,
    )


def _batch_shape(
    objective: Objective, batch: int | None, init: torch.Tensor | None, side: int
) -> tuple[int, torch.Tensor | None, tuple[int, int]]:
    """The number of images, the start image checked and expanded to ``(B, 3, H, W)``, and ``(H, W)``."""
    b = _batch_size(objective, batch)
    if b < 1:
        raise KernelvizError(f"batch must be >= 1, got {b}")
    if init is None:
        return b, None, (side, side)
    init = check_images(init, "init")  # (B, 3, H, W) in [0, 1]
    if init.shape[0] == 1 and b > 1:
        init = init.expand(b, -1, -1, -1)
    if init.shape[0] != b or init.shape[1] != 3:
        raise KernelvizError(f"init must be (3, H, W) or ({b}, 3, H, W), got {tuple(init.shape)}")
    return b, init, (init.shape[-2], init.shape[-1])


def _start_image(
    param: str | Callable[..., ImageParam],
    b: int,
    hw: tuple[int, int],
    generator: torch.Generator,
    image_seeds: Sequence[int] | None,
    dev: torch.device,
    init: torch.Tensor | None,
    decay: float,
    detail: float,
) -> ImageParam:
    """The image to optimize: from ``init``, or from noise drawn with ``generator`` (or one generator per
    image seed, so that an image comes out the same whatever batch it is in)."""
    starts: torch.Generator | list[torch.Generator] = generator
    if image_seeds is not None:
        if len(image_seeds) != b:
            raise KernelvizError(f"{len(image_seeds)} image seeds for a batch of {b}")
        starts = [torch.Generator().manual_seed(s) for s in image_seeds]
    if callable(param):
        return param(b, hw, generator=starts, device=dev, init=init)
    return image_param(param, b, hw, generator=starts, device=dev, init=init, decay=decay, detail=detail)


def _settings_record(
    checked: OptimSettings,
    transforms: str | Sequence[Transform] | None,
    image: ImageParam,
    hw: tuple[int, int],
    init: torch.Tensor | None,
    image_seeds: Sequence[int] | None,
    b: int,
) -> dict[str, Any]:
    """The run's settings as its record keeps them: every optimization setting of :class:`OptimSettings` in
    its order (the size as ``[H, W]``, the parameterization's name, decay and detail where they apply, the
    transforms as given or ``"custom"``), then the image seeds and the batch."""
    settings = {k: v for k, v in checked.visualize_kwargs().items() if k != "precision"}
    settings.update(
        size=list(hw),
        param=image.name,
        decay=checked.decay if image.name == "fourier" else None,
        detail=checked.detail if image.name == "fourier" and init is None else None,
        transforms=transforms if isinstance(transforms, str) or transforms is None else "custom",
    )
    return {**settings, "image_seeds": list(image_seeds) if image_seeds is not None else None, "batch": b}


def _plan_forward(model: nn.Module, objective: Objective, cap: Any, b: int, dev: torch.device) -> bool:
    """Set up ``cap`` to compute only the objective's channels of its one target layer when that is possible
    (see :func:`_slicing`); whether it did."""
    sliced = _slicing(model, objective, cap.paths)
    if sliced is None:
        return False
    layer, conv, relu = sliced
    need = objective.needs[layer]  # not None: _slicing checked it
    wanted = [need] * b if isinstance(need, int) else list(need or ())
    bad = [c for c in wanted if c >= conv.out_channels]
    if bad:
        raise out_of_range("filter", bad[0], conv.out_channels, f"layer {layer!r}")
    cap.slice_channels(layer, torch.tensor(wanted, device=dev), conv=conv, relu=relu)
    return True


def _climb(
    model: nn.Module,
    image: ImageParam,
    chain: Sequence[Transform],
    score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    objective: Objective,
    steps: int,
    lr: float,
    redirect_steps: int,
    progress: OnProgress | None,
) -> tuple[list[torch.Tensor], bool]:
    """The gradient ascent: ``steps`` Adam steps on the image's parameters; the objective per step, and whether
    Ctrl-C stopped it early."""
    optimizer = torch.optim.Adam(image.params, lr=lr)
    history: list[torch.Tensor] = []
    try:
        for step in range(steps):
            with redirected_relus(model, enabled=step < redirect_steps):
                img = image.render()  # (B, 3, H, W) in [0, 1]
                x = img
                for t in chain:
                    x = t(x)
                values = score(x, img)
            if not values.requires_grad:
                raise KernelvizError(
                    f"{objective.description} does not depend on the image: the layer's output is the "
                    "same whatever the input; pick a layer the image flows through"
                )
            optimizer.zero_grad(set_to_none=True)
            (-values.sum()).backward()  # we maximize
            optimizer.step()
            with torch.no_grad():
                image.project()
            history.append(values.detach())
            if (step + 1) % 16 == 0 or step + 1 == steps:
                _check_finite(history, step)
                report(progress, "optimize", step + 1, steps, float(values.detach().mean()))
    except (KeyboardInterrupt, StopOptimization):
        return history, True
    return history, False


class StopOptimization(Exception):  # noqa: N818 (a signal, not an error)
    """Raised by a ``progress`` callback to stop the optimization at that step, as Ctrl-C does: the result is
    returned with ``interrupted=True`` (the explorer's worker stops a batch that a newer page outranks)."""


def filter_seed(seed: int, index: int) -> int:
    """The start seed of filter ``index``'s image under run seed ``seed`` (batch-independent)."""
    return seed * 1_000_003 + index


def _check_finite(history: list[torch.Tensor], step: int) -> None:
    recent = torch.stack(history[-16:])
    if not torch.isfinite(recent).all():
        raise NonFiniteObjectiveError(
            f"the objective became NaN or infinite by step {step + 1}; "
            "try a lower learning rate or fp32 (lr=, precision='fp32'; --lr, --precision fp32), or check the model "
            "for overflow"
        )
