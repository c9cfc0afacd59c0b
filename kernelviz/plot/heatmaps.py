"""Heatmaps drawn: overlays on the image, several methods side by side."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure, SubFigure

from ..errors import KernelvizError
from ..explain.methods import FAMILY_LABELS

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


def _blurred(heat: torch.Tensor, sigma: float) -> torch.Tensor:
    """``heat`` ``(H, W)`` under a Gaussian blur of ``sigma`` pixels (for display; 0 leaves it as it is)."""
    if sigma <= 0:
        return heat
    import torchvision.transforms.functional as TF

    size = 2 * int(3 * sigma) + 1
    return TF.gaussian_blur(heat[None, None].float(), [size, size], [sigma, sigma])[0, 0]


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
    smooth: float = 0.0,
) -> Figure | SubFigure:
    """Draw ``heat`` ``(H, W)`` over ``image`` ``(3, H, W)`` RGB in ``[0, 1]``.

    ``smooth`` blurs the map for display (Gaussian, sigma in pixels): per-pixel gradients drawn raw
    read as speckle.

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
    heat = _blurred(heat, smooth)
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
    groups: Sequence[str] | None = None,
    smooth: Sequence[float] | None = None,
) -> Figure:
    """Several heatmaps side by side: one row per image, the image then one overlay per map.

    Args:
        images: ``(B, 3, H, W)`` in ``[0, 1]``.
        maps: a list of ``(B, H, W)`` tensors (one per method), or one such tensor.
        titles: one column title per map.
        title: the sheet's title (model, image, target).
        scale: ``"per-map"`` (each overlay its own range) or ``"shared"``
            (one range per group, so strengths compare; one colorbar per group).
        groups: one group name per map (maps in the same units: the families of
            :data:`kernelviz.explain.heatmaps.FAMILIES`); default: all one group.
        smooth: one display blur (sigma in pixels) per map; default none.
        cmap: colormap; default ``jet`` for non-negative maps, ``RdBu_r`` for signed ones.
    """
    if isinstance(maps, torch.Tensor):
        maps = [maps]
    if scale not in ("per-map", "shared"):
        raise KernelvizError(f"scale must be 'per-map' or 'shared', got {scale!r}")
    images = images.unsqueeze(0) if images.dim() == 3 else images
    groups = list(groups) if groups else ["shared scale"] * len(maps)
    blur = list(smooth) if smooth else [0.0] * len(maps)
    if len(groups) != len(maps) or len(blur) != len(maps):
        raise KernelvizError(f"{len(maps)} maps, {len(groups)} groups and {len(blur)} blurs: give one of each per map")
    maps = [torch.stack([_blurred(m, s) for m in ms]) if s else ms for ms, s in zip(maps, blur, strict=True)]
    b, cols = images.shape[0], len(maps) + 1
    fig = fig or plt.figure(figsize=(3.3 * cols, 3.0 * b + 0.6))
    # shared colorbars carry a label between their column and the next: leave room for it
    axes = fig.subplots(b, cols, squeeze=False, gridspec_kw={"wspace": 0.5 if scale == "shared" else 0.2})
    limits, signs = {}, {}
    for group in dict.fromkeys(groups):
        members = [m for ms, g in zip(maps, groups, strict=True) if g == group for m in ms]
        signs[group] = any(bool((m < 0).any()) for m in members)
        limits[group] = _limits(members, signs[group])
    for i in range(b):
        axes[i, 0].imshow(images[i].permute(1, 2, 0).clamp(0, 1).cpu().numpy())
        axes[i, 0].axis("off")
        if i == 0:
            axes[i, 0].set_title("input", fontsize=9)
        for j, ms in enumerate(maps):
            lim = limits[groups[j]] if scale == "shared" else (None, None)
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
        for group in limits:
            last = max(j for j, g in enumerate(groups) if g == group)
            mappable = plt.cm.ScalarMappable(norm=plt.Normalize(*limits[group]), cmap=_cmap(cmap, signs[group]))
            bar = fig.colorbar(mappable, ax=axes[:, last + 1].tolist(), fraction=0.046, pad=0.03)
            bar.set_label(FAMILY_LABELS.get(group, group), fontsize=7)
            bar.ax.yaxis.set_label_position("right")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
