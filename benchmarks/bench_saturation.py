"""Rankings at saturating activations, on real photos: are a unit's top images chosen by what it responds to, or by
the order of the files?

    python benchmarks/bench_saturation.py [--images ../shared/data/imagenet-sample] [--layers every-act]

EfficientNet-Lite0 (ImageNet-trained, offline) over the ImageNet sample (one photo per class), scanned twice: once with
the class folders in their own order, once named so that they sort in reverse. Per layer it prints how many units
have their top 9 tied (nine equal ranking scores, and tiebreaks where the scan has them: the ranking among them is
file order) and how much each unit's top
9 images agree between the two orders (1: the same nine; file order decides: low). Runs on any kernelviz tree
(``PYTHONPATH=/path/to/tree``): the ranking score is the scan's ``scores`` where it has them, else its values.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

import kernelviz

SAMPLE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "imagenet-sample"


def layouts(sample: Path, root: Path) -> tuple[Path, Path, list[str]]:
    """Two ImageFolder layouts of the sample (symlinks): class folders in their order, and in reverse."""
    photos = sorted(sample.glob("*.JPEG"))
    forward, backward = root / "forward", root / "backward"
    for i, photo in enumerate(photos):
        wnid = photo.name.split("_")[0]
        for folder, name in ((forward, wnid), (backward, f"{len(photos) - 1 - i:04d}_{wnid}")):
            (folder / name).mkdir(parents=True, exist_ok=True)
            (folder / name / photo.name).symlink_to(photo)
    return forward, backward, [p.name for p in photos]


def ranked(scan: object, layer: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scores (C, k), the photo of each (C, k) as an index into the sorted photos)`` of the top ranking."""
    top = scan.layers[layer].top  # type: ignore[attr-defined]
    scores = getattr(top, "scores", top.values)
    names = [Path(f).name for f in scan.files]  # type: ignore[attr-defined]
    order = {name: i for i, name in enumerate(sorted(names))}
    photo = torch.tensor([order[n] for n in names])
    return scores, photo[top.images.clamp(min=0)]


def pictures(sheet: Path) -> None:
    """The pictures of filters 0-3 of ``_swish#2`` (a ReLU6) at the defaults: dead or not, values, a sheet."""
    model = kernelviz.load_model("kernelviz.zoo:efficientnet_lite0")
    grid = kernelviz.layer_grid(model, "_swish#2", [0, 1, 2, 3])
    print("| filter | reported dead | mean activation | mean pre-activation | at the cap | curve: first, last |")
    print("|---|---|---|---|---|---|")
    labels = []
    for i, n in enumerate(grid.filters):
        r = grid.record(i)
        pre = r.get("pre_activation")
        print(f"| {n} | {r['dead_unit']} | {r['final_value']:.3g} | {'—' if pre is None else f'{pre:.3g}'} | "
              f"{r.get('at_cap', '—')} | {r['curve'][0]:.3g}, {r['curve'][-1]:.3g} |")  # fmt: skip
        value = r["final_value"]
        labels.append(f"{n}: dead" if r["dead_unit"] else f"{n}: mean {value:.3g}")
    kernelviz.plot_grid(grid.images, labels, title="_swish#2, filters 0-3").savefig(sheet, dpi=80)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=Path, default=SAMPLE)
    parser.add_argument("--layers", default="every-act", help="every-act, or comma-separated layers")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N photos (0: all)")
    parser.add_argument("--pictures", type=Path, default=None, help="instead: the pictures of _swish#2 0-3, sheet here")
    args = parser.parse_args()
    if args.pictures is not None:
        pictures(args.pictures)
        return
    if not args.images.is_dir():
        sys.exit(f"no ImageNet sample at {args.images}: pass --images DIR")
    torch.manual_seed(0)
    model = kernelviz.load_model("kernelviz.zoo:efficientnet_lite0")
    rows = kernelviz.list_layers(model)
    if args.layers == "every-act":
        layers = [r.name for r in rows if r.type == "ReLU6" and len(r.shape) == 3]
    else:
        layers = args.layers.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        sample = args.images
        if args.limit:
            sample = Path(tmp) / "limited"
            sample.mkdir()
            for p in sorted(args.images.glob("*.JPEG"))[: args.limit]:
                (sample / p.name).symlink_to(p)
        forward, backward, _ = layouts(sample, Path(tmp))
        scans = []
        for folder in (forward, backward):
            start = time.perf_counter()
            scans.append(kernelviz.scan_units(model, folder, layers, k=9, workers=1))
            print(f"scanned {folder.name}: {time.perf_counter() - start:.0f} s", flush=True)
    print(f"EfficientNet-Lite0, {scans[0].scanned} photos, k = 9; kernelviz at {Path(kernelviz.__file__).parent}")
    print("| layer | units | top 9 all tied | of them constant | top 9 shared under reversed file order (mean of 9) |")
    print("|---|---|---|---|---|")
    for layer in layers:
        (s1, p1), (_, p2) = ranked(scans[0], layer), ranked(scans[1], layer)
        tied = (s1 == s1[:, :1]).all(1)
        tiebreak = getattr(scans[0].layers[layer].top, "tiebreak", None)
        if tiebreak is not None:  # equal scores told apart by the mean are no tie
            tied &= (tiebreak == tiebreak[:, :1]).all(1)
        bottom = scans[0].layers[layer].bottom
        lowest = getattr(bottom, "scores", bottom.values)[:, 0]
        constant = tied & (s1[:, 0] == lowest)  # the same value at every position of every photo
        shared = [len(set(a.tolist()) & set(b.tolist())) / 9 for a, b in zip(p1, p2, strict=True)]
        print(f"| {layer} | {len(s1)} | {int(tied.sum())} | {int(constant.sum())} | {sum(shared) / len(shared):.2f} |",
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
