"""What an activation module does to its input's range: its floor and cap, and whether it is flat there.

A concept's factorization needs a layer whose outputs are never negative; a ranking of images by a unit's value
needs to know where many images get the same value (a ReLU's zeros, a ReLU6's cap at 6): that is where the input
to the activation (its pre-activation) still tells them apart. Both are read from the module's type and settings,
never from its name (LeakyReLU, PReLU and LogSigmoid go negative; a ReLU6 saturates where a ReLU does not).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

__all__ = ["Bounds", "bounds", "non_negative"]


@dataclass(frozen=True)
class Bounds:
    """The range of an activation's output.

    Attributes:
        low: the least value it gives (``None``: unbounded below or unknown).
        high: the largest (``None``: unbounded above or unknown).
        flat_low: whether it gives ``low`` for every input below a point (a ReLU's zeros): images that all sit
            there tie.
        flat_high: whether it gives ``high`` for every input above a point (a ReLU6's 6, a Hardtanh's cap).
    """

    low: float | None = None
    high: float | None = None
    flat_low: bool = False
    flat_high: bool = False

    @property
    def flat(self) -> bool:
        """Whether the output is flat somewhere (at the floor or the cap): ties the input breaks."""
        return self.flat_low or self.flat_high


def bounds(module: nn.Module) -> Bounds:
    """The output range of an elementwise activation ``module`` (an unknown module: :class:`Bounds` ``()``)."""
    if isinstance(module, nn.ReLU6):
        return Bounds(0.0, 6.0, True, True)
    if isinstance(module, nn.Hardtanh):  # ReLU6 is one; clamps in general
        return Bounds(float(module.min_val), float(module.max_val), True, True)
    if isinstance(module, nn.ReLU):
        return Bounds(0.0, None, True, False)
    if isinstance(module, nn.Threshold):
        value, threshold = float(module.value), float(module.threshold)
        return Bounds(value if value <= threshold else None, None, True, False)
    if isinstance(module, nn.Hardsigmoid):
        return Bounds(0.0, 1.0, True, True)
    if isinstance(module, nn.Hardswish):  # x * relu6(x + 3) / 6: its least value -0.375 at -1.5 (not monotone)
        return Bounds(-0.375, None)
    if isinstance(module, nn.Sigmoid):
        return Bounds(0.0, 1.0)
    if isinstance(module, nn.Softplus):
        return Bounds(0.0, None)
    if isinstance(module, nn.Tanh | nn.Softsign):
        return Bounds(-1.0, 1.0)
    return Bounds()


def non_negative(module: nn.Module) -> bool:
    """Whether ``module``'s outputs are never negative (a ReLU-like activation: a concept's factorization needs it)."""
    low = bounds(module).low
    return low is not None and low >= 0
