"""How a layer's output is laid out, and the same output as ``(B, C, h, w)`` maps.

A convolution gives ``(B, C, h, w)``. A vision transformer's layers give tokens, ``(B, N, C)``: ``N`` is a few
prefix tokens (class, distillation, registers) followed by one token per patch, row by row. Swin's stages and the
insides of ConvNeXt blocks are channels-last, ``(B, h, w, C)``. Every path that reads a layer (objectives, feature
maps, dataset scans, heatmaps, the layer table) goes through :func:`layout_of` and :meth:`Layout.to_map`, so a unit
is always a channel and a position always a place on the image's grid.

The layout is read off the tensor's shape and the input's size: a patch grid ``h x w`` has the input's aspect
ratio, which the channel axis almost never has. The prefix count comes from the model when it says
(:func:`prefix_tokens`: timm's ``num_prefix_tokens``, torchvision's class token).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["Layout", "layout_of", "prefix_tokens"]

#: Largest number of prefix tokens guessed for a model that does not say (class + distillation + registers).
_MAX_GUESSED_PREFIX = 8


@dataclass(frozen=True)
class Layout:
    """The layout of one layer's output.

    Attributes:
        kind: ``"map"`` ``(B, C, h, w)``, ``"tokens"`` ``(B, N, C)`` with ``prefix`` tokens before the patch grid,
            ``"channels_last"`` ``(B, h, w, C)``, or ``"other"`` (anything else: a vector ``(B, C)``, a window
            batch; read as it is).
        prefix: tokens before the patch tokens (class, distillation, registers), dropped by :meth:`to_map`.
        grid: ``(h, w)`` of the map, or ``None`` for ``"other"``.
    """

    kind: str
    prefix: int = 0
    grid: tuple[int, int] | None = None

    def to_map(self, t: torch.Tensor) -> torch.Tensor:
        """The output as maps: ``(B, N, C)`` tokens -> ``(B, C, h, w)`` (prefix tokens dropped),
        ``(B, h, w, C)`` -> ``(B, C, h, w)``; any other layout unchanged. A view where one exists."""
        if self.kind == "tokens":
            assert self.grid is not None
            b, _, c = t.shape
            return t[:, self.prefix :].transpose(1, 2).reshape(b, c, *self.grid)
        if self.kind == "channels_last":
            return t.permute(0, 3, 1, 2)
        return t

    def from_map(self, maps: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
        """Back to the layer's own layout: the inverse of :meth:`to_map`, the prefix tokens taken from ``original``
        (the output ``maps`` came from), so an edited map can flow on through the network."""
        if self.kind == "tokens":
            tokens = maps.flatten(2).transpose(1, 2)  # (B, h*w, C)
            return torch.cat([original[:, : self.prefix].expand(len(tokens), -1, -1), tokens], 1)
        if self.kind == "channels_last":
            return maps.permute(0, 2, 3, 1)
        return maps

    def describe(self) -> str:
        """For people: ``"tokens: 1 prefix + 14x14 patches"``, ``"channels-last 7x7"``, ``"map 56x56"``."""
        if self.grid is None:
            return self.kind
        h, w = self.grid
        if self.kind == "tokens":
            return f"tokens: {self.prefix} prefix + {h}x{w} patches"
        return f"{'channels-last' if self.kind == 'channels_last' else 'map'} {h}x{w}"


def prefix_tokens(model: nn.Module) -> int | None:
    """How many tokens a vision transformer puts before its patch tokens, as the model says: timm's
    ``num_prefix_tokens`` (class + distillation + register tokens), 1 for torchvision's ``VisionTransformer``
    (its ``class_token``); ``None`` when the model does not say."""
    n = getattr(model, "num_prefix_tokens", None)
    if isinstance(n, int) and not isinstance(n, bool):
        return n
    if isinstance(getattr(model, "class_token", None), torch.Tensor):
        return 1
    return None


def _fits(h: int, w: int, size: tuple[int, int] | None, slack: bool = True) -> bool:
    """Whether an ``h x w`` grid can be the image's (``size`` = ``(H, W)``): the same aspect ratio, exactly or
    (``slack``) to within the rounding of one row or column; a square grid when the size is unknown."""
    if h < 1 or w < 1:
        return False
    if size is None:
        return h == w or (slack and abs(h - w) == 1)
    big_h, big_w = size
    return h <= big_h and w <= big_w and abs(h * big_w - w * big_h) <= (max(big_h, big_w) if slack else 0)


def _grid(tokens: int, size: tuple[int, int] | None) -> tuple[int, int] | None:
    """The ``(h, w)`` with ``h * w == tokens`` and the image's aspect ratio, or ``None``."""
    if size is None:
        side = math.isqrt(tokens)
        return (side, side) if side * side == tokens and tokens > 0 else None
    ratio = size[0] / size[1]
    best = None
    for h in range(1, math.isqrt(tokens) + 1):
        if tokens % h:
            continue
        for gh, gw in ((h, tokens // h), (tokens // h, h)):
            if _fits(gh, gw, size) and (best is None or abs(gh / gw - ratio) < abs(best[0] / best[1] - ratio)):
                best = (gh, gw)
    return best


def layout_of(
    shape: tuple[int, ...] | torch.Size,
    size: tuple[int, int] | None = None,
    prefix: int | None = None,
    batch: int | None = None,
) -> Layout:
    """The layout of an output of ``shape`` (batch first) made from an input image of ``size`` ``(H, W)``.

    * 4-D: ``(B, C, h, w)`` when ``h x w`` has the image's aspect ratio, else ``(B, h, w, C)`` when that one has
      (exact ratios first, then to within one row or column; when both fit, a map).
    * 3-D ``(B, N, C)``: tokens when ``N - prefix`` patch tokens make a grid with the image's aspect ratio; with
      ``prefix`` unknown (``None``), the smallest count of prefix tokens that does. ``N`` itself is tried too (a
      patch embedding's output, before the class token is added).
    * a batch other than the input's (``batch``; Swin's windows) or anything else: ``"other"``.
    """
    shape = tuple(shape)
    if batch is not None and shape and shape[0] != batch:
        return Layout("other")
    if len(shape) == 4:
        _, a, h, w = shape
        for slack in (False, True):
            if _fits(h, w, size, slack):
                return Layout("map", grid=(h, w))
            if _fits(a, h, size, slack):
                return Layout("channels_last", grid=(a, h))
        return Layout("map", grid=(h, w))
    if len(shape) == 3:
        n = shape[1]
        counts = [prefix, 0] if prefix is not None else list(range(_MAX_GUESSED_PREFIX + 1))
        for p in dict.fromkeys(counts):
            assert p is not None
            grid = _grid(n - p, size) if n - p > 0 else None
            if grid is not None:
                return Layout("tokens", prefix=p, grid=grid)
    return Layout("other")
