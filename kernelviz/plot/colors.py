"""Colormaps by name, checked before any work is done."""

from __future__ import annotations

import matplotlib

from ..errors import KernelvizError, close_matches

__all__ = ["check_cmap"]


def check_cmap(name: str | None) -> str | None:
    """``name`` when matplotlib knows the colormap (``None`` passes: the drawing function chooses).

    Raises:
        KernelvizError: an unknown name, with the closest known ones.
    """
    if name is None or name in matplotlib.colormaps:
        return name
    hint = close_matches(name, list(matplotlib.colormaps))
    raise KernelvizError(
        f"unknown colormap {name!r}.{hint} Any matplotlib colormap name works (viridis, magma, gray, jet, RdBu_r, ...)"
    )
