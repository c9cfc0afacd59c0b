"""The path check calibrated on real photos: how often it flags natural images, default and plain-pixel pictures.

    python benchmarks/bench_trust.py [--sample ../shared/data/imagenet-sample] [--units 8] [--steps 128]
        [--layers _blocks.2._project_conv,...] [--calibrate-units 24] [--no-pictures] [--out trust.json]

On the ImageNet-trained EfficientNet-Lite0 and the ImageNet sample (800 photos, one per class), per layer,
:func:`kernelviz.units.trust.collection_check`: the photos cut in two by their sorted order; on the even half each
of ``--calibrate-units`` units (units 0 to ``--units``-1 first, the rest drawn) gets its top 8 examples and 32
random photos; every example scored as the picture against the unit's other 7 (leave-one-out natural controls)
sets the threshold that at most 5% of them fall below; the top 8 photos of each unit in the odd half, scored as
pictures, give the held-out false-positive rate; the random photos, scored as pictures, the AUROC (how well the
check tells natural from random images). Then the pictures of units 0 to ``--units``-1 at the defaults and the
article's plain pixel picture (pixel parameterization, no transforms): how many are flagged, and the specificity
(the share of unit pairs a, b where a's picture scores higher against a's examples than b's picture does).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import kernelviz
from kernelviz.units.scan import scan_units
from kernelviz.units.trust import MIN_AUROC, collection_check
from kernelviz.zoo import efficientnet_lite0

sys.path.insert(0, str(Path(__file__).parent))
from bench_units import sample_folder

LAYERS = "_blocks.2._project_conv,_blocks.5._project_conv,_blocks.9._project_conv,_blocks.13._project_conv,_swish#2"
SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet-sample"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sample", type=Path, default=SAMPLE)
    parser.add_argument("--units", type=int, default=8)
    parser.add_argument("--calibrate-units", type=int, default=24)
    parser.add_argument("--layers", default=LAYERS)
    parser.add_argument("--steps", type=int, default=kernelviz.DEFAULTS.steps)
    parser.add_argument("--no-pictures", action="store_true", help="only the calibration")
    parser.add_argument("--out", type=Path, default=None, help="also write every picture's Trust record as JSON")
    args = parser.parse_args()
    model = efficientnet_lite0()
    layers = args.layers.split(",")
    units = list(range(args.units))
    records: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = sample_folder(args.sample, Path(tmp))
        start = time.perf_counter()
        scan = scan_units(model, folder, layers, k=1)
        print(f"EfficientNet-Lite0, {len(scan.files)} ImageNet photos scanned in {time.perf_counter() - start:.0f} s")
        print(
            "| layer | AUROC natural vs random | threshold | natural controls flagged | held-out natural flagged "
            "| default pictures flagged | pixel pictures flagged | specificity: default | pixel |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for layer in layers:
            start = time.perf_counter()
            check = collection_check(model, layer, units, scan, calibrate_units=args.calibrate_units)
            cal = check.calibration
            assert cal is not None
            row = [
                f"`{layer}`",
                f"{cal.auroc:.2f}{'' if cal.tells_apart else ' (weak: below ' + str(MIN_AUROC) + ')'}",
                f"{cal.threshold:.2f}",
                f"{cal.flagged:.1%} of {cal.controls}",
                f"{cal.held_out_flagged:.1%} of {cal.held_out}" if cal.held_out_flagged is not None else "-",
            ]
            records[layer] = {"calibration": cal.to_json()}
            if not args.no_pictures:
                kinds = {
                    "default": kernelviz.layer_grid(model, layer, units, steps=args.steps, batch_size=8).images,
                    "pixel": kernelviz.layer_grid(
                        model, layer, units, steps=args.steps, batch_size=8, param="pixel", transforms=None
                    ).images,
                }
                for kind, images in kinds.items():
                    trusts = [check.check(n, images[i]) for i, n in enumerate(units)]
                    scored = [t for t in trusts if t.scored]
                    flagged = sum(t.flagged for t in scored)
                    median = statistics.median([t.overall for t in scored]) if scored else float("nan")
                    row.append(f"{flagged} / {len(scored)} (median score {median:.2f})")
                    records[layer][kind] = [t.to_json() for t in trusts]
                for images in kinds.values():
                    row.append(f"{check.specificity({n: images[i] for i, n in enumerate(units)}):.2f}")
            print("| " + " | ".join(row) + " |", f"({time.perf_counter() - start:.0f} s)", flush=True)
    if args.out is not None:
        args.out.write_text(json.dumps(records, indent=1))


if __name__ == "__main__":
    main()
