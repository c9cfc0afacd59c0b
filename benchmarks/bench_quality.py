"""Picture quality of filter visualizations, measured: strength, robustness, spectrum, time to quality.

On the ImageNet-trained EfficientNet-Lite0 (offline), 8 filters in each of 3 blocks (early, middle, late),
each configuration optimizes the 8 filters of a block in one batch (per-image seeds) and is scored by one
evaluator that is not the optimizer's:

* **final**: the filter's mean activation on the final image, as a ratio to the best of the bundled photos
  (scikit-image's, 224 px) for that filter;
* **robust**: the mean over 16 fixed random views of the image (crops of 50-100%, rescaled, shifted;
  ``kernelviz.optvis.transforms.random_views``), same ratio: a feature survives being looked at
  differently, adversarial noise does not;
* **HF share**: the share of the gray-level spectral power above a quarter of the Nyquist frequency
  (photos: about 6%; grass/gravel/brick textures about 50%);
* **time to 90%**: the first checkpoint (steps 16, 32, 48, 64, 80, 96, 128, 160, 192, 256, ...) whose
  robust activation reaches 90% of the configuration's own final one, in steps and seconds; and the median
  robust activation at every checkpoint.

Medians over the 24 filters. Configurations: kernelviz's default (``kernelviz.DEFAULTS``), the default before
(Fourier image, detail 1, decay 1, 256 steps), the article's plain pixels (no transforms), MACO, and
candidates: a steeper spectrum (``decay`` 1.25, 1.5, 2), coarse-to-fine (frequencies above a cutoff zeroed,
the cutoff growing from 1/8 of Nyquist to all of it over the first half of the run), the image built at a
lower resolution and upsampled (``detail`` 0.57, 0.71), Lucid's Laplacian pyramid, and the default at twice
the learning rate. lucent 0.1.8's default (256 steps) is added when ``lucent`` is installed. Writes the table
and a contact sheet per block (rows: configurations) into ``--out``; see ``benchmarks/QUALITY.md``:

    python benchmarks/bench_quality.py --out quality/      # every configuration: ~50 min on 2 CPU cores
    python benchmarks/bench_quality.py --only "maco" ...   # chosen configurations
    python benchmarks/bench_quality.py --quick              # 1 block, 4 filters, 64 steps
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import textwrap
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

import kernelviz
from kernelviz.optvis.params import _COLOR, ImageParam, _draw, fourier_image, maco_image, pixel_image
from kernelviz.optvis.settings import DEFAULTS
from kernelviz.optvis.transforms import random_views
from kernelviz.zoo import efficientnet_lite0, photos

LAYERS = {"_blocks.2": range(8), "_blocks.9": range(8), "_blocks.13": range(8)}
LUCENT, LUCENT_STEPS = "lucent 0.1.8 default (128 px)", 256
DEFAULT = f"default (fourier, detail {DEFAULTS.detail:g}, decay {DEFAULTS.decay:g})"
BEFORE = "fourier detail 1, decay 1, 256 steps (the default before)"
CHECKPOINTS = (16, 32, 48, 64, 80, 96, 128, 160, 192, 256, 320, 384, 512)
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "hubble_deep_field",
          "immunohistochemistry", "retina", "moon", "brick", "grass", "gravel", "page")  # fmt: skip


def hf_share(images: torch.Tensor) -> torch.Tensor:
    """``(B,)``: share of the gray-level power above a quarter of Nyquist (DC excluded)."""
    gray = images.mean(1)
    gray = gray - gray.mean((1, 2), keepdim=True)
    power = torch.fft.rfft2(gray).abs() ** 2  # (B, H, W//2+1)
    h, w = gray.shape[-2:]
    f = torch.sqrt(torch.fft.fftfreq(h)[:, None] ** 2 + torch.fft.rfftfreq(w)[None, :] ** 2)
    return power[:, f > 0.125].sum(1) / power[:, f > 0].sum(1).clamp(min=1e-12)


class Recorder:
    """Wraps a parameterization: keeps the rendered image at each checkpoint (render runs once per step)."""

    def __init__(self, factory: Callable[..., ImageParam]) -> None:
        self.factory = factory
        self.snapshots: dict[int, torch.Tensor] = {}

    def __call__(self, batch: int, size: tuple[int, int], **kwargs: Any) -> ImageParam:
        inner = self.factory(batch, size, **kwargs)
        calls = [0]

        def render() -> torch.Tensor:
            img = inner.render()
            if calls[0] in CHECKPOINTS:
                self.snapshots[calls[0]] = img.detach().cpu().clone()
            calls[0] += 1
            return img

        return ImageParam(inner.params, render, inner.project, inner.name)


def coarse_to_fine(batch: int, size: tuple[int, int], *, steps: int, **kwargs: Any) -> ImageParam:
    """Fourier image whose frequencies above a cutoff are zeroed; the cutoff grows from 1/8 of Nyquist to
    all of it over the first half of the run (one render per step)."""
    inner = fourier_image(batch, size, **kwargs)
    (spec,) = inner.params
    h, w = size
    f = torch.sqrt(torch.fft.fftfreq(h)[:, None] ** 2 + torch.fft.rfftfreq(w)[None, :] ** 2).to(spec.device)
    calls = [0]
    full = inner.render

    def render() -> torch.Tensor:
        grow = min(1.0, calls[0] / max(1, steps // 2))
        cutoff = 0.5 * (0.125 + 0.875 * grow) * 2**0.5  # up to the corner of the grid
        calls[0] += 1
        if cutoff >= 0.5 * 2**0.5:
            return full()
        mask = (f <= cutoff).to(spec.dtype)[None, None, :, :, None]
        saved = spec.data.clone()
        spec.data.mul_(mask)  # the render reads spec: zero the high band for this step's image
        try:
            out = full()
        finally:
            spec.data.copy_(saved)
        return out

    return ImageParam(inner.params, render, inner.project, "fourier-c2f")


def laplacian_pyramid(
    batch: int, size: tuple[int, int], *, generator: Any, device: torch.device, levels: int = 6, **_: Any
) -> ImageParam:
    """Lucid's Laplacian-pyramid image: the sum of ``levels`` pixel grids at 1, 1/2, 1/4... of the resolution,
    each upsampled (bilinear), in decorrelated color, through a sigmoid. A coarse level's pixel moves a whole
    patch, so Adam's equal step per parameter favors broad structure."""
    h, w = size
    grids = [
        (0.01 * _draw(torch.randn, batch, (3, max(1, h >> k), max(1, w >> k)), generator)).to(device).requires_grad_()
        for k in range(levels)
    ]
    color = _COLOR.to(device)

    def render() -> torch.Tensor:
        z = sum(F.interpolate(g, size=size, mode="bilinear", align_corners=False) for g in grids)
        return torch.sigmoid(torch.einsum("ij,bjhw->bihw", color, z))

    return ImageParam(grids, render, lambda: None, "laplacian")


def run_lucent(
    model: torch.nn.Module, layer: str, filters: list[int], steps: int, size: int
) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """lucent's ``render_vis`` defaults (128-px Fourier image upsampled to 224, its transforms, Adam 0.05), one
    image per filter in one batch: the final images and the checkpoints, upsampled to ``size`` as lucent's
    network sees them."""
    import numpy as np
    from bench_step import lucent_optvis

    optvis = lucent_optvis()
    objectives, param, render = optvis.objectives, optvis.param, optvis.render

    torch.manual_seed(0)
    np.random.seed(0)
    objective = objectives.channel(layer.replace(".", "_"), filters[0], batch=0)
    for i, n in enumerate(filters[1:], 1):
        objective = objective + objectives.channel(layer.replace(".", "_"), n, batch=i)
    marks = (*(k for k in CHECKPOINTS if k < steps), steps)
    images = render.render_vis(
        model, objective, lambda: param.image(128, batch=len(filters)), thresholds=marks, progress=False,
        show_image=False,
    )  # fmt: skip

    def seen(array: Any) -> torch.Tensor:
        x = torch.as_tensor(array).permute(0, 3, 1, 2).float()
        return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=True).clamp(0, 1)

    shots = {k: seen(a) for k, a in zip(marks, images, strict=True)}
    return shots[steps], shots


def configs(steps: int) -> dict[str, tuple[Any, ...]]:
    """name -> (parameterization, transforms[, overrides of visualize's arguments: lr, steps])."""
    fourier = partial(fourier_image, decay=1.0, detail=1.0)
    default = partial(fourier_image, decay=DEFAULTS.decay, detail=DEFAULTS.detail)
    return {
        DEFAULT: (default, "standard"),
        BEFORE: (fourier, "standard", {"steps": 256}),
        "pixel, no transforms (article)": (pixel_image, None),
        "maco": (maco_image, "standard"),
        "fourier decay 1.25": (partial(fourier, decay=1.25), "standard"),
        "fourier decay 1.5": (partial(fourier, decay=1.5), "standard"),
        "fourier decay 2": (partial(fourier, decay=2.0), "standard"),
        "coarse-to-fine": (partial(coarse_to_fine, steps=steps, decay=1.0, detail=1.0), "standard"),
        "fourier detail 0.57 (128 px)": (partial(fourier, detail=0.57), "standard"),
        "fourier detail 0.71 (160 px)": (partial(fourier, detail=0.71), "standard"),
        "laplacian pyramid (6 levels)": (laplacian_pyramid, "standard"),
        "default, lr 0.1": (default, "standard", {"lr": 0.1}),
    }


def robust(model: torch.nn.Module, images: torch.Tensor, layer: str, filters: list[int]) -> torch.Tensor:
    """``(B,)``: filter ``filters[i]``'s mean activation on 16 random views of image ``i``, averaged."""
    views = random_views(images, 16, seed=1)  # (B*16, 3, H, W)
    acts = kernelviz.feature_maps(model, views, layer).flatten(2).mean(2)  # (B*16, C)
    b = images.shape[0]
    picked = acts.view(b, 16, -1)[torch.arange(b), :, torch.tensor(filters)]  # (B, 16)
    return picked.mean(1)


def compact_png(path: Path) -> None:
    """Rewrite a contact sheet with a 256-color palette (no dithering): a third of the size, the textures kept."""
    from PIL import Image

    with Image.open(path) as im:
        rgb = im.convert("RGB")
    rgb.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=DEFAULTS.steps, help="(the default before: 256, lucent: 256)")
    parser.add_argument("--size", type=int, default=224, help="image side (the evaluator sees the same size)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", nargs="*", default=None, help="configuration names to run")
    parser.add_argument("--out", type=Path, default=None, help="folder for table.md and the contact sheets")
    args = parser.parse_args()
    layers = {"_blocks.9": range(4)} if args.quick else LAYERS
    steps = 64 if args.quick else args.steps
    model = efficientnet_lite0()
    pics = photos(PHOTOS, 224)
    pics_hf = float(hf_share(pics[:10]).median())
    rows: dict[str, dict[str, list[float]]] = {}
    sheets: dict[str, dict[str, torch.Tensor]] = {}
    chosen: dict[str, Any] = {k: v for k, v in configs(steps).items() if not args.only or k in args.only}
    if importlib.util.find_spec("lucent") is not None and (not args.only or LUCENT in args.only):
        chosen[LUCENT] = None
    for layer, filters in layers.items():
        fs = list(filters)
        best = kernelviz.feature_maps(model, pics, layer).flatten(2).mean(2)[:, fs].amax(0).clamp(min=1e-6)  # (8,)
        for name in chosen:
            start = time.perf_counter()
            if name == LUCENT:
                n_steps = LUCENT_STEPS
                final, snapshots = run_lucent(model, layer, fs, n_steps, args.size)
            else:
                factory, transforms, *more = chosen[name]
                overrides = {"steps": steps, **(more[0] if more else {})}
                n_steps = overrides["steps"]
                recorder = Recorder(factory)
                objective = f"{layer}:{','.join(map(str, fs))}"
                final = kernelviz.visualize(
                    model, objective, size=args.size, param=recorder, transforms=transforms,
                    image_seeds=[1000 + n for n in fs], **overrides,
                ).images  # fmt: skip
                snapshots = recorder.snapshots
            seconds = time.perf_counter() - start
            curve = {k: robust(model, v, layer, fs) for k, v in sorted(snapshots.items()) if k <= n_steps}
            end = robust(model, final, layer, fs)
            direct = kernelviz.feature_maps(model, final, layer).flatten(2).mean(2)[torch.arange(len(fs)), fs]
            r = rows.setdefault(name, {})
            for i in range(len(fs)):
                r.setdefault("final", []).append(float(direct[i] / best[i]))
                r.setdefault("robust", []).append(float(end[i] / best[i]))
                reached = next((k for k, v in curve.items() if v[i] >= 0.9 * end[i]), n_steps)
                for k, v in curve.items():
                    r.setdefault(f"at {k}", []).append(float(v[i] / best[i]))
                r.setdefault("t90_steps", []).append(reached)
                r.setdefault("t90_s", []).append(reached * seconds / n_steps / len(fs))
            r.setdefault("hf", []).extend(hf_share(final).tolist())
            r.setdefault("s_per_filter", []).append(seconds / len(fs))
            r["steps"] = [n_steps]
            sheets.setdefault(layer, {})[name] = final
            print(f"{layer} {name:32s} robust {statistics.median(r['robust'][-len(fs):]):.2f} "
                  f"hf {statistics.median(r['hf'][-len(fs):]):.2f} {seconds:.0f} s", flush=True)  # fmt: skip
    lines = [
        f"EfficientNet-Lite0, {sum(len(v) for v in layers.values())} filters ({', '.join(layers)}), {args.size} px; "
        "medians. Activations as ratios to the best bundled photo per filter; HF share of photos: "
        f"{pics_hf:.1%}.",
        "",
        "| configuration | steps | final | robust (16 views) | robust / final | HF share | time to 90% (steps) | "
        "time to 90% (s / filter) | s / filter |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        med = {k: statistics.median(v) for k, v in r.items()}
        keep = statistics.median(a / b for a, b in zip(r["robust"], r["final"], strict=True) if b > 0)
        lines.append(
            f"| {name} | {med['steps']:.0f} | {med['final']:.2f} | {med['robust']:.2f} | {keep:.2f} | "
            f"{med['hf']:.1%} | {med['t90_steps']:.0f} | {med['t90_s']:.1f} | {med['s_per_filter']:.1f} |"
        )
    marks = sorted({int(k[3:]) for r in rows.values() for k in r if k.startswith("at ")})
    lines += [
        "",
        "Robust activation after k steps (median over the filters, as a ratio to the best photo):",
        "",
        "| configuration | " + " | ".join(f"{k}" for k in marks) + " |",
        "|---|" + "---|" * len(marks),
    ]
    for name, r in rows.items():
        values = (f"{statistics.median(r[f'at {k}']):.2f}" if f"at {k}" in r else "" for k in marks)
        lines.append(f"| {name} | " + " | ".join(values) + " |")
    text = "\n".join(lines)
    print("\n" + text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        for layer, by_config in sheets.items():
            names = list(by_config)
            cols = by_config[names[0]].shape[0]
            fig, axes = plt.subplots(len(names), cols, figsize=(1.6 * cols + 1.4, 1.7 * len(names)), squeeze=False)
            for i, name in enumerate(names):
                for j in range(cols):
                    axes[i, j].imshow(by_config[name][j].permute(1, 2, 0).clamp(0, 1).numpy())
                    axes[i, j].set_xticks([])
                    axes[i, j].set_yticks([])
                    if j == 0:
                        label = "\n".join(textwrap.wrap(name, 20))
                        axes[i, j].set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
                    if i == 0:
                        axes[i, j].set_title(f"{layer}:{list(layers[layer])[j]}", fontsize=7)
            fig.tight_layout()
            sheet = args.out / f"quality_{layer.replace('.', '_')}.png"
            fig.savefig(sheet, dpi=90)
            plt.close(fig)
            compact_png(sheet)
        (args.out / "table.md").write_text(f"{text}\n")


if __name__ == "__main__":
    main()
