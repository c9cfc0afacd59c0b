"""Dead units: Lucid's redirected ReLU gradient.

A unit that never fires for the start image gets no gradient through a ReLU, so gradient ascent
cannot start. For the first steps of a run, :func:`redirected_relus` routes every ``nn.ReLU`` through
:class:`RedirectedReLU`, whose gradient, for an image where nothing gets through, still flows where it
would push a negative input up.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

__all__ = ["RedirectedReLU", "redirected_relus"]


class RedirectedReLU(torch.autograd.Function):
    """ReLU whose gradient, for an image where no gradient gets through, still flows where it would
    push a negative input up, so a unit that never fires can start to."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        out = x.clamp(min=0)
        ctx.save_for_backward(out)  # the output, not x: x > 0 iff out > 0, and x can then be freed
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (out,) = ctx.saved_tensors
        positive = out > 0
        # (B,): no gradient gets through for this image (computed without a full-size float buffer)
        blocked = ~(positive & (grad != 0)).flatten(1).any(1)
        if not bool(blocked.any()):  # the usual case: the plain ReLU gradient
            return torch.where(positive, grad, 0.0)
        normal = torch.where(positive, grad, 0.0)
        # grad is d(loss)/d(out) with loss = -objective: grad < 0 means "raise this value".
        redirected = torch.where(positive | (grad < 0), grad, 0.0)
        shape = (-1,) + (1,) * (out.dim() - 1)
        return torch.where(blocked.view(shape), redirected, normal)


def _redirected_forward(x: torch.Tensor) -> torch.Tensor:
    return RedirectedReLU.apply(x)


@contextlib.contextmanager
def redirected_relus(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Route every ``nn.ReLU`` of ``model`` through :class:`RedirectedReLU` while inside.

    The modules' ``forward`` is shadowed by an instance attribute (a hook would run the ReLU twice
    and keep both results alive) and the attribute is deleted on exit, also after an error.
    """
    patched = []
    try:
        if enabled:
            for m in model.modules():
                if type(m) is nn.ReLU and "forward" not in vars(m):
                    m.forward = _redirected_forward  # type: ignore[method-assign,assignment]
                    patched.append(m)
        yield
    finally:
        for m in patched:
            del m.forward
