"""Which quick preview shows the same motif as a layer page's full picture, and how fast a page of them comes.

    python benchmarks/bench_previews.py [--layer _blocks.9._project_conv] [--filters 24] [--page 48]

On the ImageNet-trained EfficientNet-Lite0, the full pictures of ``--filters`` filters of ``--layer`` are made at
the defaults (what the explorer's layer page ends with); then, for each candidate preview (steps, size), the
same filters' previews. Per candidate it prints:

- ``seconds/page``: the time to make the previews of a whole layer page (``--page`` filters, in batches of
  ``--batch``);
- ``found``: the share of filters whose preview is closer to its own full picture than to any other's, in the
  embedding of a middle layer (channel means of ``_blocks.5``: what the network sees, not the pixels), and ``r``
  the mean correlation of a preview's embedding with its own full picture's (``other``: with the others');
- ``unit``: the filter's mean activation on its preview over that on its full picture.

A preview is compared at its own pixel scale: with the centre crop of the full picture at the preview's size
(a unit's motif has a size in pixels, which a smaller image keeps; upsampling the preview would enlarge it).

The candidate the explorer uses is :data:`kernelviz.optvis.settings.PREVIEW`.
"""

from __future__ import annotations

import argparse
import time

import torch

import kernelviz
from kernelviz.explain.maps import feature_maps
from kernelviz.optvis.batch import layer_grid
from kernelviz.optvis.settings import PREVIEW, PREVIEW_BATCH
from kernelviz.zoo import efficientnet_lite0

CANDIDATES = [(32, 96), (32, 128), (48, 128), (64, 128), (96, 128), (48, 160)]
EMBED = "_blocks.5"


def pictures(model: torch.nn.Module, layer: str, filters: list[int], steps: int, size: int | None, batch: int):
    """``(images (B, 3, S, S), seconds)`` of ``filters`` at ``steps`` and ``size``."""
    start = time.perf_counter()
    settings = kernelviz.DEFAULTS.with_(steps=steps, size=size, batch_size=batch)
    images = layer_grid(model, layer, filters, settings).images
    return torch.stack(list(images)), time.perf_counter() - start


def centered(x: torch.Tensor) -> torch.Tensor:
    flat = x.flatten(1)
    flat = flat - flat.mean(1, keepdim=True)
    return flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-8)


def embedding(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    return centered(feature_maps(model, images, EMBED).flatten(2).mean(2))


def unit_means(model: torch.nn.Module, images: torch.Tensor, layer: str, filters: list[int]) -> torch.Tensor:
    acts = feature_maps(model, images, layer).flatten(2).mean(2)  # (B, C)
    return acts[torch.arange(len(filters)), torch.tensor(filters)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layer", default="_blocks.9._project_conv")
    parser.add_argument("--filters", type=int, default=24)
    parser.add_argument("--page", type=int, default=48, help="at least --filters")
    parser.add_argument("--batch", type=int, default=PREVIEW_BATCH, help="previews per batch")
    parser.add_argument("--candidates", default=None, help="STEPS@SIZE,... [default: a spread of them]")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = efficientnet_lite0()
    filters = list(range(args.filters))
    full, seconds = pictures(model, args.layer, filters, kernelviz.DEFAULTS.steps, None, 8)
    size = full.shape[-1]
    print(f"full pictures: {len(filters)} filters of {args.layer} at the defaults in {seconds:.1f} s", flush=True)
    print("steps  size  seconds/page  found  r      other  unit")
    chosen = [tuple(map(int, c.split("@"))) for c in args.candidates.split(",")] if args.candidates else CANDIDATES
    for steps, side in sorted({*chosen, (PREVIEW.steps, int(PREVIEW.size or size))}):
        page, page_seconds = pictures(model, args.layer, list(range(args.page)), steps, side, args.batch)
        small = page[: len(filters)]
        top = (size - side) // 2
        crop = full[:, :, top : top + side, top : top + side]  # the full picture at the preview's scale
        sim = embedding(model, small) @ embedding(model, crop).T  # (B, B): preview i against full picture j
        own = sim.diagonal()
        other = (sim.sum(1) - own) / (len(filters) - 1)
        found = (sim.argmax(1) == torch.arange(len(filters))).float().mean()
        unit = (unit_means(model, small, args.layer, filters) / unit_means(model, full, args.layer, filters)).median()
        mark = " <- PREVIEW" if (steps, side) == (PREVIEW.steps, PREVIEW.size) else ""
        print(
            f"{steps:5d}  {side:4d}  {page_seconds:12.1f}  {found:5.2f}  {own.mean():5.3f}  {other.mean():5.3f}  "
            f"{unit:4.2f}{mark}",
            flush=True,
        )


if __name__ == "__main__":
    main()
