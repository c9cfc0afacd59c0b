"""Feature accentuation: where to keep the picture close to its photo, and how strongly.

    python benchmarks/bench_accentuate.py [--layer _blocks.9._project_conv]

Hamblin et al. (2024) keep an accentuation close to its seed photo by a proximity term on the activations of a
layer *below* the unit. On the ImageNet-trained EfficientNet-Lite0 and 12 (photo, unit) pairs (4 colour photos x
the 6th-8th units of ``--layer`` each drives most, as tests/test_real.py), this prints per regularization (the
layer of the proximity term and its weight; weight 0: none) the unit's activation on the accentuation over that
on the photo (min / median / max) and the RMS distance from the photo (pixels in [0, 1]), at the accentuation's
defaults (``kernelviz.optvis.settings.ACCENTUATE``).
"""

from __future__ import annotations

import argparse
import statistics
import time

from kernelviz.optvis.photo import accentuate, photo_activation
from kernelviz.optvis.settings import ACCENTUATE
from kernelviz.zoo import COLOR_PHOTOS, efficientnet_lite0, photo

REGULARIZERS = [(None, 0.0), (None, 1.0), ("_blocks.5", 1.0), ("_blocks.2", 1.0), ("_blocks.5", 4.0)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layer", default="_blocks.9._project_conv")
    args = parser.parse_args()
    model = efficientnet_lite0()
    pairs = []
    for name in COLOR_PHOTOS[:4]:
        image = photo(name, 224)
        on_photo = photo_activation(model, args.layer, image).flatten(1).mean(1)
        pairs.append((name, image, on_photo, [int(i) for i in on_photo.argsort(descending=True)[5:8]]))
    print(f"EfficientNet-Lite0 {args.layer}: {sum(len(p[3]) for p in pairs)} pairs, {ACCENTUATE.steps} steps")
    print("proximity at        weight  ratio min / median / max   RMS min / median / max   seconds")
    for reg_layer, weight in REGULARIZERS:
        ratios, distances = [], []
        start = time.perf_counter()
        for _, image, on_photo, units in pairs:
            result = accentuate(
                model, args.layer, units, image, reg_layer=reg_layer, weight=weight, settings=ACCENTUATE
            )
            for i, n in enumerate(units):
                reached = photo_activation(model, args.layer, result.images[i]).flatten(1).mean(1)[n]
                ratios.append(float(reached / on_photo[n]))
                distances.append(float(((result.images[i] - image) ** 2).mean().sqrt()))
        where = reg_layer or f"{args.layer} (own)"
        print(
            f"{where:24s} {weight:4.1f}  {min(ratios):5.2f} / {statistics.median(ratios):5.2f} / {max(ratios):5.2f}"
            f"       {min(distances):.3f} / {statistics.median(distances):.3f} / {max(distances):.3f}"
            f"   {time.perf_counter() - start:6.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
