"""Load models and weights; keep each model's preprocessing and class names beside it."""

from __future__ import annotations

import contextlib
import importlib
import math
import os
import re
import sys
import urllib.error
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import KernelvizError, NotFoundError, close_matches
from .guard import check_model

__all__ = [
    "ModelMeta",
    "load_checkpoint",
    "load_model",
    "model_device",
    "model_meta",
    "model_slug",
    "resolve_device",
    "set_model_meta",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelMeta:
    """What kernelviz needs to know about a model besides its modules.

    Attributes:
        name: how the model was asked for (``"vgg16"``, ``"pkg.mod:factory"``).
        weights: which weights it carries (``"IMAGENET1K_V1"``, ``"random"``,
            a checkpoint path).
        mean, std: per-channel normalization applied to a ``[0, 1]`` RGB image
            before the model sees it; ``None`` for none.
        input_size: the side of the square image the model was trained on.
        categories: class names, index = logit index; empty when unknown.
        preprocessing: where ``mean``, ``std`` and ``input_size`` come from (``"torchvision weights"``,
            ``"timm pretrained_cfg"``, ``"image processor"``, ``"set by the user"``...), or ``"unknown"``:
            then images go in as RGB in ``[0, 1]`` at 224 px, which may not be how the model was trained.
    """

    name: str = "model"
    weights: str = "unknown"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    input_size: int = 224
    categories: tuple[str, ...] = field(default=(), repr=False)
    preprocessing: str = "unknown"

    def __post_init__(self) -> None:
        """Checked wherever metadata is made (:func:`set_model_meta`, :func:`load_model`, ``replace``): a bad
        normalization would otherwise surface later as NaN images or a broadcasting error."""
        for what in ("mean", "std"):
            given = getattr(self, what)
            if given is None:
                continue
            try:
                numbers = tuple(float(v) for v in given)
            except (TypeError, ValueError):
                raise KernelvizError(f"{what} takes 1 or 3 numbers (one per RGB channel), got {given!r}") from None
            if len(numbers) not in (1, 3) or not all(math.isfinite(v) for v in numbers):
                raise KernelvizError(f"{what} takes 1 or 3 finite numbers (one per RGB channel), got {list(given)}")
            if what == "std" and min(numbers) <= 0:
                raise KernelvizError(f"std must be positive (it divides the image), got {list(given)}")
            object.__setattr__(self, what, numbers * 3 if len(numbers) == 1 else numbers)
        if isinstance(self.input_size, bool) or not isinstance(self.input_size, int) or self.input_size < 8:
            raise KernelvizError(f"input size must be a whole number of at least 8 pixels, got {self.input_size!r}")

    def with_normalization(self, mean: Sequence[float] | None, std: Sequence[float] | None) -> ModelMeta:
        """This metadata with ``mean``/``std`` replacing the model's own where given (``None`` keeps it)."""
        return replace(
            self,
            mean=tuple(mean) if mean is not None else self.mean,
            std=tuple(std) if std is not None else self.std,
        )

    def normalizer(
        self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """``x -> (x - mean) / std`` for ``(B, C, H, W)`` images, its constants made once on ``device``
        (the optimizer calls it every step); the identity when the model has no normalization."""
        if self.mean is None or self.std is None:
            return lambda x: x
        mean = torch.tensor(self.mean, device=device, dtype=dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=device, dtype=dtype).view(1, -1, 1, 1)
        return lambda x: (x - mean) / std

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Map a ``(B, 3, H, W)`` image in ``[0, 1]`` to the model's input space."""
        return self.normalizer(x.device, x.dtype)(x)


_META_ATTR = "kernelviz_meta"


def model_meta(model: nn.Module) -> ModelMeta:
    """The :class:`ModelMeta` attached by :func:`load_model` or :func:`set_model_meta`; else what the model
    carries itself (:func:`carried_meta`); else a neutral default (no normalization, 224 px,
    ``preprocessing="unknown"``): pass ``mean``/``std`` to the functions that take them, or call
    :func:`set_model_meta`.
    """
    meta = getattr(check_model(model), _META_ATTR, None)
    if isinstance(meta, ModelMeta):
        return meta
    return carried_meta(model) or ModelMeta(name=type(model).__name__)


def carried_meta(model: nn.Module) -> ModelMeta | None:
    """The preprocessing a model carries itself, when it carries any:

    * timm models: ``pretrained_cfg`` (or ``default_cfg``) ``mean``, ``std`` and ``input_size``
      (Inception-v3: 299 px and mean 0.5); ImageNet class names for a 1000-class model;
    * an ``image_processor`` attribute (a Hugging Face image processor attached to the model):
      ``image_mean``, ``image_std`` and its crop or resize size.
    """
    name = type(model).__name__
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None)
    if isinstance(cfg, dict) and cfg.get("mean") and cfg.get("std"):
        size = cfg.get("input_size") or (3, 224, 224)
        classes = cfg.get("num_classes")
        return ModelMeta(
            name=name,
            mean=tuple(float(v) for v in cfg["mean"]),
            std=tuple(float(v) for v in cfg["std"]),
            input_size=int(size[-1]),
            categories=_imagenet_categories() if classes == 1000 else (),
            preprocessing="timm pretrained_cfg",
        )
    processor = getattr(model, "image_processor", None)
    mean, std = getattr(processor, "image_mean", None), getattr(processor, "image_std", None)
    if mean is not None and std is not None:
        size = getattr(processor, "crop_size", None) or getattr(processor, "size", None) or {}
        side = size.get("height") or size.get("shortest_edge") if isinstance(size, dict) else size
        return ModelMeta(
            name=name,
            mean=tuple(float(v) for v in mean),
            std=tuple(float(v) for v in std),
            input_size=int(side or 224),
            preprocessing="image processor",
        )
    return None


def _imagenet_categories() -> tuple[str, ...]:
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    return tuple(_IMAGENET_CATEGORIES)


def model_device(model: nn.Module) -> torch.device:
    """Where the model's weights are (the CPU for a model without parameters)."""
    return next((p.device for p in check_model(model).parameters()), torch.device("cpu"))


def set_model_meta(model: nn.Module, meta: ModelMeta | None = None, **changes: object) -> nn.Module:
    """Attach preprocessing/class metadata to ``model`` (returns the same model).

    Giving ``mean``, ``std`` or ``input_size`` here marks the preprocessing as known (``"set by the user"``)
    unless ``preprocessing`` says where it comes from.
    """
    if {"mean", "std", "input_size"} & changes.keys():
        changes.setdefault("preprocessing", "set by the user")
    meta = replace(meta or model_meta(model), **changes)  # type: ignore[arg-type]
    object.__setattr__(model, _META_ATTR, meta)
    return model


def model_slug(name: str) -> str:
    """A file-name-safe short name: ``"pkg.mod:make_net"`` → ``"make_net"``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name.rpartition(":")[2] or name)


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"``/``None`` → CUDA if present, else Apple MPS, else CPU; otherwise as given."""
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise KernelvizError(f"unknown device {device!r}: use auto, cpu, cuda, cuda:N or mps") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise KernelvizError("device 'cuda' was asked for, but no CUDA GPU is available here; use device 'cpu'")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise KernelvizError(
            f"device {str(dev)!r} was asked for, but this machine has {count} CUDA GPU(s) (cuda:0-{count - 1})"
        )
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise KernelvizError("device 'mps' was asked for, but Apple MPS is not available here; use device 'cpu'")
    return dev


def _classifier_names() -> list[str]:
    import torchvision.models as tvm

    return sorted(tvm.list_models(module=tvm))


def load_checkpoint(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load a local checkpoint into ``model`` (in place) and return it.

    The file may hold a state dict, or a dict with the state dict under
    ``"state_dict"``, ``"model_state_dict"``, ``"model"`` or ``"state"``;
    a ``"module."`` prefix (DistributedDataParallel) is removed. Loading uses
    ``torch.load(..., weights_only=True)``: no code in the file is run.

    Raises:
        KernelvizError: missing or unreadable file, or keys that do not match.
    """
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"weights file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a corrupt file
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise KernelvizError(f"cannot read weights file {path}: not a PyTorch checkpoint ({first})") from err
    state = obj
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model", "state"):
            if isinstance(obj.get(key), dict):
                state = obj[key]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise KernelvizError(f"weights file {path} holds no state dict (a mapping of names to tensors)")
    if state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    own = model.state_dict()
    wrong = [k for k, v in state.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if wrong:
        k = wrong[0]
        raise KernelvizError(
            f"weights file {path} does not fit this model: {len(wrong)} tensor(s) of another shape (e.g. {k}: "
            f"{tuple(state[k].shape)} in the file, {tuple(own[k].shape)} in the model); was it saved from "
            "another architecture or number of classes?"
        )
    # All or nothing: every key is checked before a single tensor is copied into the model.
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s) (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s) (e.g. {', '.join(unexpected[:3])})")
    if problems:
        raise KernelvizError(f"weights file {path} does not fit this model: {'; '.join(problems)}")
    # a model built on the meta device takes the file's tensors as its own (nothing to copy into)
    meta = any(p.is_meta for p in model.parameters())
    backup = {} if meta else {k: v.detach().clone() for k, v in own.items()}
    try:
        model.load_state_dict(state, strict=True, assign=meta)
    except (RuntimeError, ValueError, TypeError) as err:  # refused by one of the model's own load hooks
        if backup:
            model.load_state_dict(backup, strict=False)  # every tensor back as it was
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise KernelvizError(f"weights file {path} does not fit this model ({first})") from err
    return model


#: Random weights are drawn with this seed, so "random" names one reproducible network.
RANDOM_WEIGHTS_SEED = 0


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Run the block with torch's global RNG seeded, restoring the caller's RNG state after."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _is_path(weights: str) -> bool:
    """Whether a ``weights`` argument names a file rather than a weights enum member."""
    return "/" in weights or os.sep in weights or bool(Path(weights).suffix) or Path(weights).exists()


def _offline_message(name: str, weights_name: str, url: str, err: BaseException) -> str:
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    return (
        f"could not get the pretrained {name} weights ({weights_name}): {err}. "
        f"torchvision downloads them once from {url} and caches them in {cache}. "
        f"Ways out: put that file in {cache} (copy it from a machine with internet), "
        f"or load a local checkpoint (weights=PATH; --weights PATH), or random weights (weights='random'; "
        "--weights random)."
    )


def _load_torchvision(name: str, weights: str | None) -> tuple[nn.Module, ModelMeta]:
    import torchvision.models as tvm

    names = _classifier_names()
    if name not in names:
        hint = close_matches(name, names)
        raise NotFoundError(
            f"unknown model {name!r}.{hint} Use a torchvision classifier name "
            "(vgg16, vgg16_bn, resnet50, alexnet, ...) or package.module:factory for your own."
        )
    enum = tvm.get_model_weights(name)
    if weights in (None, "random", "none"):  # the architecture's preprocessing, no class names
        meta = replace(_weights_meta(name, enum.DEFAULT), weights="random", categories=())
        with _seeded(RANDOM_WEIGHTS_SEED):
            model = tvm.get_model(name, weights=None)
        # the architecture built without weights may take another size than the weights' preprocessing
        # says (vit_h_14: built for 224 px, its DEFAULT weights for 518 px)
        own = getattr(model, "image_size", None)
        return model, replace(meta, input_size=own) if isinstance(own, int) else meta
    if _is_path(weights):  # a checkpoint of the same architecture: same preprocessing and classes
        model = load_checkpoint(tvm.get_model(name, weights=None), weights)
        return model, replace(_weights_meta(name, enum.DEFAULT), weights=str(weights))
    if weights == "default":
        w = enum.DEFAULT
    else:
        try:
            w = enum[weights]
        except KeyError as err:
            choices = ", ".join(m.name for m in enum)
            raise KernelvizError(f"model {name} has no weights {weights!r}; choose from: {choices}") from err
    model = tvm.get_model(name, weights=None)
    try:
        state = w.get_state_dict(progress=sys.stderr.isatty(), check_hash=True)
    except (urllib.error.URLError, OSError, RuntimeError) as err:
        raise KernelvizError(_offline_message(name, w.name, w.url, err)) from err
    model.load_state_dict(state)
    return model, _weights_meta(name, w)


def _weights_meta(name: str, w: Any) -> ModelMeta:
    """Preprocessing and class names of a torchvision weights enum member (no download)."""
    preprocess = w.transforms()
    crop = getattr(preprocess, "crop_size", [224])
    return ModelMeta(
        name=name,
        weights=w.name,
        mean=tuple(getattr(preprocess, "mean", IMAGENET_MEAN)),
        std=tuple(getattr(preprocess, "std", IMAGENET_STD)),
        input_size=int(crop[0] if isinstance(crop, list | tuple) else crop),
        categories=tuple(w.meta.get("categories") or ()),
        preprocessing="torchvision weights",
    )


def _first_line(err: BaseException) -> str:
    """``"TypeError: the first line of its message"``."""
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def _load_factory(spec: str, weights: str | None) -> tuple[nn.Module, ModelMeta]:
    module_name, _, attr = spec.partition(":")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # let a researcher's own module in the current folder import
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # ImportError, or whatever the module raises while it runs (SyntaxError, ...)
        raise KernelvizError(f"cannot import {module_name!r} for model {spec!r}: {_first_line(err)}") from err
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise KernelvizError(f"{module_name} has no callable {attr!r} to build model {spec!r}")
    try:
        model = factory()
    except Exception as err:
        raise KernelvizError(f"{spec}() raised {_first_line(err)}") from err
    if not isinstance(model, nn.Module):
        raise KernelvizError(f"{spec} returned {type(model).__name__}, not a torch.nn.Module")
    meta = replace(model_meta(model), name=spec)
    if weights in (None, "random", "none"):
        with _seeded(RANDOM_WEIGHTS_SEED):
            for m in model.modules():
                reset = getattr(m, "reset_parameters", None)
                if callable(reset):
                    reset()
        meta = replace(meta, weights="random")
    elif weights != "default":
        load_checkpoint(model, weights)
        meta = replace(meta, weights=str(weights))
    elif meta.weights == "unknown":
        meta = replace(meta, weights="default")
    return model, meta


def load_model(
    name: str,
    weights: str | os.PathLike | None = "default",
    device: str | torch.device | None = "auto",
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    input_size: int | None = None,
) -> nn.Module:
    """Load a model by name, with its weights, preprocessing and class names.

    Args:
        name: a torchvision classifier (``"vgg16"``, ``"vgg19_bn"``,
            ``"resnet50"``, ``"alexnet"``, ...) or ``"package.module:factory"``,
            a callable returning an ``nn.Module`` (the current folder is
            importable).
        weights: ``"default"`` for torchvision's pretrained DEFAULT weights
            (or, for a factory, whatever it returns); a weights enum name such
            as ``"IMAGENET1K_V1"``; ``None``/``"random"`` for random
            initialization; or a path to a local checkpoint.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"mps"``...
        mean, std, input_size: the preprocessing the model was trained with, replacing what its weights
            or its configuration say (three values each for mean and std, or one for all channels).

    Returns:
        The model in eval mode on ``device``; :func:`model_meta` gives its
        normalization, input size and class names.

    Raises:
        KernelvizError: unknown model or weights, unreadable or mismatched
            checkpoint, or pretrained weights that cannot be downloaded
            (the message says where torchvision caches them and what to do).
    """
    weights = None if weights is None else str(weights)
    if ":" in name and not Path(name).exists():
        model, meta = _load_factory(name, weights)
    else:
        model, meta = _load_torchvision(name, weights)
    if any(p.is_meta for p in model.parameters()):
        raise KernelvizError(
            f"{name} has its weights on the meta device (shapes only, no values): load real ones (weights=PATH; "
            "--weights PATH), or build the model without torch.device('meta')"
        )
    model = model.to(resolve_device(device)).eval()
    if mean is not None or std is not None or input_size is not None:
        meta = _overridden(meta, mean, std, input_size)
    return set_model_meta(model, meta)


def _overridden(
    meta: ModelMeta, mean: Sequence[float] | None, std: Sequence[float] | None, input_size: int | None
) -> ModelMeta:
    """``meta`` with the user's preprocessing (checked by :class:`ModelMeta` itself: 1 or 3 finite values, a
    positive std, a size of at least 8)."""
    values: dict[str, Any] = {
        k: v for k, v in (("mean", mean), ("std", std), ("input_size", input_size)) if v is not None
    }
    if (("mean" in values) != ("std" in values)) and (meta.mean is None or meta.std is None):
        raise KernelvizError("give both mean and std: the model carries no normalization to complete them")
    return replace(meta, **values, preprocessing="set by the user")
