"""Guided backpropagation and deconvolution, for every rectifying activation a model uses.

Both methods change the backward pass of the rectifiers only (Springenberg et al., 2015; Zeiler and Fergus,
2014): guided backpropagation lets through the part of the gradient that is positive *and* where the unit is
active; deconvolution lets through the positive part whatever the unit's input. Peer libraries override
``nn.ReLU`` modules only, so on a ReLU6 network (MobileNet, EfficientNet-Lite) their "guided backprop" is the
plain gradient. Here a :class:`~torch.overrides.TorchFunctionMode` intercepts the rectifier *functions*
(``relu``, ``relu6``, ``hardtanh``, ``leaky_relu`` and their in-place and tensor-method forms) wherever they
are called: inside ``nn.ReLU``/``nn.ReLU6``/``nn.Hardtanh``/``nn.LeakyReLU`` modules or straight from a
model's ``forward``. A model that uses a smooth activation (SiLU, GELU, Hardswish, Mish, ELU...) has no
rectifier to guide: asking for these methods on it is an error that says so, never a gradient under the
wrong name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from ..errors import KernelvizError

__all__ = ["rectified_gradients"]

_Bounds = tuple[float, float | None, float]  # active between lower and upper (None: unbounded); slope below


def _arg(args: tuple, kwargs: dict[str, Any], index: int, name: str, default: float) -> float:
    if len(args) > index and not isinstance(args[index], bool):
        return float(args[index])
    return float(kwargs.get(name, default))


_RELU: Callable[[tuple, dict[str, Any]], _Bounds] = lambda a, k: (0.0, None, 0.0)  # noqa: E731
_RULES: dict[Callable[..., Any], Callable[[tuple, dict[str, Any]], _Bounds]] = {
    F.relu: _RELU,
    F.relu_: _RELU,
    torch.relu: _RELU,
    torch.relu_: _RELU,
    torch.Tensor.relu: _RELU,
    torch.Tensor.relu_: _RELU,
    F.relu6: lambda a, k: (0.0, 6.0, 0.0),
    F.hardtanh: lambda a, k: (_arg(a, k, 1, "min_val", -1.0), _arg(a, k, 2, "max_val", 1.0), 0.0),
    F.hardtanh_: lambda a, k: (_arg(a, k, 1, "min_val", -1.0), _arg(a, k, 2, "max_val", 1.0), 0.0),
    F.leaky_relu: lambda a, k: (0.0, None, _arg(a, k, 1, "negative_slope", 0.01)),
    F.leaky_relu_: lambda a, k: (0.0, None, _arg(a, k, 1, "negative_slope", 0.01)),
}
_SMOOTH = {
    F.silu: "SiLU",
    F.gelu: "GELU",
    F.hardswish: "Hardswish",
    F.mish: "Mish",
    F.elu: "ELU",
    F.selu: "SELU",
    F.celu: "CELU",
    F.softplus: "Softplus",
}


class _Rectifier(torch.autograd.Function):
    """A rectifier whose backward follows the guided or the deconvolution rule."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, lower: float, upper: float | None, slope: float, deconv: bool
    ) -> torch.Tensor:
        if slope:  # leaky: x above lower, slope * x below
            y = torch.where(x > lower, x, x * slope)
            local = torch.where(x > lower, 1.0, slope).to(x.dtype)
        else:
            y = x.clamp(min=lower, max=upper)
            active = x > lower if upper is None else (x > lower) & (x < upper)
            local = active.to(x.dtype)
        ctx.deconv = deconv
        ctx.save_for_backward(local)
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (local,) = ctx.saved_tensors
        positive = grad.clamp(min=0)
        return (positive if ctx.deconv else local * positive), None, None, None, None


class _RectifierMode(TorchFunctionMode):
    """While active, every rectifier call goes through :class:`_Rectifier`; a smooth activation is an error."""

    def __init__(self, method: str, deconv: bool) -> None:
        super().__init__()
        self.method = method
        self.deconv = deconv
        self.rectifiers = 0

    def __torch_function__(
        self, func: Callable[..., Any], types: Any, args: tuple = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        if func in _SMOOTH:
            raise KernelvizError(
                f"{self.method} is defined for rectifying activations (ReLU, ReLU6, Hardtanh, LeakyReLU), but this "
                f"model uses {_SMOOTH[func]}: its map would be the plain gradient under another name; use saliency, "
                "integrated_gradients or gradcam"
            )
        rule = _RULES.get(func)
        if rule is None or not args or not isinstance(args[0], torch.Tensor):
            return func(*args, **kwargs)
        self.rectifiers += 1
        lower, upper, slope = rule(args, kwargs)
        return _Rectifier.apply(args[0], lower, upper, slope, self.deconv)


def rectified_gradients(
    score: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor, method: str, deconv: bool = False
) -> torch.Tensor:
    """The gradient of ``score(inputs).sum()`` with respect to ``inputs``, every rectifier's backward following
    the guided rule (or, with ``deconv``, the deconvolution rule).

    Args:
        score: maps ``(B, 3, H, W)`` to ``(B,)`` scores (the target of each image).
        inputs: ``(B, 3, H, W)``.
        method: the method's name, for messages.

    Returns:
        ``(B, 3, H, W)``.

    Raises:
        KernelvizError: the model uses a smooth activation, or no rectifier at all.
    """
    x = inputs.detach().requires_grad_(True)
    mode = _RectifierMode(method, deconv)
    with mode:
        total = score(x).sum()
    if mode.rectifiers == 0:
        raise KernelvizError(f"{method} needs rectifying activations (ReLU and kin), and this model has none")
    (grad,) = torch.autograd.grad(total, x)
    return grad
