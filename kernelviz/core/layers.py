"""The layer table: output shapes, channels, receptive fields, and the classic depth count."""

from __future__ import annotations

import contextlib
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import nn

from ..errors import KernelvizError, out_of_range
from .capture import StopForward, activations, output_tensor
from .guard import check_model, guarded
from .layout import layout_of, prefix_tokens
from .models import model_device, model_meta
from .names import INPUT_SUFFIX, get_module, layer_names, resolve_layer

__all__ = [
    "INPUT_SUFFIX",
    "LayerInfo",
    "asked_layers",
    "check_filters",
    "choose_filters",
    "count_depth",
    "default_layer",
    "default_units",
    "field_text",
    "grid_text",
    "layer_channels",
    "layer_shape",
    "list_layers",
]

_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_POOL_TYPES = (nn.MaxPool2d, nn.AvgPool2d)
_LAYER_TYPES = (*_CONV_TYPES, *_POOL_TYPES, nn.Linear, nn.modules.batchnorm._BatchNorm)
#: Elementwise nonlinearities (ReLU, ReLU6, GELU, SiLU, Sigmoid...): every class of ``torch.nn``'s activation
#: module but attention and the softmax family, which mix positions or channels.
ACTIVATION_TYPES = tuple(
    cls
    for cls in vars(nn.modules.activation).values()
    if isinstance(cls, type)
    and issubclass(cls, nn.Module)
    and cls.__module__ == nn.modules.activation.__name__
    and cls is not nn.Module
    and not cls.__name__.startswith(("Softmax", "LogSoftmax", "Softmin", "MultiheadAttention"))
)


def module_kind(module: nn.Module) -> str:
    """``"block"`` for a module with children that is not a layer of its own (``layer3.0``, ``_blocks.9``),
    ``"activation"`` for an elementwise nonlinearity, ``""`` for any other layer."""
    if list(module.children()) and not isinstance(module, _LAYER_TYPES):
        return "block"
    return "activation" if isinstance(module, ACTIVATION_TYPES) else ""


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
    device = model_device(model)
    act = activations(model, torch.zeros(1, 3, input_size, input_size, device=device), [name])[name]
    return act.shape[1]


def check_filters(model: nn.Module, name: str, filters: list[int], input_size: int = 224) -> None:
    """Raise :class:`KernelvizError` unless every index in ``filters`` is a filter of layer ``name``."""
    count = layer_channels(model, name, input_size)
    bad = [n for n in filters if not 0 <= n < count]
    if bad:
        raise out_of_range("filter", bad[0], count, f"layer {name!r}")


def choose_filters(model: nn.Module, name: str, filters: Sequence[int] | None, input_size: int = 224) -> list[int]:
    """``filters`` as a list, each checked against layer ``name``; ``None`` means every filter of the layer."""
    if filters is None:
        return list(range(layer_channels(model, name, input_size)))
    chosen = list(filters)
    check_filters(model, name, chosen, input_size)
    return chosen


@dataclass(frozen=True)
class LayerInfo:
    """One row of the layer table.

    Attributes:
        name: the preferred name (VGG alias when there is one, else the path).
        path: module path in ``model.named_modules()``.
        type: the module's class name.
        shape: output shape for one image at the table's input size, without the batch dimension, as the
            units are read (:mod:`kernelviz.core.layout`): ``(256, 56, 56)`` for a convolution, ``(3072, 14, 14)``
            for a ViT-B MLP activation whose output is 197 tokens of 3072 (the class token dropped), ``(C, h, w)``
            for a channels-last ``(h, w, C)`` output (inside ConvNeXt blocks, Swin stages).
        channels: the units: output channels, the first entry of ``shape``.
        receptive_field: side in input pixels of the region one output
            position sees (it may exceed the input: then border positions see
            padding too), or ``None`` when the layer sees the whole image
            (fully connected, adaptive pooling).
        trainable: whether the layer counts toward the classic depth
            (a convolution or a fully connected layer with weights).
        stride: input pixels between neighbouring output positions (``None`` without a grid).
        offset: input x (= y) coordinate of the center of output position 0, pixel 0 spanning
            ``[0, 1)``; position ``i`` is centered at ``offset + i * stride``.
        kind: ``"block"`` (a module with children, listed when asked for), ``"activation"`` (an
            elementwise nonlinearity), or ``""``: :func:`module_kind`.
        output: the module's own output shape (batch dimension left out): ``(197, 3072)`` for those tokens.
        layout: how ``output`` is read as ``shape``: ``"map"``, ``"tokens"``, ``"channels_last"`` or ``"other"``.
        prefix: tokens dropped before the patch grid (class, distillation, registers); 0 but for tokens.
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
    kind: str = ""
    output: tuple[int, ...] = ()
    layout: str = "map"
    prefix: int = 0


def field_text(receptive_field: int | None, size: int) -> str:
    """A receptive field for people: ``"32"``, ``"427 (> input)"`` when it exceeds the ``size``-px input
    (border units then see padding), ``"all"`` for a layer that sees the whole image."""
    if receptive_field is None:
        return "all"
    return f"{receptive_field} (> input)" if receptive_field > size else str(receptive_field)


def grid_text(row: LayerInfo) -> str:
    """The grid a layer's units are read on: ``"56x56"``, ``"14x14 +1 token"``, ``"7x7 channels-last"``, or
    ``"-"`` without one."""
    if len(row.shape) != 3:
        return "-"
    grid = f"{row.shape[1]}x{row.shape[2]}"
    if row.layout == "tokens" and row.prefix:
        return f"{grid} +{row.prefix} token{'s' if row.prefix > 1 else ''}"
    return f"{grid} channels-last" if row.layout == "channels_last" else grid


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


Grid = tuple[int, int] | None


def _merged(field: _Field, size: int, now: Grid) -> _Field:
    """The field after the forward's own code merged each ``k x k`` block of positions into one (Swin's patch
    merging), as a ``k x k`` window of stride ``k`` would: ``now``, the grid of the tensor a layer takes in, is
    ``k`` times smaller than the grid the field's stride makes of a ``size``-pixel input."""
    rf, jump, start = field
    if now is None or math.isinf(rf):
        return field
    expected = size / jump
    k = round(expected / now[0])
    if k < 2 or abs(expected / k - now[0]) > 1:
        return field
    return rf + (k - 1) * jump, jump * k, start + (k - 1) / 2 * jump


def count_depth(model: nn.Module) -> int:
    """The network's depth counted the classic way: conv and fully connected layers.

    Only layers with trainable weights count, and of those only convolutions
    and linear layers (batch norm is not a layer in this count): VGG-16 has
    13 + 3 = 16.
    """
    return sum(isinstance(m, (*_CONV_TYPES, nn.Linear)) for m in check_model(model).modules())


def list_layers(
    model: nn.Module,
    input_size: int | tuple[int, int] | None = None,
    *,
    device: torch.device | str | None = None,
    include: Sequence[str] = (),
    blocks: bool = False,
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
        blocks: describe every block (the whole model excepted), as if all were in ``include``.

    Returns:
        One :class:`LayerInfo` per layer that ran (every leaf module, every conv, linear, pool
        and batch-norm layer, and the blocks in ``include``), in the order their outputs were made.
    """
    if input_size is None:
        input_size = model_meta(model).input_size
    h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
    if device is None:
        device = model_device(model)
    aliases = {path: name for name, path in layer_names(model).items() if name != path}

    info: dict[int, _Field] = {}  # id(tensor) -> its receptive field
    prefix = prefix_tokens(model)
    keep: list[torch.Tensor] = []  # keeps tensors alive so their ids stay unique
    last: _Field = (1.0, 1.0, 0.5)
    recent: list[tuple[_Field, Grid]] = []  # every layer output's field and grid, in order
    rows: list[LayerInfo] = []

    def grid_of(t: torch.Tensor) -> Grid:
        return layout_of(t.shape, (h, w), prefix, 1).grid

    def made_by_code(src: torch.Tensor) -> _Field:
        """The field of a tensor the forward's own code made (``x * scale`` after squeeze-and-excitation, tokens
        after the class token is added, a patch merging's reshaping): that of the latest layer output on the same
        grid; for a smaller grid (Swin's 2x2 merging), the latest spatial field merged down to it."""
        grid = grid_of(src)
        if grid is None:
            return last
        same = next((f for f, g in reversed(recent) if g == grid), None)
        if same is not None:
            return same
        spatial = next((f for f, g in reversed(recent) if g is not None and not math.isinf(f[0])), last)
        return _merged(spatial, h, grid)

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
            before = last if src is None else info[id(src)] if id(src) in info else made_by_code(src)
            # a Linear on tokens or a channels-last map (a transformer's MLP, ConvNeXt's pointwise layers) mixes
            # the channels of each position only
            pointwise = isinstance(module, nn.Linear) and src is not None and src.dim() >= 3
            field = before if pointwise else _rf_step(module, before)
        rf, jump, start = field
        if isinstance(output, torch.Tensor):
            info[id(output)] = field
            keep.append(output)
            layout = layout_of(output.shape, (h, w), prefix, 1)
            shape = tuple(layout.to_map(output).shape[1:])
            last = field
            recent.append((field, layout.grid))
            rows.append(
                LayerInfo(
                    name=aliases.get(path, path),
                    path=path,
                    type=type(module).__name__,
                    shape=shape,
                    channels=shape[0] if shape else 0,
                    receptive_field=None if math.isinf(rf) else int(rf),
                    stride=None if math.isinf(rf) else int(jump),
                    offset=None if math.isinf(rf) else start,
                    trainable=isinstance(module, (*_CONV_TYPES, nn.Linear)),
                    kind=module_kind(module),
                    output=tuple(output.shape[1:]),
                    layout=layout.kind,
                    prefix=layout.prefix,
                )
            )

    # leaves, and layers that compute themselves around a helper child (e.g. a Conv2d subclass
    # that pads with its own ZeroPad2d module first)
    wanted = {resolve_layer(model, name) for name in include}
    if blocks:
        wanted |= {p for p, m in model.named_modules() if p and module_kind(m) == "block"}
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
    # a module that runs several times (ResNet's shared relu) gets one name per run: NAME#1, NAME#2...
    runs = Counter(r.path for r in rows)
    seen: Counter[str] = Counter()
    for i, r in enumerate(rows):
        if runs[r.path] > 1:
            seen[r.path] += 1
            rows[i] = replace(r, name=f"{r.name}#{seen[r.path]}")
    return rows


def default_units(model: nn.Module, rows: Sequence[LayerInfo]) -> list[LayerInfo]:
    """The layers a job reads when none is named: every convolution of a CNN; for a transformer (a model with
    attention), the activation of each block's MLP on the patch grid (timm's ``blocks.6.mlp.act``, torchvision's
    ``encoder.layers.encoder_layer_6.mlp.1``), the units Ghiasi et al. (2022) found readable, or its
    convolutions when it has no such layer (MaxViT's MLPs work on windows, not on the patch grid)."""
    convs = [r for r in rows if r.type.startswith("Conv")]
    if not any(_is_attention(m) for m in model.modules()):
        return convs
    mlp = [
        r
        for r in rows
        if r.kind == "activation"
        and r.layout in ("tokens", "channels_last")
        and any(part.lower().startswith("mlp") for part in r.path.split("."))
    ]
    return mlp or convs


def module_runs_once(rows: Sequence[LayerInfo], path: str) -> bool:
    """Whether the module at ``path`` has one row in the layer table (it runs once per forward pass)."""
    return sum(r.path == path for r in rows) == 1


def asked_layers(model: nn.Module, size: int, layers: Sequence[str] | None, job: str) -> list[tuple[str, LayerInfo]]:
    """``(name, row of the layer table)`` for each layer a job asks for, in order; default: :func:`default_units`.

    Args:
        job: what the layers are for, in the error message (``"make an atlas of"``, ``"scan"``).

    Raises:
        KernelvizError: the model has no convolution and no layer is named.
    """
    rows = list_layers(model, size, include=layers or ())
    names = list(dict.fromkeys(layers)) if layers else [r.name for r in default_units(model, rows)]
    if not names:
        raise KernelvizError(
            f"the model has no convolution layer to {job}: name the layers (layers=[...], --layers on the command "
            "line; kernelviz.list_layers(model) or kernelviz layers MODEL lists them)"
        )
    by_name = {r.name: r for r in rows}
    by_path: dict[str, LayerInfo] = {}
    for r in rows:  # a module that runs several times: its only row is the run named, never the last run
        by_path.setdefault(r.path, r)
    asked = []
    for name in names:
        path = resolve_layer(model, name)
        row = by_name.get(name) or (by_path.get(path) if module_runs_once(rows, path) else None)
        runs = [r.name for r in rows if r.path == path]
        if row is None and len(runs) > 1:
            raise KernelvizError(
                f"layer {name!r} runs {len(runs)} times in one forward pass (one module used at several places): "
                f"name the run you mean: {', '.join(runs)} (kernelviz layers MODEL lists them)"
            )
        if row is None:
            raise KernelvizError(
                f"layer {name!r} does not run in a forward pass at {size} px: there is nothing to {job}"
            )
        asked.append((name, row))
    return asked


def default_layer(model: nn.Module) -> str:
    """The layer Grad-CAM uses by default: the network's last full spatial feature map.

    For VGG that is ``relu5_3`` (the original paper's layer). Otherwise one forward pass at the model's
    input size finds the last tensor that still has a spatial grid (more than 1x1), and names the
    outermost module that returns it, called once per forward: ResNet's ``layer4`` (the input of its
    global pooling, after the last residual addition and ReLU), DenseNet's ``features``, GoogLeNet's
    ``inception5b`` (the whole block, not one branch), EfficientNet's ``features``. When that map comes
    out of a module called several times (one activation module shared by the network), the module
    that takes it in once is named with :data:`INPUT_SUFFIX`: ``"_avg_pooling:input"``.

    A vision transformer with prefix tokens (:func:`~kernelviz.core.layout.prefix_tokens`: ViT, DeiT, BEiT, EVA)
    reads its class from a class token, which the last block's attention fills from the patch tokens: the layer is
    what that attention takes in, the last block's first norm (timm's ``blocks.11.norm1``, torchvision's
    ``encoder.layers.encoder_layer_11.ln_1``), as the peers' recipe has it; after it the patch tokens no longer
    reach the class. Swin (patch tokens only) gets its last spatial map, the last stage's normed output.

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

    prefix = prefix_tokens(model)
    attention: list[int] = []  # id of what each attention module takes in

    def hook(path: str, module: nn.Module, inputs: tuple, output: object) -> None:
        calls[path] = calls.get(path, 0) + 1
        if inputs and _is_attention(module):
            attention.append(id(inputs[0]))
        if isinstance(output, torch.Tensor):
            keep.append(output)
            layout = layout_of(output.shape, (size, size), prefix, 1)
            grid = layout.grid if layout.grid is not None else ()
            done.append((path, id(output), (output.shape[1], *grid), id(inputs[0]) if inputs else 0))

    modules = [(p, m) for p, m in model.named_modules() if p]
    handles = [m.register_forward_hook(lambda mod, i, o, p=p: hook(p, mod, i, o)) for p, m in modules]
    try:
        with guarded(model), torch.no_grad():
            model(torch.zeros(1, 3, size, size, device=model_device(model)))
    finally:
        for handle in handles:
            handle.remove()
    aliases = {v: k for k, v in names.items() if k != v}
    if prefix and attention:
        makers = [path for path, ident, _, _ in done if ident == attention[-1] and calls[path] == 1]
        if makers:
            return aliases.get(makers[0], makers[0])
    spatial = [k for k, (_, _, shape, _) in enumerate(done) if len(shape) == 3 and shape[1] * shape[2] > 1]
    if not spatial:
        raise KernelvizError("the model has no layer with a spatial output; pass layer=")
    last = spatial[-1]
    if last < len(done) // 2:
        raise KernelvizError(
            f"the last spatial map of this model is {done[last][0]!r}, near its start (a vision transformer's "
            "patch embedding?): Grad-CAM there does not explain a class; pass a layer explicitly (layer=; --layer)"
        )
    tensor = done[last][1]
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


def _is_attention(module: nn.Module) -> bool:
    """Self-attention: ``nn.MultiheadAttention`` or a module class named for it (timm's ``Attention``, Swin's
    ``ShiftedWindowAttentionV2``)."""
    return isinstance(module, nn.MultiheadAttention) or "Attention" in type(module).__name__


def layer_shape(model: nn.Module, x: torch.Tensor, path: str, at_input: bool) -> torch.Size:
    """The shape of the input (``at_input``) or output of the module at ``path`` for ``x``, as maps where it has a
    grid (:mod:`kernelviz.core.layout`: ``(B, C, h, w)`` for a transformer's tokens); the forward stops there."""
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
    layout = layout_of(seen[0], (x.shape[-2], x.shape[-1]), prefix_tokens(model), x.shape[0])
    if layout.grid is None:
        return seen[0]
    return torch.Size((seen[0][0], layout.to_map(torch.empty(seen[0], device="meta")).shape[1], *layout.grid))
