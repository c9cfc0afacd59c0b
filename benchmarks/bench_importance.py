"""What each unit matters for: the first-order estimate (one pass for every unit) against exact ablation (one pass
per unit).

    python benchmarks/bench_importance.py [--sample ../shared/data/imagenet-sample] [--units 12] [--layer _swish#2]

EfficientNet-Lite0 (ImageNet-trained, offline) over the ImageNet sample (800 photos, one per class: a class's value
is its photo's). :func:`kernelviz.units.importance.unit_importance` estimates, for every unit of the layer, the drop
of each photo's probability of its own class when the unit is zeroed (gradient x activation); for ``--units`` units
(half drawn at random, half among those the estimate says carry most, seed 0)
:func:`kernelviz.units.importance.exact_drops` zeroes each one alone over the 800 photos. Printed per unit: the
Spearman rank correlation of estimated and exact drops over the photos, how many of the exact top 5 photos the
estimate's top 5 holds, the largest exact drop; then the medians, and the time of the estimate against one exact
pass.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).parent))
from bench_units import SAMPLE, sample_folder

import kernelviz
from kernelviz.units.importance import exact_drops, unit_importance


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sample", type=Path, default=SAMPLE)
    parser.add_argument("--units", type=int, default=12)
    parser.add_argument("--layer", default="_swish#2")
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()
    model = kernelviz.load_model("kernelviz.zoo:efficientnet_lite0")
    with tempfile.TemporaryDirectory() as tmp:
        folder = sample_folder(args.sample, Path(tmp))
        start = time.perf_counter()
        found = unit_importance(model, args.layer, folder, workers=args.workers)
        estimate_s = time.perf_counter() - start
        units_all = found.per_image.shape[1]
        strongest = found.per_image.nanmean(0).argsort(descending=True).tolist()
        rng = random.Random(0)
        top = strongest[: args.units // 2]
        drawn = rng.sample([u for u in range(units_all) if u not in top], args.units - len(top))
        chosen = top + drawn
        start = time.perf_counter()
        exact = exact_drops(model, args.layer, chosen, folder, workers=args.workers)
        exact_s = (time.perf_counter() - start) / len(chosen)
    print(f"EfficientNet-Lite0 {args.layer} ({units_all} units), {len(found.per_image)} ImageNet photos")
    print(
        "| unit | chosen | Spearman (estimate vs exact, over the photos) | exact top 5 in the estimate's "
        "| largest exact drop |"
    )
    print("|---|---|---|---|---|")
    rhos, overlaps = [], []
    for u in chosen:
        est, ex = found.per_image[:, u], exact[u]
        keep = ~(est.isnan() | ex.isnan())
        rho = float(spearmanr(est[keep].numpy(), ex[keep].numpy()).statistic)
        both = len(
            set(est[keep].argsort(descending=True)[:5].tolist()) & set(ex[keep].argsort(descending=True)[:5].tolist())
        )
        rhos.append(rho)
        overlaps.append(both)
        print(
            f"| {u} | {'carries most' if u in top else 'random'} | {rho:.2f} | {both} / 5 "
            f"| {float(ex[keep].max()):.3f} |"
        )
    print(
        f"\nmedian Spearman {statistics.median(rhos):.2f} (carries most: {statistics.median(rhos[: len(top)]):.2f}, "
        f"random: {statistics.median(rhos[len(top) :]):.2f}); median top-5 overlap {statistics.median(overlaps)} / 5"
    )
    print(
        f"estimate of all {units_all} units: {estimate_s:.0f} s; exact ablation: {exact_s:.0f} s per unit "
        f"({units_all * exact_s / 3600:.1f} h for every unit)"
    )


if __name__ == "__main__":
    main()
