"""Layer names: VGG-style aliases, module paths, and the layer table.

Every layer can be named by its module path (``"features.12"``), as
``model.named_modules()`` spells it. VGG models (any torchvision VGG variant,
or any network built the same way: a ``features`` ``nn.Sequential`` of
conv/bn/relu/pool and a ``classifier`` of linear/relu/dropout) also get the
classic names: ``conv3_2`` is the output of the second convolution of the
third block **before** its ReLU, ``relu3_2`` the same after it, ``bn3_2`` the
batch norm of ``_bn`` variants, ``pool3`` the max pool that ends block 3, and
``fc6``, ``relu6``, ``fc7``, ``relu7``, ``fc8`` the classifier.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .errors import KernelvizError, close_matches
from .models import model_device

__all__ = [
    "LOGITS",
    "LayerInfo",
    "check_filters",
    "count_depth",
    "layer_channels",
    "layer_names",
    "list_layers",
    "resolve_layer",
]

#: Name of the model's own output (the class logits of a classifier).
LOGITS = "logits"

_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_POOL_TYPES = (nn.MaxPool2d, nn.AvgPool2d)
_LAYER_TYPES = (*_CONV_TYPES, *_POOL_TYPES, nn.Linear, nn.modules.batchnorm._BatchNorm)


def _vgg_aliases(model: nn.Module) -> dict[str, str]:
    """Map VGG-style names to module paths, or return ``{}`` for a non-VGG layout."""
    features = getattr(model, "features", None)
    classifier = getattr(model, "classifier", None)
    if not isinstance(features, nn.Sequential) or not any(isinstance(m, nn.Conv2d) for m in features):
        return {}
    allowed = (nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d)
    if not all(isinstance(m, allowed) for m in features):
        return {}
    aliases: dict[str, str] = {}
    block, k = 1, 0
    for idx, module in features.named_children():
        path = f"features.{idx}"
        if isinstance(module, nn.Conv2d):
            k += 1
            aliases[f"conv{block}_{k}"] = path
        elif isinstance(module, nn.BatchNorm2d):
            aliases[f"bn{block}_{k}"] = path
        elif isinstance(module, nn.ReLU):
            aliases[f"relu{block}_{k}"] = path
        else:  # MaxPool2d ends the block
            aliases[f"pool{block}"] = path
            block, k = block + 1, 0
    if isinstance(classifier, nn.Sequential):
        fc = 5  # VGG's fully connected layers are numbered fc6, fc7, fc8
        for idx, module in classifier.named_children():
            path = f"classifier.{idx}"
            if isinstance(module, nn.Linear):
                fc += 1
                aliases[f"fc{fc}"] = path
            elif isinstance(module, nn.ReLU):
                aliases[f"relu{fc}"] = path
            elif isinstance(module, nn.Dropout):
                aliases[f"drop{fc}"] = path
    return aliases


def layer_names(model: nn.Module) -> dict[str, str]:
    """All names a layer of ``model`` can be called by, mapped to module paths.

    Returns:
        ``{name: module_path}``: the VGG aliases (when the model has a VGG
        layout), then every named submodule's own path, then ``"logits"``
        (the model output, path ``""``).
    """
    names = _vgg_aliases(model)
    for path, _ in model.named_modules():
        if path:
            names.setdefault(path, path)
    names[LOGITS] = ""
    return names


def resolve_layer(model: nn.Module, name: str) -> str:
    """Turn a layer name or module path into a module path.

    Raises:
        KernelvizError: the name is unknown; the message suggests close names
            and points to ``kernelviz layers``.
    """
    names = layer_names(model)
    if name in names:
        return names[name]
    hint = close_matches(name, names)
    raise KernelvizError(
        f"unknown layer {name!r}.{hint} Run `kernelviz layers MODEL` "
        "(or kernelviz.list_layers(model)) to see every layer name."
    )


def get_module(model: nn.Module, path: str) -> nn.Module:
    """The submodule at ``path`` (``""`` is the model itself)."""
    return model.get_submodule(path) if path else model


def layer_channels(model: nn.Module, name: str, input_size: int = 224) -> int:
    """Number of output channels (filters) of layer ``name``.

    Read from the module when it says (``Conv2d.out_channels``,
    ``Linear.out_features``), else measured with a forward pass stopped at the layer.
    """
    path = resolve_layer(model, name)
    module = get_module(model, path)
    for attr in ("out_channels", "out_features"):
        if isinstance(getattr(module, attr, None), int):
            return getattr(module, attr)
    from .capture import activations

    device = model_device(model)
    act = activations(model, torch.zeros(1, 3, input_size, input_size, device=device), [name])[name]
    return act.shape[1]


def check_filters(model: nn.Module, name: str, filters: list[int], input_size: int = 224) -> None:
    """Raise :class:`KernelvizError` unless every index in ``filters`` is a filter of layer ``name``."""
    count = layer_channels(model, name, input_size)
    bad = [n for n in filters if not 0 <= n < count]
    if bad:
        raise KernelvizError(f"filter {bad[0]} is out of range: layer {name!r} has {count} filters (0-{count - 1})")


@dataclass(frozen=True)
class LayerInfo:
    """One row of the layer table.

    Attributes:
        name: the preferred name (VGG alias when there is one, else the path).
        path: module path in ``model.named_modules()``.
        type: the module's class name.
        shape: output shape for one image at the table's input size, without
            the batch dimension, e.g. ``(256, 56, 56)``.
        channels: output channels (first entry of ``shape``).
        receptive_field: side in input pixels of the region one output
            position sees, or ``None`` when the layer sees the whole image
            (fully connected, adaptive pooling).
        trainable: whether the layer counts toward the classic depth
            (a convolution or a fully connected layer with weights).
        stride: input pixels between neighbouring output positions (``None`` without a grid).
        offset: input x (= y) coordinate of the center of output position 0, pixel 0 spanning
            ``[0, 1)``; position ``i`` is centered at ``offset + i * stride``.
    """

    name: str
    path: str
    type: str
    shape: tuple[int, ...]
    channels: int
    receptive_field: int | None
    trainable: bool
    stride: int | None = None
    offset: float | None = None


_Field = tuple[float, float, float]  # (receptive field, stride in input pixels, center of unit 0)


def _first(value: int | Sequence[int] | str) -> int:
    """The first spatial entry of a size setting; 0 for a padding given as a string ("same")."""
    if isinstance(value, int):
        return value
    if isinstance(value, Sequence) and not isinstance(value, str) and value:
        return int(value[0])
    return 0


def _rf_step(module: nn.Module, field: _Field) -> _Field:
    """Receptive field, input-pixel stride and center of the first unit after ``module``.

    Standard receptive-field arithmetic along the first spatial axis (square kernels assumed);
    centers are in input pixel coordinates where pixel 0 spans [0, 1).
    """
    rf, jump, start = field
    if isinstance(module, nn.modules.padding._ConstantPadNd | nn.ReflectionPad2d | nn.ReplicationPad2d):
        return rf, jump, start - _first(module.padding) * jump  # (left, right, top, bottom): left first
    if isinstance(module, (nn.Linear, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        return math.inf, jump, start
    if isinstance(module, _CONV_TYPES + _POOL_TYPES):
        k = _first(module.kernel_size)
        s = _first(module.stride)
        d = _first(getattr(module, "dilation", 1))
        p = _first(getattr(module, "padding", 0))
        span = (k - 1) * d
        return rf + span * jump, jump * s, start + (span / 2 - p) * jump
    return field


def count_depth(model: nn.Module) -> int:
    """The network's depth counted the classic way: conv and fully connected layers.

    Only layers with trainable weights count, and of those only convolutions
    and linear layers (batch norm is not a layer in this count): VGG-16 has
    13 + 3 = 16.
    """
    return sum(isinstance(m, (*_CONV_TYPES, nn.Linear)) for m in model.modules())


def list_layers(
    model: nn.Module,
    input_size: int | tuple[int, int] | None = None,
    *,
    device: torch.device | str | None = None,
    include: Sequence[str] = (),
) -> list[LayerInfo]:
    """Describe every leaf layer of ``model`` in execution order.

    A forward pass on one zero image records each layer's output shape; the
    receptive field follows each tensor through the network, so branches
    (ResNet shortcuts) are measured along the path that produced them.

    Args:
        model: any ``nn.Module`` taking ``(B, 3, H, W)``.
        input_size: ``H`` or ``(H, W)``; default: the model's own input size
            (224 for torchvision classifiers).
        device: where to run the pass; default: the model's device.
        include: also describe these layers (names or paths) when they are blocks
            (modules with children, such as ``layer3.0`` or ``_blocks.9``).

    Returns:
        One :class:`LayerInfo` per layer that ran (every leaf module, every conv, linear, pool
        and batch-norm layer, and the blocks in ``include``), in the order their outputs were made.
    """
    from .guard import guarded
    from .models import model_meta

    if input_size is None:
        input_size = model_meta(model).input_size
    h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
    if device is None:
        device = model_device(model)
    aliases = {path: name for name, path in layer_names(model).items() if name != path}

    info: dict[int, _Field] = {}  # id(tensor) -> its receptive field
    keep: list[torch.Tensor] = []  # keeps tensors alive so their ids stay unique
    last: _Field = (1.0, 1.0, 0.5)
    rows: list[LayerInfo] = []

    def hook(path: str, module: nn.Module, inputs: tuple, output: object) -> None:
        nonlocal last
        src = next((t for t in inputs if isinstance(t, torch.Tensor)), None)
        if list(module.children()) and not isinstance(module, _LAYER_TYPES):
            # a block: its output's field was set by the child that made it, else by the last child
            field = info.get(id(output), last)
        elif list(module.children()):
            # a layer that first runs a helper child on its input (a conv padding "same" itself):
            # the child's output, the most recent one, is what the layer computes on
            field = _rf_step(module, last)
        else:
            field = _rf_step(module, info.get(id(src), last) if src is not None else last)
        rf, jump, start = field
        if isinstance(output, torch.Tensor):
            info[id(output)] = field
            keep.append(output)
            shape = tuple(output.shape[1:])
            last = field
            rows.append(
                LayerInfo(
                    name=aliases.get(path, path),
                    path=path,
                    type=type(module).__name__,
                    shape=shape,
                    channels=shape[0] if shape else 0,
                    receptive_field=None if math.isinf(rf) else int(min(rf, max(h, w))),
                    stride=None if math.isinf(rf) else int(jump),
                    offset=None if math.isinf(rf) else start,
                    trainable=isinstance(module, (*_CONV_TYPES, nn.Linear)),
                )
            )

    # leaves, and layers that compute themselves around a helper child (e.g. a Conv2d subclass
    # that pads with its own ZeroPad2d module first)
    wanted = {resolve_layer(model, name) for name in include}
    leaves = [
        (p, m)
        for p, m in model.named_modules()
        if p and (not list(m.children()) or isinstance(m, _LAYER_TYPES) or p in wanted)
    ]
    with guarded(model):
        handles = [m.register_forward_hook(lambda mod, i, o, p=p: hook(p, mod, i, o)) for p, m in leaves]
        try:
            with torch.no_grad():
                x = torch.zeros(1, 3, h, w, device=device)
                keep.append(x)
                info[id(x)] = (1.0, 1.0, 0.5)
                model(x)
        finally:
            for handle in handles:
                handle.remove()
    return rows
