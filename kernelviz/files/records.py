"""Records: the JSON that travels with every result (what was computed, from what, with which versions)."""

from __future__ import annotations

import platform
from typing import Any

from ..core.models import ModelMeta

__all__ = ["provenance", "versions"]


def provenance(meta: ModelMeta, **fields: Any) -> dict[str, Any]:
    """The record of a result: the model and its weights, then ``fields``, then :func:`versions`.

    Every JSON sidecar kernelviz writes (filter images, grids, feature maps, heatmaps, dataset examples,
    atlas manifests) is built here, so they all say the same things the same way.
    """
    return {"model": meta.name, "weights": meta.weights, **fields, "versions": versions()}


def versions() -> dict[str, str]:
    """Versions of Python and the libraries that shape a result."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("kernelviz", "torch", "torchvision", "captum"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out
