"""Capture the activations of named layers with hooks that never outlive a ``with`` block."""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import KernelvizError
from .guard import guarded, no_inplace
from .layout import Layout, layout_of, prefix_tokens
from .models import model_device, model_meta
from .names import INPUT_SUFFIX, get_module, resolve_layer, split_call, split_input

__all__ = ["StopForward", "activations", "can_slice", "capture", "module_runs", "output_tensor"]

_RUNS: weakref.WeakKeyDictionary[nn.Module, dict[str, int]] = weakref.WeakKeyDictionary()


def module_runs(model: nn.Module) -> dict[str, int]:
    """How many times each submodule runs in one forward pass (``{path: runs}``), from one pass on a zero
    image at the model's input size, remembered per model. ``{}`` when the model cannot run on it."""
    if model in _RUNS:
        return _RUNS[model]
    runs: dict[str, int] = {}

    def count(path: str) -> None:
        runs[path] = runs.get(path, 0) + 1

    handles = [m.register_forward_hook(lambda mod, i, o, p=p: count(p)) for p, m in model.named_modules() if p]
    size = model_meta(model).input_size
    try:
        with guarded(model), torch.no_grad():
            model(torch.zeros(1, 3, size, size, device=model_device(model)))
    except (KernelvizError, RuntimeError):  # a model that needs other input: runs unknown, nothing refused
        runs = {}
    finally:
        for handle in handles:
            handle.remove()
    _RUNS[model] = runs
    return runs


class StopForward(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raised by a hook once every requested layer is captured, to skip the rest of the forward."""


def output_tensor(output: object, where: str = "the model") -> torch.Tensor:
    """The tensor a module's output stands for: the output itself, the first tensor of a tuple or list
    (torchvision's GoogLeNet/Inception in train mode, detection-style heads), or for a dict its
    ``"logits"`` / ``"out"`` entry or its only tensor (Hugging Face and segmentation models).

    Raises:
        KernelvizError: an output with no such tensor (the message lists what there is).
    """
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, tuple | list):
        first = next((o for o in output if isinstance(o, torch.Tensor)), None)
        if first is not None:
            return first
    if isinstance(output, dict):
        tensors = {k: v for k, v in output.items() if isinstance(v, torch.Tensor)}
        for key in ("logits", "out"):
            if key in tensors:
                return tensors[key]
        if len(tensors) == 1:
            return next(iter(tensors.values()))
        raise KernelvizError(
            f"{where} returns a dict with tensors {sorted(tensors)}: none is 'logits' or 'out'; wrap the model "
            "so that it returns the tensor to explain"
        )
    raise KernelvizError(f"{where} returns {type(output).__name__}, not a tensor: pick a layer inside it")


class capture:  # noqa: N801 - used like a function: ``with kernelviz.capture(...)``
    """Record the outputs of layers during a forward pass.

    Example::

        with kernelviz.capture(model, ["conv3_2", "relu3_2"]) as acts:
            model(x)
        acts["conv3_2"]  # (B, 256, 56, 56), pre-ReLU

    Hooks are registered on entry and removed on exit, also when the block
    raises. In-place activations are switched off inside the block (and
    switched back on exit), so ``conv3_2`` holds the true pre-ReLU values even
    though torchvision's VGG applies ``ReLU(inplace=True)`` right after it.

    Args:
        model: the network.
        layers: layer names (``"conv3_2"``, ``"features.12"``, ``"logits"``).
        stop: when true, the forward pass ends as soon as every requested layer
            has been computed (``model(x)`` then returns nothing: use this when
            only the activations are wanted; the rest of the network is not run).
        detach: store detached tensors (for inspection) instead of tensors
            that carry gradients (for optimization).
        each: instead of storing the outputs, call ``each(name, output)`` as each
            layer is computed (a dataset scan reduces them at once, so no layer's
            output outlives the module after it). In-place activations then stay
            on: the output is read before anything can change it.

    The mapping yielded by the block is keyed by the names as given. Every output is stored as maps
    ``(B, C, h, w)`` where it has a grid (:mod:`kernelviz.core.layout`): a vision transformer's tokens
    ``(B, N, C)`` without their prefix tokens (class, distillation, registers), a channels-last ``(B, h, w, C)``
    permuted; the layout each layer was read in is in :attr:`layouts`.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: str | Iterable[str],
        *,
        stop: bool = False,
        detach: bool = False,
        each: Callable[[str, torch.Tensor], None] | None = None,
    ) -> None:
        self.model = model
        self.layers = [layers] if isinstance(layers, str) else list(layers)
        self.paths = {name: resolve_layer(model, name) for name in self.layers}
        self.runs = {name: split_call(split_input(name)[0])[1] for name in self.layers}  # None: the module's only run
        self.inputs = {name for name in self.layers if split_input(name)[1]}  # "LAYER:input": what the layer takes in
        self._check_runs()
        self._count: dict[str, int] = {}  # runs of each hooked module in the current forward pass
        self.stop = stop
        self.detach = detach
        self.each = each
        self.acts: dict[str, torch.Tensor] = {}
        self.layouts: dict[str, Layout] = {}
        self._prefix = prefix_tokens(model)
        self._input: tuple[tuple[int, int], int] | None = None  # ((H, W), B) of the current forward pass
        self._done: set[str] = set()  # the layers computed in the current forward pass
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._inplace = contextlib.ExitStack()
        self._sliced: dict[str, tuple[torch.Tensor, nn.Conv2d, nn.Module | None]] = {}

    def _check_runs(self) -> None:
        """A module that runs several times per forward must be named with the run wanted (``NAME#N``)."""
        if not any(self.paths.values()):
            return
        runs = module_runs(self.model)
        for name, path in self.paths.items():
            total, wanted = runs.get(path, 1), self.runs[name]
            if wanted is None and total > 1:
                base, at_input = split_input(name)
                choices = ", ".join(f"{base}#{k}{INPUT_SUFFIX if at_input else ''}" for k in range(1, total + 1))
                raise KernelvizError(
                    f"layer {name!r} runs {total} times in one forward pass (one module used at several places): "
                    f"name the run you mean: {choices} (kernelviz layers MODEL lists them)"
                )
            if wanted is not None and wanted > max(total, 1):
                raise KernelvizError(
                    f"layer {split_call(name)[0]!r} runs {total} time(s) per forward pass, not {wanted}"
                )

    # -- the optimizer's fast path -------------------------------------------------
    def slice_channels(self, name: str, channels: torch.Tensor, conv: nn.Conv2d, relu: nn.Module | None = None) -> None:
        """Compute only some output channels of a convolution (the optimizer's fast path).

        Instead of running ``conv`` in full, compute for image ``i`` of the
        batch only channel ``channels[i]`` (one grouped convolution), apply
        ``relu`` when ``name`` is the activation that follows ``conv``, and
        store it under ``name`` with the layer's full shape, every other
        channel zero. Only valid with ``stop=True`` and a single layer.

        Args:
            name: the requested layer (``conv`` itself or the activation after it).
            channels: ``(B,)`` long tensor, one channel per image.
            conv: a module for which :func:`can_slice` is true.
            relu: the activation module to apply, or ``None``.
        """
        if not can_slice(conv):
            raise KernelvizError(f"channel slicing needs a plain Conv2d, got {type(conv).__name__}")
        self._sliced[name] = (channels, conv, relu)

    # -- context manager ---------------------------------------------------------------
    def __enter__(self) -> dict[str, torch.Tensor]:
        try:
            if self.each is None:
                self._inplace.enter_context(no_inplace(self.model))
            self._handles.append(self.model.register_forward_pre_hook(lambda m, i: self._new_pass(i)))
            by_path: dict[str, list[str]] = {}
            for name, path in self.paths.items():
                by_path.setdefault(path, []).append(name)
            for path, names in by_path.items():
                sliced = next((n for n in names if n in self._sliced), None)
                if sliced is not None:
                    conv = self._sliced[sliced][1]
                    self._handles.append(conv.register_forward_pre_hook(self._sliced_hook(names, sliced)))
                    continue
                module = get_module(self.model, path)
                outputs = [n for n in names if n not in self.inputs]
                taken = [n for n in names if n in self.inputs]
                if taken:  # read before the module runs: an in-place activation would overwrite it
                    self._handles.append(module.register_forward_pre_hook(self._input_hook(taken)))
                if outputs:
                    self._handles.append(module.register_forward_hook(self._hook(outputs)))
        except BaseException:
            self._cleanup()
            raise
        return self.acts

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        self._cleanup()
        return exc_type is StopForward  # swallow only our own signal

    def _cleanup(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._inplace.close()

    def _new_pass(self, inputs: tuple) -> None:
        self._count.clear()
        self._done.clear()
        x = inputs[0] if inputs else None
        image = isinstance(x, torch.Tensor) and x.dim() == 4
        self._input = ((x.shape[-2], x.shape[-1]), x.shape[0]) if image and x is not None else None

    def layout(self, output: torch.Tensor) -> Layout:
        """The layout of a layer's ``output`` in the current forward pass."""
        size, batch = self._input if self._input is not None else (None, None)
        return layout_of(output.shape, size, self._prefix, batch)

    def _store(self, names: Sequence[str], value: torch.Tensor) -> None:
        if self.detach:
            value = value.detach()
        for name in names:
            if self.each is not None:
                self.each(name, value)
            else:
                self.acts[name] = value
            self._done.add(name)
        if self.stop and len(self._done) == len(self.paths):
            raise StopForward

    def _hook(self, names: Sequence[str]) -> Callable[[nn.Module, tuple, object], None]:
        path = self.paths[names[0]]

        def hook(module: nn.Module, inputs: tuple, output: object) -> None:
            run = self._count[path] = self._count.get(path, 0) + 1
            wanted = [n for n in names if self.runs[n] in (None, run)]
            if wanted:
                tensor = output_tensor(output, f"layer {names[0]!r}")
                layout = self.layout(tensor)
                self.layouts.update(dict.fromkeys(wanted, layout))
                self._store(wanted, layout.to_map(tensor))

        return hook

    def _input_hook(self, names: Sequence[str]) -> Callable[[nn.Module, tuple], None]:
        """A pre-hook storing what a module takes in (``LAYER:input``), before it runs."""
        path = self.paths[names[0]]
        key = f"{path}{INPUT_SUFFIX}"  # its own count of runs: the pre-hook runs before the output hook

        def hook(module: nn.Module, inputs: tuple) -> None:
            run = self._count[key] = self._count.get(key, 0) + 1
            wanted = [n for n in names if self.runs[n] in (None, run)]
            if wanted:
                if not (inputs and isinstance(inputs[0], torch.Tensor)):
                    raise KernelvizError(f"layer {names[0]!r}: the module takes no tensor in")
                layout = self.layout(inputs[0])
                self.layouts.update(dict.fromkeys(wanted, layout))
                self._store(wanted, layout.to_map(inputs[0]))

        return hook

    def _sliced_hook(self, names: Sequence[str], sliced: str) -> Callable[[nn.Module, tuple], None]:
        channels, conv, relu = self._sliced[sliced]
        rows = torch.arange(channels.numel(), device=channels.device)  # made once, not every step

        def hook(module: nn.Module, inputs: tuple) -> None:
            x = inputs[0]  # (B, Cin, H, W)
            b, cin = x.shape[:2]
            if channels.numel() != b:
                raise KernelvizError(f"{channels.numel()} channels given for a batch of {b}")
            weight = conv.weight[channels]  # (B, Cin, k, k): one filter per image
            bias = conv.bias[channels] if conv.bias is not None else None
            x = F.conv2d(
                x.reshape(1, b * cin, *x.shape[2:]),
                weight,
                bias,
                conv.stride,
                conv.padding,
                conv.dilation,
                groups=b,
            )  # (1, B, H', W')
            y = x.reshape(b, 1, *x.shape[2:])
            if relu is not None:
                y = relu(y)
            full = y.new_zeros(b, conv.out_channels, *y.shape[2:])  # (B, C, H', W'), others zero
            full = full.index_put((rows, channels), y[:, 0])
            self._store(names, full)

        return hook


def can_slice(module: nn.Module) -> bool:
    """Whether :meth:`capture.slice_channels` can compute ``module`` one channel at a time."""
    return (
        isinstance(module, nn.Conv2d)
        and type(module).forward is nn.Conv2d.forward  # subclasses may pad or reshape in forward
        and module.groups == 1
        and module.padding_mode == "zeros"
    )


def activations(
    model: nn.Module,
    x: torch.Tensor,
    layers: str | Iterable[str],
) -> Mapping[str, torch.Tensor]:
    """Run ``model`` on ``x`` just far enough to compute ``layers``; return their outputs, detached.

    Args:
        model: the network (left unchanged; run in eval mode for this call).
        x: ``(B, 3, H, W)`` input, already normalized for the model.
        layers: one or more layer names.

    Returns:
        ``{name: tensor}``, e.g. ``(B, C, H', W')`` for a conv layer.
    """
    with guarded(model), torch.no_grad(), capture(model, layers, stop=True, detach=True) as acts:
        model(x)
    return acts
