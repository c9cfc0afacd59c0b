"""Transforms that end at the requested size or not: speed and the objective reached.

On the ImageNet-trained EfficientNet-Lite0, 12 filters over 3 blocks, one image each (per-image seconds
comparable), Lucid's standard recipe ending with: nothing (the network sees a larger image: 247 px for
224), a center crop back to the size, or a bilinear resize back (lucent's way). Objective: the filter's mean
activation on the final image, and its mean over 16 random views (robustness), as median ratios to "none".

    python benchmarks/bench_fit.py 224 64        # SIZE STEPS
"""

from __future__ import annotations

import statistics
import sys
import time

import torch

import kernelviz
from kernelviz.optvis.transforms import random_views, standard_transforms
from kernelviz.zoo import efficientnet_lite0

LAYERS = {"_blocks.4": [0, 5, 11, 17], "_blocks.9": [0, 7, 19, 33], "_blocks.13": [1, 9, 40, 77]}
ENDS = (None, "crop", "resize")


def measure(model: torch.nn.Module, size: int, steps: int) -> dict[str | None, dict[str, list[float]]]:
    found: dict[str | None, dict[str, list[float]]] = {e: {"s": [], "final": [], "robust": []} for e in ENDS}
    for layer, filters in LAYERS.items():
        for end in ENDS:
            start = time.perf_counter()
            results = []
            for n in filters:
                chain = standard_transforms(torch.Generator().manual_seed(n), size, end)
                results.append(
                    kernelviz.visualize(model, f"{layer}:{n}", steps=steps, size=size, transforms=chain, seed=n)
                )
            found[end]["s"].append((time.perf_counter() - start) / (steps * len(filters)))
            for n, result in zip(filters, results, strict=True):
                found[end]["final"].append(float(result.final[0]))
                views = random_views(result.images, 16, seed=1)
                found[end]["robust"].append(float(kernelviz.feature_maps(model, views, layer)[:, n].mean()))
    return found


def main() -> None:
    size, steps = int(sys.argv[1]), int(sys.argv[2])
    found = measure(efficientnet_lite0(), size, steps)
    base = found[None]

    def ratio(values: list[float], reference: list[float]) -> float:
        return statistics.median(a / b for a, b in zip(values, reference, strict=True) if b > 0)

    print(f"{size} px, {steps} steps, 12 filters over 3 blocks of EfficientNet-Lite0, one image each")
    print(f"{'end':<8}{'s/step':>9}{'speed-up':>10}{'final (median ratio)':>22}{'robust (median ratio)':>23}")
    for end, r in found.items():
        speed = statistics.mean(base["s"]) / statistics.mean(r["s"])
        print(
            f"{end or 'none':<8}{statistics.mean(r['s']):>9.4f}{speed:>9.2f}x"
            f"{ratio(r['final'], base['final']):>22.3f}{ratio(r['robust'], base['robust']):>23.3f}"
        )


if __name__ == "__main__":
    main()
