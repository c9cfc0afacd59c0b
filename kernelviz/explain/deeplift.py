"""DeepLift with the Rescale rule, for every elementwise activation a model calls.

DeepLift (Shrikumar et al., 2017) explains ``y(x) - y(x0)``, the change of the score from a baseline ``x0``
to the image, by back-propagating *multipliers*: through a nonlinearity ``f`` the local gradient is replaced
by the secant ``(f(a) - f(a0)) / (a - a0)`` between the two inputs it saw (the gradient where they coincide);
linear layers, batch norm in eval mode and pooling pass the ordinary gradient. The attribution of a pixel
is ``(x - x0) * multiplier``; with only such layers the attributions add up to ``y(x) - y(x0)``.

captum attaches the rule to activation *modules* of a few types and needs each to run once per forward, so
it silently falls back to the gradient for ReLU6 or Hardswish and fails on a shared ReLU module (ResNet's
blocks) or a functional call. Here, as for guided backpropagation, a
:class:`~torch.overrides.TorchFunctionMode` applies the rule to the activation *functions* wherever they are
called. Max pooling passes the gradient through the maximum, as in the DeepLift paper (captum applies a
rescale to it). Products of two activations (squeeze-and-excitation gates) pass the ordinary gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

__all__ = ["deeplift"]

_ELEMENTWISE: set[Callable[..., Any]] = {
    F.relu,
    F.relu_,
    torch.relu,
    torch.relu_,
    torch.Tensor.relu,
    torch.Tensor.relu_,
    F.relu6,
    F.hardtanh,
    F.hardtanh_,
    F.leaky_relu,
    F.leaky_relu_,
    F.silu,
    F.gelu,
    F.hardswish,
    F.hardsigmoid,
    F.mish,
    F.elu,
    F.selu,
    F.celu,
    F.softplus,
    torch.sigmoid,
    torch.Tensor.sigmoid,
    F.sigmoid,
    torch.tanh,
    torch.Tensor.tanh,
    F.tanh,
}
_OUT_OF_PLACE = {
    F.relu_: F.relu,
    torch.relu_: torch.relu,
    torch.Tensor.relu_: torch.relu,
    F.hardtanh_: F.hardtanh,
    F.leaky_relu_: F.leaky_relu,
}


class _Rescale(torch.autograd.Function):
    """An activation whose backward uses the secant between the image half and the baseline half of the batch."""

    @staticmethod
    def forward(
        ctx: Any, a: torch.Tensor, func: Callable[..., torch.Tensor], rest: tuple, kwargs: dict
    ) -> torch.Tensor:
        y = func(a, *rest, **kwargs)
        ctx.func, ctx.rest, ctx.kwargs = func, rest, kwargs
        ctx.save_for_backward(a, y)
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        a, y = ctx.saved_tensors
        half = a.shape[0] // 2
        delta_in = a[:half] - a[half:]
        delta_out = y[:half] - y[half:]
        with torch.enable_grad():
            leaf = a.detach().requires_grad_(True)
            (local,) = torch.autograd.grad(ctx.func(leaf, *ctx.rest, **ctx.kwargs), leaf, grad)
        secant = delta_out / torch.where(delta_in == 0, torch.ones_like(delta_in), delta_in)
        close = delta_in.abs() < 1e-10
        scaled = torch.cat([secant, secant]) * grad
        return torch.where(torch.cat([close, close]), local, scaled), None, None, None


class _RescaleMode(TorchFunctionMode):
    def __torch_function__(
        self, func: Callable[..., Any], types: Any, args: tuple = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        if func not in _ELEMENTWISE or not args or not isinstance(args[0], torch.Tensor):
            return func(*args, **kwargs)
        kwargs = {k: v for k, v in kwargs.items() if k != "inplace"}
        return _Rescale.apply(args[0], _OUT_OF_PLACE.get(func, func), args[1:], kwargs)


def deeplift(
    score: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor, baseline: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """DeepLift-Rescale attributions of each image's score against its baseline.

    Args:
        score: ``(N, 3, H, W) -> (N,)`` scores; called once on the images and baselines stacked, so it must
            treat batch rows independently (eval mode).
        inputs, baseline: ``(B, 3, H, W)``.

    Returns:
        The attributions ``(B, 3, H, W)`` and each image's summation error ``(B,)``: the attributions' sum
        minus ``score(inputs) - score(baseline)`` (zero when every layer is linear or a handled activation).
    """
    b = inputs.shape[0]
    both = torch.cat([inputs.detach(), baseline.detach().to(inputs)]).requires_grad_(True)
    with _RescaleMode():
        scores = score(both)  # (2B,)
    (grad,) = torch.autograd.grad(scores[:b].sum(), both)
    attr = (inputs.detach() - baseline.detach().to(inputs)) * grad[:b]
    error = attr.flatten(1).sum(1) - (scores[:b] - scores[b:]).detach()
    return attr.detach(), error.detach()
