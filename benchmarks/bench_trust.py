"""Path similarity of pictures on a trained network: are they processed like their natural examples?

    python benchmarks/bench_trust.py [--units 8] [--images 240] [--layers _blocks.2._project_conv,...]

On the ImageNet-trained EfficientNet-Lite0 and a collection cut from the bundled photos
(:func:`kernelviz.zoo.photo_collection`), per layer: each unit's top 8 natural examples (a scan), 32 random
images of the collection, the unit's picture at the defaults and the article's plain pixel picture (pixel
parameterization, no transforms); :func:`kernelviz.units.trust.path_similarity` at the layers below. Prints per
layer the mean rank correlations (picture, pixel picture, natural and random references, averaged over the
layers below and the units), the mean overall score (0: like a random image, 1: like a natural example) and how
many units each kind of picture gets flagged at :data:`~kernelviz.units.trust.FLAG_BELOW`; then every unit's
overall score.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

import kernelviz
from kernelviz.files.images import image_files, load_image
from kernelviz.units.scan import scan_units
from kernelviz.units.trust import FLAG_BELOW, path_similarity
from kernelviz.zoo import COLOR_PHOTOS, efficientnet_lite0, photo_collection

LAYERS = "_blocks.2._project_conv,_blocks.5._project_conv,_blocks.9._project_conv,_blocks.13._project_conv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--units", type=int, default=8)
    parser.add_argument("--images", type=int, default=240)
    parser.add_argument("--layers", default=LAYERS)
    parser.add_argument("--steps", type=int, default=kernelviz.DEFAULTS.steps)
    parser.add_argument("--out", type=Path, default=None, help="also write every unit's Trust records as JSON")
    parser.add_argument(
        "--distinct",
        action="store_true",
        help="natural examples from distinct photos: each unit's best crop of each source photo (at most one per "
        "photo), so the natural reference is not crops of one photo compared with each other",
    )
    args = parser.parse_args()
    model = efficientnet_lite0()
    layers = args.layers.split(",")
    units = list(range(args.units))
    with tempfile.TemporaryDirectory() as tmp:
        folder = photo_collection(Path(tmp) / "photos", args.images)
        scan = scan_units(model, folder, layers, k=64 if args.distinct else 8)
        files = image_files(folder)
        randoms = torch.stack([load_image(f, 224) for f in random.Random(0).sample(files, 32)])
        print(f"EfficientNet-Lite0, {len(files)} images cut from the bundled photos; {args.units} units per layer")
        print("layer                    picture  pixel   natural random | score: picture pixel | flagged: pic pixel")
        lowest: dict[str, list[tuple[int, float, float]]] = {}
        records: dict[str, list[dict]] = {}
        for layer in layers:
            start = time.perf_counter()
            pictures = kernelviz.layer_grid(model, layer, units, steps=args.steps, batch_size=8).images
            pixels = kernelviz.layer_grid(
                model, layer, units, steps=args.steps, batch_size=8, param="pixel", transforms=None
            ).images
            rows = []
            for i, n in enumerate(units):
                found = [path for path, _, _ in scan.examples(layer, n)]
                if args.distinct:  # image i of the collection is cut from photo i % 9: the best crop of each
                    best: dict[int, Path] = {}
                    for path in found:
                        best.setdefault(int(path.stem) % len(COLOR_PHOTOS), path)
                    found = list(best.values())[:8]
                examples = torch.stack([load_image(path, 224) for path in found[:8]])
                rows.append(
                    (
                        path_similarity(model, layer, n, pictures[i], examples, randoms),
                        path_similarity(model, layer, n, pixels[i], examples, randoms),
                    )
                )

            def mean(values: list[float]) -> float:
                kept = [v for v in values if v == v]  # not nan
                return statistics.fmean(kept) if kept else float("nan")

            pic = mean([mean(t.picture) for t, _ in rows])
            pix = mean([mean(p.picture) for _, p in rows])
            nat = mean([mean(t.natural) for t, _ in rows])
            ran = mean([mean(t.random) for t, _ in rows])
            s_pic = mean([t.overall for t, _ in rows])
            s_pix = mean([p.overall for _, p in rows])
            f_pic, f_pix = sum(t.flagged for t, _ in rows), sum(p.flagged for _, p in rows)
            print(
                f"{layer:24s} {pic:7.3f} {pix:7.3f} {nat:7.3f} {ran:7.3f} | {s_pic:13.2f} {s_pix:5.2f} | "
                f"{f_pic:8d} {f_pix:5d}   ({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
            records[layer] = [{"default": t.to_json(), "pixel": p.to_json()} for t, p in rows]
            lowest[layer] = [(n, t.overall, p.overall) for n, (t, p) in zip(units, rows, strict=True)]
        if args.out is not None:
            args.out.write_text(json.dumps(records, indent=1))
        print(f"\noverall score per unit (flagged below {FLAG_BELOW}): picture / pixel picture")
        for layer, values in lowest.items():
            print(f"{layer:24s} " + "  ".join(f"{n}: {a:.2f}/{b:.2f}" for n, a, b in values))


if __name__ == "__main__":
    main()
