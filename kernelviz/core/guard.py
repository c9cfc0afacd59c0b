"""Borrow a user's model without changing it.

:func:`guarded` puts a model in the state feature visualization needs and puts
everything back on exit, also when the block raises:

* ``eval()`` mode, so dropout is off and batch norm uses (and never updates)
  its running statistics;
* ``requires_grad=False`` on every parameter, so no weight gradient is ever
  computed (the optimizer only needs gradients with respect to the pixels);
* ``inplace=False`` on in-place activations (torchvision's VGG uses
  ``ReLU(inplace=True)``), so a captured pre-activation tensor is not
  overwritten by the activation that follows it (:func:`no_inplace`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn

__all__ = ["guarded", "no_inplace"]


@contextmanager
def no_inplace(model: nn.Module) -> Iterator[nn.Module]:
    """Context manager: every in-place activation of ``model`` computes out of place; restored on exit."""
    switched: list[Any] = [m for m in model.modules() if getattr(m, "inplace", None) is True]
    try:
        for m in switched:
            m.inplace = False
        yield model
    finally:
        for m in switched:
            m.inplace = True


@contextmanager
def guarded(model: nn.Module) -> Iterator[nn.Module]:
    """Context manager: eval mode, frozen weights, no in-place activations; restored on exit."""
    modules = list(model.modules())
    training = [m.training for m in modules]
    params = list(model.parameters())
    requires_grad = [p.requires_grad for p in params]
    try:
        with no_inplace(model):
            model.eval()
            for p in params:
                p.requires_grad_(False)
            yield model
    finally:
        for m, flag in zip(modules, training, strict=True):
            m.training = flag
        for p, flag in zip(params, requires_grad, strict=True):
            p.requires_grad_(flag)
