"""Time to find and render a layer's concepts: ``kernelviz concepts`` end to end, stage by stage.

    python benchmarks/bench_concepts.py [--images 1000] [-k 10] [--layer _swish#2] [--steps 192]

On the ImageNet-trained EfficientNet-Lite0 (offline), over a collection of 320 x 240 JPEGs cut from the bundled
photos (:func:`kernelviz.zoo.photo_collection`, made once under ``--cache``), one process: the job that
``kernelviz concepts`` runs (:func:`kernelviz.jobs.concepts.export_concepts`), timed per stage from its progress
callbacks — sampling the activation vectors (one forward per image to the layer), the NMF fit (scikit-learn), the
scan of the codes (a second forward per image), the importance (forward and backward on up to 128 images), the
pictures (the optimizer's defaults) and the writing (patch crops, figures, records). Also prints the forward
alone over the same images (decoded in memory) as the floor the two passes are measured against.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

import kernelviz
from kernelviz.core.progress import Progress
from kernelviz.jobs.concepts import export_concepts
from kernelviz.zoo import efficientnet_lite0, photo_collection


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--layer", default="_swish#2")
    parser.add_argument("--steps", type=int, default=kernelviz.DEFAULTS.steps)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "kernelviz-bench-concepts")
    args = parser.parse_args()

    folder = photo_collection(args.cache, args.images)
    files = sorted(folder.glob("*.jpg"))[: args.images]
    model = efficientnet_lite0()
    meta = kernelviz.model_meta(model)
    print(
        f"EfficientNet-Lite0 {args.layer}, K = {args.k}, {len(files)} images of 320x240 (JPEG); "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )

    marks: dict[str, list[float]] = {}

    def stage(p: Progress) -> None:  # each stage's first and last reports: its time
        marks.setdefault(p.stage, [time.perf_counter()]).append(time.perf_counter())

    with tempfile.TemporaryDirectory() as out:
        listing = Path(out) / "files.txt"
        listing.write_text("\n".join(map(str, files)))
        start = time.perf_counter()
        report = export_concepts(
            model,
            args.layer,
            listing,
            args.k,
            Path(out) / "concepts",
            kernelviz.DEFAULTS.with_(steps=args.steps),
            progress=stage,
        )
        end = time.perf_counter()

    sampling, coding, importance, pictures = (marks[s] for s in ("sampling", "coding", "importance", "pictures"))
    rows = [
        ("sampling (forward to the layer)", sampling[-1] - start),
        ("NMF fit", coding[0] - sampling[-1]),
        ("scan of the codes (forward)", coding[-1] - coding[0]),
        ("importance (forward + backward)", importance[-1] - importance[0]),
        (f"pictures ({args.k} x {args.steps} steps)", pictures[-1] - pictures[0]),
        ("patches, figures, records", end - pictures[-1]),
    ]
    for name, seconds in rows:
        print(f"  {name:36s} {seconds:7.1f} s")
    print(f"  {'total':36s} {end - start:7.1f} s")
    c = report.concepts
    print(f"  {c.samples} vectors of {c.directions.shape[1]} channels, reconstruction error {100 * c.error:.1f}%")

    x = torch.stack([kernelviz.load_image(f, meta.input_size) for f in files[:256]])
    t = time.perf_counter()
    for i in range(0, len(x), 8):
        kernelviz.activations(model, meta.normalize(x[i : i + 8]), args.layer)
    floor = (time.perf_counter() - t) / len(x) * len(files)
    print(f"  forward alone (decoded, {len(files)} images, from 256): {floor:.1f} s per pass")


if __name__ == "__main__":
    main()
