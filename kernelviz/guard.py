"""Borrow a user's model without changing it.

:func:`guarded` puts a model in the state feature visualization needs and puts
everything back on exit, also when the block raises:

* ``eval()`` mode, so dropout is off and batch norm uses (and never updates)
  its running statistics;
* ``requires_grad=False`` on every parameter, so no weight gradient is ever
  computed (the optimizer only needs gradients with respect to the pixels);
* ``inplace=False`` on in-place activations (torchvision's VGG uses
  ``ReLU(inplace=True)``), so a captured pre-activation tensor is not
  overwritten by the activation that follows it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

__all__ = ["guarded"]


@contextmanager
def guarded(model: nn.Module) -> Iterator[nn.Module]:
    """Context manager: eval mode, frozen weights, no in-place activations; restored on exit."""
    modules = list(model.modules())
    training = [m.training for m in modules]
    inplace = [(m, m.inplace) for m in modules if isinstance(getattr(m, "inplace", None), bool)]
    params = list(model.parameters())
    requires_grad = [p.requires_grad for p in params]
    try:
        model.eval()
        for p in params:
            p.requires_grad_(False)
        for m, _ in inplace:
            m.inplace = False
        yield model
    finally:
        for m, flag in zip(modules, training, strict=True):
            m.training = flag
        for p, flag in zip(params, requires_grad, strict=True):
            p.requires_grad_(flag)
        for m, flag in inplace:
            m.inplace = flag
