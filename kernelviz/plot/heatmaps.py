"""Heatmaps drawn: overlays on the image, several methods side by side."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure, SubFigure

from ..errors import KernelvizError

__all__ = ["overlay", "plot_heatmap"]


def _limits(maps: Sequence[torch.Tensor], signed: bool, clip: float = 99.5) -> tuple[float, float]:
    """Display range: up to the ``clip`` percentile of ``|map|`` (a few extreme pixels must not wash
    out the rest), symmetric for signed maps; ``(0, 1)`` for all-zero maps."""
    values = torch.cat([m.detach().abs().flatten().float().cpu() for m in maps]) if maps else torch.zeros(1)
    peak = float(torch.quantile(values[:: max(1, values.numel() // 1_000_000)], clip / 100)) if clip < 100 else 0.0
    peak = peak or float(values.max()) or 1.0
    return (-peak, peak) if signed else (0.0, peak)


def _cmap(cmap: str | None, signed: bool) -> str:
    return cmap or ("RdBu_r" if signed else "jet")


def overlay(
    image: torch.Tensor,
    heat: torch.Tensor,
    *,
    ax: Axes | None = None,
    cmap: str | None = None,
    alpha: float = 0.5,
    vmin: float | None = None,
    vmax: float | None = None,
    title: str | None = None,
    colorbar: bool = True,
) -> Figure | SubFigure:
    """Draw ``heat`` ``(H, W)`` over ``image`` ``(3, H, W)`` RGB in ``[0, 1]``.

    The color range defaults to ``0..p`` for non-negative maps (``jet``) and a
    symmetric ``-p..p`` for signed ones (``RdBu_r``: red for, blue against),
    ``p`` the 99.5th percentile of ``|heat|``; an all-zero map draws the image
    with an empty overlay (and says so in the title) instead of failing.

    Returns:
        The figure that holds ``ax``.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(4.2, 3.8))
    fig = ax.figure
    signed = bool((heat < 0).any())
    lo, hi = _limits([heat], signed)
    vmin = lo if vmin is None else vmin
    vmax = hi if vmax is None else vmax
    ax.imshow(image.permute(1, 2, 0).clamp(0, 1).cpu().numpy())
    ax.imshow(heat.cpu().numpy(), cmap=_cmap(cmap, signed), alpha=alpha, vmin=vmin, vmax=vmax)
    # the colorbar shows the colormap at full strength: the overlay's transparency is not a value
    mappable = plt.cm.ScalarMappable(norm=plt.Normalize(vmin, vmax), cmap=_cmap(cmap, signed))
    if bool((heat == 0).all()):
        title = f"{title or ''} (all-zero map)".strip()
    if title:
        ax.set_title(title, fontsize=9)
    ax.axis("off")
    if colorbar:
        fig.colorbar(mappable, ax=ax, fraction=0.046, pad=0.03)
    return fig


def plot_heatmap(
    images: torch.Tensor,
    maps: Sequence[torch.Tensor] | torch.Tensor,
    *,
    titles: Sequence[str] | None = None,
    scale: str = "per-map",
    cmap: str | None = None,
    alpha: float = 0.5,
    title: str | None = None,
    fig: Figure | None = None,
) -> Figure:
    """Several heatmaps side by side: one row per image, the image then one overlay per map.

    Args:
        images: ``(B, 3, H, W)`` in ``[0, 1]``.
        maps: a list of ``(B, H, W)`` tensors (one per method), or one such tensor.
        titles: one column title per map.
        title: the sheet's title (model, image, target).
        scale: ``"per-map"`` (each overlay its own range) or ``"shared"``
            (one range for all, so strengths compare; one colorbar).
        cmap: colormap; default ``jet`` for non-negative maps, ``RdBu_r`` for signed ones.
    """
    if isinstance(maps, torch.Tensor):
        maps = [maps]
    if scale not in ("per-map", "shared"):
        raise KernelvizError(f"scale must be 'per-map' or 'shared', got {scale!r}")
    images = images.unsqueeze(0) if images.dim() == 3 else images
    b, cols = images.shape[0], len(maps) + 1
    fig = fig or plt.figure(figsize=(3.3 * cols, 3.0 * b + 0.4))
    axes = fig.subplots(b, cols, squeeze=False)
    signed = any(bool((m < 0).any()) for m in maps)
    shared = _limits([m for ms in maps for m in ms], signed)
    for i in range(b):
        axes[i, 0].imshow(images[i].permute(1, 2, 0).clamp(0, 1).cpu().numpy())
        axes[i, 0].axis("off")
        if i == 0:
            axes[i, 0].set_title("input", fontsize=9)
        for j, ms in enumerate(maps):
            lim = shared if scale == "shared" else (None, None)
            overlay(
                images[i],
                ms[i],
                ax=axes[i, j + 1],
                cmap=cmap,
                alpha=alpha,
                vmin=lim[0],
                vmax=lim[1],
                title=(titles[j] if titles else None) if i == 0 else None,
                colorbar=scale == "per-map",
            )
    if scale == "shared":
        mappable = plt.cm.ScalarMappable(norm=plt.Normalize(*shared), cmap=_cmap(cmap, signed))
        fig.colorbar(mappable, ax=axes.ravel().tolist(), fraction=0.02, pad=0.02, label="attribution (shared scale)")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
