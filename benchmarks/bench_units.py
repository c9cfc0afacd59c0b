"""What each unit is, measured: labels on real photos, and the cost of the statistics at dataset scale.

    python benchmarks/bench_units.py labels [--sample ../shared/data/imagenet-sample] [--out /tmp/kernelviz-units]
    python benchmarks/bench_units.py speed [--model resnet50] [--images 800] [--collection photos|sample]
    python benchmarks/bench_units.py scale [--images 50000] [--units 26560] [--block 256]

**labels**: EfficientNet-Lite0 (ImageNet-trained, offline) scans the ImageNet sample (800 photos, one per class, as
an ``ImageFolder`` of symlinks named ``wnid_name``) through every convolution, its last activation (``_swish#2``)
and its logits (``_fc``), writing ``examples.json`` and ``units.json`` under ``--out`` (open the site there to look
at the units). Then:

- the logits: per present class, whether its own logit's 5 best class labels (one image per class: labels of one
  image allowed here) hold the class, and its rank; whether the dog classes' logits (ImageNet 151-268) get the
  group *dog* among their labels, and a dog group (dog or a group of dogs only) as their best group;
- per layer: how many units have a label (a WordNet group of 2 or more photos: the classes have one) with the chance
  test (:data:`~kernelviz.units.statistics.ALPHA`) and by the AUC floor alone, each against the same count when the
  photos' classes are shuffled (the labels a unit gets by chance).

**speed**: the scan of a collection (``--collection photos``: JPEGs cut from the bundled photos, as ``bench_scan.py``;
``sample``: the ImageNet sample, larger JPEGs) through every convolution of ``--model`` (``weights=None``: throughput
does not depend on the weights), with and without the per-image scores (``scan_units(scores=False)``), against the
model's forward alone on decoded images in memory; then the statistics and labels of every layer, their time and this
process's peak resident memory.

**scale**: one block of units of a 50,000-image collection, of random scores with ties, against the 1000 classes
and 860 groups of ImageNet (50 images per class): the AUCs' time and the peak memory of a process doing only
that, and the time projected for ``--units`` units (ResNet-50's convolutions: 26,560).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision

import kernelviz
from kernelviz.core.layers import layer_channels
from kernelviz.data.collection import collection
from kernelviz.data.imagenet import imagenet
from kernelviz.data.labels import LabelSet, collection_labels
from kernelviz.data.stream import default_batch_size
from kernelviz.files.images import load_image
from kernelviz.sets.examples import scan_to_atlas
from kernelviz.units.statistics import ALPHA, LABEL_FLOOR, label_aucs, unit_statistics

SAMPLE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "imagenet-sample"
DOG = "n02084071"


def sample_folder(sample: Path, root: Path) -> Path:
    """The sample as an ``ImageFolder`` of symlinks, one ``wnid_name`` folder per photo (made once)."""
    if not sample.is_dir():
        sys.exit(f"no ImageNet sample at {sample}: give --sample")
    folder = root / "images"
    for photo in sorted(sample.glob("*.JPEG")):
        (folder / photo.stem).mkdir(parents=True, exist_ok=True)
        link = folder / photo.stem / photo.name
        if not link.exists():
            link.symlink_to(photo.resolve())
    return folder


def peak_mib() -> float:
    """This process's peak resident memory so far (MiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def shuffled(labels: LabelSet, n: int, seed: int = 0) -> LabelSet:
    """``labels`` on a random permutation of the ``n`` images (the same label sizes, no link to the pictures)."""
    perm = np.random.default_rng(seed).permutation(n)
    return LabelSet(labels.ids, labels.names, labels.kinds, [sorted(int(perm[i]) for i in m) for m in labels.members])


def dog_groups() -> set[str]:
    """The WordNet ids of *dog* and of the groups all of whose ImageNet classes are dogs."""
    table = imagenet()
    dog = next(g for g, (wnid, _) in enumerate(table.groups) if wnid == DOG)
    under: dict[int, set[int]] = {}
    for c, above in enumerate(table.above):
        for g in above:
            under.setdefault(g, set()).add(c)
    return {table.groups[g][0] for g, classes in under.items() if all(dog in table.above[c] for c in classes)}


def labels_bench(args: argparse.Namespace) -> None:
    images = sample_folder(args.sample, args.out)
    model = kernelviz.load_model("kernelviz.zoo:efficientnet_lite0")
    convs = [r.name for r in kernelviz.list_layers(model, 224) if r.type.startswith("Conv")]
    layers = [*convs, "_swish#2", "_fc"]
    start = time.perf_counter()
    report = scan_to_atlas(model, args.out / "efficientnet_lite0", images, layers, workers=args.workers)
    print(
        f"scan and units.json of {len(layers)} layers over {report.scan.scanned} photos: "
        f"{time.perf_counter() - start:.0f} s, peak resident {peak_mib():.0f} MiB"
    )
    scan = report.scan
    labels = collection_labels(collection(images))
    table = imagenet()
    assert scan.classes is not None

    # the logits: own class among the 5 best class labels (labels of one image allowed: one photo per class)
    start = time.perf_counter()
    fc = unit_statistics(scan, "_fc", labels, label_images=1, alpha=None)  # one photo per class: no test can pass
    print(f"statistics of _fc (1000 units x {len(labels)} labels): {time.perf_counter() - start:.1f} s")
    present = {table.index(folder.split("_")[0]): folder for folder in scan.classes}
    among, first, dogs, dog_listed, dog_best = 0, 0, 0, 0, 0
    ranks = []
    dog_like = dog_groups()
    for unit in fc.units:
        if unit.unit not in present:
            continue
        classes = [label.id for label in unit.labels if label.kind == "class"]
        own = present[unit.unit]
        among += own in classes[:5]
        first += bool(classes) and classes[0] == own
        aucs = label_aucs(
            scan.scores.read("_fc", slice(unit.unit, unit.unit + 1))[scan.read_rows()],
            [torch.tensor(labels.members[labels.ids.index(own)])],
        )
        ranks.append(float(aucs[0, 0]))
        if 151 <= unit.unit <= 268:
            dogs += 1
            groups = [label.id for label in unit.labels if label.kind == "group"]
            dog_listed += DOG in groups
            dog_best += bool(groups) and groups[0] in dog_like
    n = len(present)
    print(
        f"\n_fc over {n} present classes: own class among its 5 best class labels {among}/{n} ({among / n:.1%}), "
        f"its best class label {first}/{n} ({first / n:.1%}); own class's AUC median {np.median(ranks):.4f}, "
        f"5th percentile {np.percentile(ranks, 5):.4f}"
    )
    print(
        f"dog classes' logits ({dogs} present): 'dog' among their group labels {dog_listed}/{dogs} "
        f"({dog_listed / max(1, dogs):.1%}); best group label a dog group {dog_best}/{dogs} "
        f"({dog_best / max(1, dogs):.1%})\n"
    )

    # per layer: units with a label, with the chance test and without it, against shuffled classes
    null = shuffled(labels, len(scan.files))
    print(
        f"| layer | units | labelled (AUC >= {LABEL_FLOOR}, chance test) | same, classes shuffled "
        f"| AUC >= {LABEL_FLOOR} alone | same, classes shuffled | dead | dense | most frequent best label |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for layer in layers:
        counts = []
        for alpha in (ALPHA, None):
            for given in (labels, null):
                found = unit_statistics(scan, layer, given, alpha=alpha)
                counts.append(sum(u.label is not None for u in found.units))
                if alpha is not None and given is labels:
                    tested = found
        common: dict[str, int] = {}
        for u in tested.units:
            if u.label is not None:
                common[u.label.name] = common.get(u.label.name, 0) + 1
        top = max(common.items(), key=lambda item: item[1]) if common else ("-", 0)
        n = len(tested.units)
        print(
            f"| {layer} | {n} | {counts[0]} ({counts[0] / n:.0%}) | {counts[1]} | {counts[2]} ({counts[2] / n:.0%}) "
            f"| {counts[3]} | {sum(u.dead for u in tested.units)} | {sum(u.dense for u in tested.units)} "
            f"| {top[0]} ({top[1]}) |",
            flush=True,
        )
    print(
        f"\nlook at them: kernelviz units {args.out} --label car; kernelviz serve kernelviz.zoo:efficientnet_lite0 "
        f"--atlas {args.out} --images {images} --quick"
    )


def speed_bench(args: argparse.Namespace) -> None:
    if args.collection == "sample":
        images: Path = sample_folder(args.sample, args.out)
        what = "the ImageNet sample (JPEGs of about 500 x 375)"
    else:
        from kernelviz.zoo import photo_collection

        images = photo_collection(args.out / "photos", args.images)
        what = "bundled photos (JPEGs of 320 x 240, as benchmarks/bench_scan.py)"
    found = collection(images)
    files = found.files[: args.images]
    model = kernelviz.load_model(args.model, weights="random")
    layers = [r.name for r in kernelviz.list_layers(model, 224) if r.type.startswith("Conv")]
    meta = kernelviz.model_meta(model)
    b = args.batch_size or default_batch_size(torch.device("cpu"))
    x = meta.normalize(torch.stack([load_image(p, 224) for p in files[:128]]))

    def forward_only() -> float:
        with torch.no_grad():
            model.eval()(x[:b])  # warm-up
            start = time.perf_counter()
            for i in range(0, len(x), b):
                model(x[i : i + b])
            return len(x) / (time.perf_counter() - start)

    forward = max(forward_only() for _ in range(2))
    units = sum(layer_channels(model, layer, 224) for layer in layers)
    print(
        f"{args.model}, {len(layers)} convolutions, {units} units; {len(files)} images of {what}; batch {b}; "
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, {torch.get_num_threads()} threads"
    )
    print(f"forward only (decoded images in memory), first: {forward:.2f} img/s")
    rates: dict[bool, list[float]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as tmp:
        for turn, scores in enumerate((False, True, False, True)):  # twice each, interleaved: the noise shows
            start = time.perf_counter()
            scan = kernelviz.scan_units(
                model,
                files,
                layers,
                batch_size=b,
                workers=args.workers,
                scores=scores,
                checkpoint=Path(tmp) / f"scores-{scores}-{turn}",
            )
            rates[scores].append(len(files) / (time.perf_counter() - start))
            forward = max(forward, forward_only())  # the limit measured between the scans too: the best of all
            print(
                f"scan {'with' if scores else 'without'} per-image scores: {rates[scores][-1]:.2f} img/s "
                f"({rates[scores][-1] / forward:.0%} of forward only), peak resident {peak_mib():.0f} MiB",
                flush=True,
            )
        on_disk = sum(f.stat().st_size for f in Path(tmp).rglob("*.f32"))
        print(f"scores on disk: {on_disk / 2**20:.0f} MiB ({units} units x {len(files)} images x 4 bytes)")
        # labels: the sample's classes and groups; elsewhere, 10 random labels of a tenth of the images each
        labels = collection_labels(collection(images))
        if not labels.ids:
            rng = random.Random(0)
            labels = LabelSet(
                [f"l{j}" for j in range(10)],
                [f"l{j}" for j in range(10)],
                ["label"] * 10,
                [sorted(rng.sample(range(len(files)), len(files) // 10)) for _ in range(10)],
            )
        start = time.perf_counter()
        labelled = 0
        for layer in layers:
            found = unit_statistics(scan, layer, labels, label_images=1)
            labelled += sum(u.label is not None for u in found.units)
        stats = time.perf_counter() - start
    print(
        f"forward only, the best of {2 + len(rates[True]) + len(rates[False])} runs: {forward:.2f} img/s; scan without "
        f"scores, best: {max(rates[False]):.2f} ({max(rates[False]) / forward:.0%}), with: {max(rates[True]):.2f} "
        f"({max(rates[True]) / forward:.0%})"
    )
    print(
        f"statistics and labels of every layer ({units} units x {len(labels)} labels): {stats:.1f} s "
        f"({len(files) / stats:.0f} img/s of scan equivalent; scan + statistics "
        f"{len(files) / (len(files) / max(rates[True]) + stats):.2f} img/s, "
        f"{len(files) / (len(files) / max(rates[True]) + stats) / forward:.0%} of forward only); "
        f"peak resident {peak_mib():.0f} MiB"
    )


def scale_bench(args: argparse.Namespace) -> None:
    if args.child:
        n, c = args.images, args.block
        gen = torch.Generator().manual_seed(0)
        scores = (torch.randn(n, c, generator=gen) * 4).round() / 4  # many ties, as ReLU layers have
        scores = scores.clamp(min=0).float()
        classes = torch.arange(n) % 1000
        members = [torch.nonzero(classes == j).flatten() for j in range(1000)]
        table = imagenet()
        groups: dict[int, list[int]] = {}
        for j, above in enumerate(table.above):
            for g in above:
                groups.setdefault(g, []).append(j)
        members += [torch.nonzero(torch.isin(classes, torch.tensor(cl))).flatten() for cl in groups.values()]
        before = peak_mib()
        start = time.perf_counter()
        aucs = label_aucs(scores, members)
        took = time.perf_counter() - start
        print(
            json.dumps(
                {
                    "seconds": took,
                    "labels": len(members),
                    "peak": peak_mib(),
                    "before": before,
                    "finite": bool(torch.isfinite(aucs[[0 < len(m) < n for m in members]]).all()),
                }
            )
        )
        return
    run = subprocess.run(
        [sys.executable, __file__, "scale", "--child", "--images", str(args.images), "--block", str(args.block)],
        capture_output=True,
        text=True,
        check=True,
    )
    r = json.loads(run.stdout.strip().splitlines()[-1])
    blocks = -(-args.units // args.block)
    print(
        f"{args.images} images x {args.block} units x {r['labels']} labels: {r['seconds']:.1f} s; peak resident "
        f"{r['peak']:.0f} MiB ({r['before']:.0f} before: inputs and labels); {args.units} units: {blocks} blocks, "
        f"{blocks * r['seconds'] / 60:.1f} min; every AUC finite (but those of labels of every image: nan): "
        f"{r['finite']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["labels", "speed", "scale"])
    parser.add_argument("--sample", type=Path, default=SAMPLE)
    parser.add_argument("--out", type=Path, default=Path("/tmp/kernelviz-units"))
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--collection", choices=["photos", "sample"], default="photos", help="speed: which images")
    parser.add_argument("--images", type=int, default=None)
    parser.add_argument("--units", type=int, default=26_560)
    parser.add_argument("--block", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.what == "labels":
        labels_bench(args)
    elif args.what == "speed":
        args.images = args.images or 800
        speed_bench(args)
    else:
        args.images = args.images or 50_000
        scale_bench(args)


if __name__ == "__main__":
    main()
