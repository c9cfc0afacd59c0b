"""How a unit is wired to the units around it, read from the weights: the input channels a convolution's filter
weighs most, the filters of the next convolution that read a channel most, and the convolution an activation's
channel is computed from.

A unit ``n`` of a layer is addressed as everywhere else (its channel); the layers around it are the rows of the
layer table (:func:`~kernelviz.core.layers.list_layers`). Only weights are read: no forward pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from ..core.layers import LayerInfo
from ..core.names import get_module, resolve_layer
from ..errors import NotFoundError, out_of_range
from .kernels import kernel_weights

__all__ = ["Neighbour", "Wiring"]


@dataclass(frozen=True)
class Neighbour:
    """A unit next to another one.

    Attributes:
        layer: its layer (``None``: a channel of the input image).
        unit: its channel.
        weight: the norm of the kernel between the two units, or ``None`` when the channel is computed from the
            other one (through a batch norm, an activation, a block's residual sum).
    """

    layer: str | None
    unit: int
    weight: float | None = None


class Wiring:
    """The weights between the units of a model's convolutions.

    Args:
        model: the network (only its weights are read).
        rows: its layer table (:func:`~kernelviz.core.layers.list_layers`, blocks included or not).
    """

    def __init__(self, model: nn.Module, rows: Sequence[LayerInfo]) -> None:
        self.model = model
        self.rows = list(rows)
        self._by_name = {r.name: r for r in self.rows}
        self.convs = [r for r in self.rows if len(r.shape) == 3 and r.type.startswith("Conv")]

    def _row(self, layer: str, n: int) -> LayerInfo:
        row = self._by_name.get(layer)
        if row is None:
            resolve_layer(self.model, layer)  # the usual message, with close names
            raise NotFoundError(f"layer {layer!r} is not in the layer table")
        if not 0 <= n < row.channels:
            raise out_of_range("filter", n, row.channels, f"layer {layer!r}")
        return row

    def _conv(self, layer: str, n: int) -> nn.Module:
        row = self._row(layer, n)
        if row not in self.convs:
            raise NotFoundError(f"layer {layer!r} is not a convolution: it has no kernel")
        return get_module(self.model, resolve_layer(self.model, layer))

    def first_input(self, layer: str, n: int) -> int:
        """The first input channel filter ``n`` of convolution ``layer`` reads (not 0 in a grouped convolution)."""
        module = self._conv(layer, n)
        groups = int(getattr(module, "groups", 1))
        w = kernel_weights(self.model, layer)  # (C_out, C_in / groups, kh, kw)
        return (n // (w.shape[0] // groups)) * w.shape[1]

    def strongest_inputs(self, layer: str, n: int, k: int = 16) -> list[int]:
        """The ``k`` input channels filter ``n`` of convolution ``layer`` weighs most (largest norm of its kernel on
        each, ties by index), numbered as the previous layer numbers them."""
        self._conv(layer, n)
        norms = kernel_weights(self.model, layer)[n].flatten(1).norm(dim=1)  # (C_in / groups,)
        first = self.first_input(layer, n)
        return [first + int(c) for c in norms.argsort(descending=True, stable=True)[:k]]

    def feeders(self, layer: str, n: int, k: int = 6) -> list[Neighbour]:
        """The input channels that feed filter ``n`` of convolution ``layer`` most, by the norm of its kernel on each,
        strongest first. A grouped (depthwise) convolution's filter reads only its group's channels, numbered as the
        previous layer numbers them. The previous layer is the last convolution before this one with as many
        channels as this one takes in (``None``: the image)."""
        module = self._conv(layer, n)
        groups = int(getattr(module, "groups", 1))
        w = kernel_weights(self.model, layer)  # (C_out, C_in / groups, kh, kw)
        first = self.first_input(layer, n)
        norms = w[n].flatten(1).norm(dim=1)  # (C_in / groups,)
        index = [r.name for r in self.convs].index(layer)
        before = [r for r in self.convs[:index] if r.channels == w.shape[1] * groups]
        previous = before[-1].name if before else None
        top = norms.topk(min(k, len(norms)))
        return [Neighbour(previous, first + int(c), float(v)) for v, c in zip(top.values, top.indices, strict=True)]

    def feeds_into(self, layer: str, n: int, k: int = 6) -> list[Neighbour]:
        """The filters of the next convolution that read channel ``n`` of ``layer`` most, by the norm of their kernel
        on it, strongest first. The next convolution is the first after ``layer`` that takes in as many channels as
        ``layer`` puts out; none (``[]``) at the network's end."""
        row = self._row(layer, n)
        for r in self.rows[self.rows.index(row) + 1 :]:
            if r not in self.convs:
                continue
            module = get_module(self.model, resolve_layer(self.model, r.name))
            groups = int(getattr(module, "groups", 1))
            w = kernel_weights(self.model, r.name)  # (C_out, C_in / groups, kh, kw)
            if w.shape[1] * groups != row.channels:
                continue
            per_group_out, per_group_in = w.shape[0] // groups, w.shape[1]
            g = n // per_group_in  # only the filters of channel n's group read it
            norms = w[g * per_group_out : (g + 1) * per_group_out, n - g * per_group_in].flatten(1).norm(dim=1)
            top = norms.topk(min(k, len(norms)))
            start = g * per_group_out
            return [Neighbour(r.name, start + int(c), float(v)) for v, c in zip(top.values, top.indices, strict=True)]
        return []

    def computed_from(self, layer: str) -> str | None:
        """For an activation or a block output: the last convolution before it with as many channels, whose filter
        ``n`` its channel ``n`` is computed from (through a batch norm, an activation, a block's residual sum);
        ``None`` for a convolution, for an activation of a linear layer's output (a transformer's MLP), or when there
        is none."""
        row = self._row(layer, 0)
        if row.type.startswith("Conv"):
            return None
        earlier = self.rows[: self.rows.index(row)]
        weighted = [r for r in earlier if r.trainable]
        if row.kind == "activation" and weighted and not weighted[-1].type.startswith("Conv"):
            return None  # it rectifies a linear layer's output (a transformer's MLP): that mixes every channel
        before = [r for r in earlier if r in self.convs and r.channels == row.channels]
        return before[-1].name if before else None
