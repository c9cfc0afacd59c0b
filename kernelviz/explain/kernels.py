"""The learned kernels themselves (the weights of a convolution)."""

from __future__ import annotations

import torch
from torch import nn

from ..core.names import get_module, resolve_layer
from ..errors import KernelvizError

__all__ = ["kernel_weights"]


def kernel_weights(model: nn.Module, layer: str) -> torch.Tensor:
    """The weights of a convolution layer, ``(C_out, C_in, kH, kW)``, detached, on the CPU.

    A ReLU/batch-norm name such as ``relu1_1`` is not a convolution: use ``conv1_1``.
    """
    module = get_module(model, resolve_layer(model, layer))
    if not isinstance(module, nn.Conv2d):
        raise KernelvizError(f"layer {layer!r} is a {type(module).__name__}, not a Conv2d: it has no kernels to draw")
    return module.weight.detach().float().cpu().clone()
