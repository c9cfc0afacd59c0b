"""Bau et al.'s experiment (PNAS 2020) in our setting: switch off the units most selective for a group of classes,
and see the group's probability fall while the other classes keep theirs; as many random units as the control.

    python benchmarks/bench_ablation.py [--sample ../shared/data/imagenet-sample] [--ks 10,50,200]

EfficientNet-Lite0 (ImageNet-trained, offline) over the ImageNet sample (800 photos, one per class, an
``ImageFolder`` of symlinks). The photos are split in two by their sorted position: the even ones **choose** the
units, the odd ones **measure**. On the choosing half, the per-image maxima of ``_swish#2`` (its 1280 units, the
last feature map: the head's input is their spatial mean) give each unit's AUC for each WordNet group
(:func:`kernelviz.units.statistics.label_aucs`); for dog, bird, wheeled vehicle and insect, the k units of highest
AUC are zeroed (:func:`kernelviz.ablate`) on the measuring half, and so are k random units (seed 0) as the control.
Printed per group and k: the group's photos and their mean probability of the group before and after, their
accuracy (top-1 in the group), and the other photos' accuracy and mean probability of their own class.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_units import SAMPLE, sample_folder

import kernelviz
from kernelviz.data.collection import Collection, collection
from kernelviz.data.labels import collection_labels
from kernelviz.units.ablation import ablate
from kernelviz.units.statistics import label_aucs

GROUPS = {"n02084071": "dog", "n01503061": "bird", "n04576211": "wheeled vehicle", "n02159955": "insect"}
LAYER = "_swish#2"


def half(found: Collection, parity: int) -> Collection:
    """The photos of even (0) or odd (1) sorted position, with their classes."""
    assert found.labels is not None
    keep = [i for i in range(len(found.files)) if i % 2 == parity]
    return Collection([found.files[i] for i in keep], found.labels[keep], found.classes, found.source)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sample", type=Path, default=SAMPLE)
    parser.add_argument("--ks", default="10,50,200")
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()
    ks = [int(k) for k in args.ks.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        found = collection(sample_folder(args.sample, Path(tmp)))
        choose, measure = half(found, 0), half(found, 1)
        model = kernelviz.load_model("kernelviz.zoo:efficientnet_lite0")
        start = time.perf_counter()
        scan = kernelviz.scan_units(model, choose, [LAYER], k=1, workers=args.workers)
        rows = scan.read_rows()
        scores = scan.scores.read(LAYER)[rows]  # (400, 1280)
        labels = collection_labels(choose)
        members = [torch.tensor(labels.members[labels.ids.index(g)]) for g in GROUPS]
        aucs = label_aucs(scores, members)  # (4, 1280)
        print(f"units chosen on {len(choose.files)} photos ({time.perf_counter() - start:.0f} s); measured on "
              f"{len(measure.files)} others")  # fmt: skip
        units = scores.shape[1]
        random_units = {k: torch.randperm(units, generator=torch.Generator().manual_seed(0))[:k].tolist() for k in ks}
        print("| group | photos (measured) | k | units zeroed | group probability | group accuracy "
              "| other photos: accuracy | other photos: probability of their class |")  # fmt: skip
        print("|---|---|---|---|---|---|---|---|")
        own = own_outputs(measure)
        measured = collection_labels(measure)
        random_runs = {k: ablate(model, LAYER, random_units[k], measure, workers=args.workers) for k in ks}
        for g, (wnid, name) in enumerate(GROUPS.items()):
            for k in ks:
                chosen = aucs[g].argsort(descending=True)[:k].tolist()
                for kind, found_k in (("highest AUC", ablate(model, LAYER, chosen, measure, workers=args.workers)),
                                      ("random", random_runs[k])):  # fmt: skip
                    group = next(o for o in found_k.groups if o.id == wnid)
                    inside = torch.zeros(len(measure.files), dtype=torch.bool)
                    inside[torch.tensor(measured.members[measured.ids.index(wnid)])] = True
                    others = ~inside & (found_k.top1[0] >= 0)
                    hit = [float((found_k.top1[j][others] == own[others]).float().mean()) for j in (0, 1)]
                    prob = [float(found_k.own[j][others].mean()) for j in (0, 1)]
                    print(
                        f"| {name} | {group.images} | {k} | {kind} | {group.probability[0]:.3f} -> "
                        f"{group.probability[1]:.3f} | {group.accuracy[0]:.0%} -> {group.accuracy[1]:.0%} "
                        f"| {hit[0]:.0%} -> {hit[1]:.0%} | {prob[0]:.3f} -> {prob[1]:.3f} |",
                        flush=True,
                    )


def own_outputs(found: Collection) -> torch.Tensor:
    """``(N,)`` each photo's class as an ImageNet-1k output index."""
    from kernelviz.units.ablation import class_outputs

    assert found.labels is not None
    outputs, _ = class_outputs(found, 1000)
    return torch.tensor(outputs)[found.labels]


if __name__ == "__main__":
    main()
