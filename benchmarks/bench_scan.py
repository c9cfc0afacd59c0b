"""The dataset scan against its limit and against the code it replaced.

    python benchmarks/bench_scan.py [--images 2048] [--models resnet50,vgg16] [--batch-size 8] [--old-images 96]

Makes (once, cached under ``--cache``) a collection of 320 x 240 JPEGs from scikit-image's bundled photos by random
crops, scales and flips, so decoding and resizing cost what they do on a real collection. Then, per model
(``weights=None``: throughput does not depend on the weights), with every convolution asked, in one process:

- **limit**: the model's forward alone, in eval mode without gradients, on images already decoded and
  normalized in memory (the first ``--limit-images`` of the collection), at the same batch size, and the best
  of batch sizes 4, 8, 16 and 32;
- **scan**: ``kernelviz.scan_units`` over the whole collection (decoding in DataLoader workers, every
  convolution's top/mean/bottom rankings), with the process's resident memory at each quarter of the scan;
- **old**: the code before the scan (one pass per layer, decoding in the main thread, a Python heap push per
  image and filter; reproduced below from kernelviz 0.x), on the first ``--old-images`` images, every layer.

Prints images/s of each, the scan as a share of the limit, the scan over the old code, the resident memory,
and the projection for 50,000 images.
"""

from __future__ import annotations

import argparse
import heapq
import time
from pathlib import Path

import torch
import torchvision

import kernelviz
from kernelviz.core.capture import activations
from kernelviz.core.layers import layer_channels
from kernelviz.core.progress import Progress
from kernelviz.data.stream import default_batch_size
from kernelviz.files.images import load_image
from kernelviz.zoo import COLOR_PHOTOS, photo_collection


def make_collection(folder: Path, count: int, seed: int = 0) -> Path:
    """``count`` JPEGs of 320 x 240 cut from the bundled photos (:func:`kernelviz.zoo.photo_collection`), made once."""
    return photo_collection(folder, count, seed=seed)


def resident_mib() -> float:
    """This process's resident memory now (MiB)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def old_find_examples(model, layer, filters, paths, k=9, batch_size=16, size=224):
    """The scan of one layer before the scan of every layer (one pass per layer, a heap push per image and filter)."""
    meta = kernelviz.model_meta(model)
    heaps = {f: [] for f in filters}
    counter = 0
    index = torch.tensor(list(filters))
    for i in range(0, len(paths), batch_size):
        batch_paths = paths[i : i + batch_size]
        batch = torch.stack([load_image(p, size) for p in batch_paths])
        act = activations(model, meta.normalize(batch), layer)[layer].float().cpu()
        sel = act[:, index].flatten(2)
        values, where = sel.max(2)
        width = act.shape[-1]
        for b, path in enumerate(batch_paths):
            for j, f in enumerate(filters):
                item = (float(values[b, j]), -counter, path, divmod(int(where[b, j]), width))
                if len(heaps[f]) < k:
                    heapq.heappush(heaps[f], item)
                else:
                    heapq.heappushpop(heaps[f], item)
            counter += 1
    return heaps


def conv_layers(model: torch.nn.Module) -> list[str]:
    return [r.name for r in kernelviz.list_layers(model, 224) if r.type.startswith("Conv")]


def bench(name: str, folder: Path, args: argparse.Namespace) -> dict[str, float]:
    model = kernelviz.load_model(name, weights="random")
    layers = conv_layers(model)
    files = sorted(folder.glob("*.jpg"))[: args.images]
    meta = kernelviz.model_meta(model)
    b = args.batch_size or default_batch_size(torch.device("cpu"))

    # the limit: the forward alone on decoded, normalized images in memory, at the scan's batch size and at the
    # best of several
    x = meta.normalize(torch.stack([load_image(p, 224) for p in files[: args.limit_images]]))

    def forward_only(batch: int, count: int) -> float:
        with torch.no_grad():
            model.eval()(x[:batch])  # warm-up
            start = time.perf_counter()
            for i in range(0, count, batch):
                model(x[i : i + batch])
            return count / (time.perf_counter() - start)

    limit = forward_only(b, len(x))
    best = max(forward_only(batch, len(x) // 2) for batch in (4, 8, 16, 32))

    memory: list[float] = []
    quarters = [len(files) * q // 4 for q in (1, 2, 3, 4)]

    def progress(p: Progress) -> None:
        if quarters and p.done >= quarters[0]:
            memory.append(resident_mib())
            quarters.pop(0)

    start = time.perf_counter()
    kernelviz.scan_units(model, files, layers, batch_size=b, workers=args.workers, progress=progress)
    scan = len(files) / (time.perf_counter() - start)

    old_files = files[: args.old_images]
    start = time.perf_counter()
    for layer in layers:
        units = layer_channels(model, layer, 224)
        old_find_examples(model, layer, list(range(units)), old_files, batch_size=16)
    old = len(old_files) / (time.perf_counter() - start)
    return {
        "layers": len(layers),
        "batch": b,
        "limit": limit,
        "best": best,
        "scan": scan,
        "old": old,
        "share": scan / limit,
        "share_best": scan / best,
        "speedup": scan / old,
        "memory": memory,
        "hours_50k": 50_000 / scan / 3600,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=2048, help="images in the scan")
    parser.add_argument("--limit-images", type=int, default=128, help="images for the forward-only limit")
    parser.add_argument("--old-images", type=int, default=96, help="images for the old one-layer-at-a-time code")
    parser.add_argument("--models", default="resnet50,vgg16")
    parser.add_argument("--batch-size", type=int, default=None, help="default: kernelviz's, 8 on a CPU")
    parser.add_argument("--workers", type=int, default=None, help="default: kernelviz's default_workers()")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/kernelviz-bench-scan"))
    args = parser.parse_args()
    folder = make_collection(args.cache, args.images)
    print(
        f"{args.images} images of 320x240 (JPEG) from {len(COLOR_PHOTOS)} bundled photos; "
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, {torch.get_num_threads()} threads"
    )
    print(
        "| model | conv layers | batch | forward only (img/s) | best forward only, batch 4-32 | scan (img/s) "
        "| scan / forward only | scan / best | old code (img/s) | scan / old | resident MiB at 1/4, 1/2, 3/4, end "
        "| 50,000 images |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        r = bench(name, folder, args)
        mem = ", ".join(f"{m:.0f}" for m in r["memory"])
        print(
            f"| {name} | {r['layers']} | {r['batch']} | {r['limit']:.2f} | {r['best']:.2f} | {r['scan']:.2f} "
            f"| {r['share']:.0%} | {r['share_best']:.0%} | {r['old']:.3f} | {r['speedup']:.1f}x | {mem} "
            f"| {r['hours_50k']:.1f} h |",
            flush=True,
        )


if __name__ == "__main__":
    main()
