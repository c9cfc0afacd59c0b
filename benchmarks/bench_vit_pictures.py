"""Pictures of a vision transformer's units: does the patch grid print itself into them?

    python benchmarks/bench_vit_pictures.py [--model vit_small_patch16_224] [--units 8] [--steps 96] [--sheet PNG]

A ViT cuts the image into 16-px patches with a stride-16 convolution, so the gradient that paints a picture is
periodic in 16 px and a picture can come out as a mosaic of tiles. This measures it on timm's ViT (random weights,
seeded: no pretrained transformer can be downloaded where kernelviz is built, so what is measured is the
architecture's grid, not learned features): for the first ``--units`` units of block 6's MLP activation, the
**grid index** of each picture, the spectral power at the patch frequency and its harmonics (k x 224/16 cycles
per image along either axis) over the mean power of the neighbouring frequencies (1 = no grid; the jittered,
rescaled, rotated views of the default transforms are expected to keep it near 1), and the activation reached;
per setting: the defaults, no transforms, and the article's plain pixels. ``--sheet`` writes the pictures as a
contact sheet (one row per setting).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import kernelviz
from kernelviz.files.write import save_figure
from kernelviz.plot.grid import plot_grid

LAYER = "blocks.6.mlp.act"
SETTINGS = {  # name: (short label, settings changed)
    "defaults (fourier, standard transforms)": ("defaults", {}),
    "no transforms": ("no transforms", {"transforms": None}),
    "plain pixels, no transforms": ("pixels", {"param": "pixel", "transforms": None}),
}


def grid_index(image: torch.Tensor, patch: int) -> float:
    """Power at the patch frequency and its harmonics over that of their neighbours, ``(3, H, W)`` picture."""
    gray = image.mean(0)
    power = torch.fft.rfft2(gray - gray.mean()).abs() ** 2  # (H, W // 2 + 1)
    side = gray.shape[-1]
    base = side // patch  # cycles per image of the patch grid
    on, near = [], []
    for k in range(1, (side // 2) // base + 1):
        f = k * base
        for axis in (0, 1):
            line = power.mean(1 - axis)  # power along one axis, averaged over the other
            if f + 2 >= len(line):
                continue
            on.append(float(line[f]))
            near.extend(float(line[f + d]) for d in (-2, -1, 1, 2))
    return statistics.mean(on) / max(statistics.mean(near), 1e-12)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="vit_small_patch16_224")
    parser.add_argument("--units", type=int, default=8)
    parser.add_argument("--steps", type=int, default=96)
    parser.add_argument("--sheet", default=None)
    args = parser.parse_args()
    import timm

    torch.manual_seed(0)
    model = timm.create_model(args.model, pretrained=False).eval()
    patch = int(model.patch_embed.patch_size[0])
    units = list(range(args.units))
    print(f"timm {args.model} (random weights) {LAYER}, units 0-{units[-1]}, {args.steps} steps, patch {patch} px")
    print(f"{'setting':42s} grid index min / median / max   mean activation median   seconds")
    rows, labels = [], []
    for name, (short, changes) in SETTINGS.items():
        start = time.perf_counter()
        result = kernelviz.layer_grid(model, LAYER, units, steps=args.steps, **changes)
        seconds = time.perf_counter() - start
        grid = [grid_index(img, patch) for img in result.images]
        print(
            f"{name:42s} {min(grid):5.2f} / {statistics.median(grid):5.2f} / {max(grid):5.2f}"
            f"        {statistics.median(result.final.tolist()):8.3f}              {seconds:5.0f}",
            flush=True,
        )
        rows.append(result.images)
        labels.extend(f"{short}, unit {n}\ngrid {g:.3g}" for n, g in zip(units, grid, strict=True))
    if args.sheet:
        fig = plot_grid(torch.cat(rows), labels, cols=len(units), tile_inches=1.6, title=f"{args.model} {LAYER}")
        save_figure(fig, args.sheet, dpi=80)
        print("wrote", args.sheet)


if __name__ == "__main__":
    main()
