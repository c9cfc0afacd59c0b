"""Filters per second for figure sets: a batched layer grid vs one filter at a time, 1 vs 2 processes.

    python benchmarks/bench_atlas.py                        # conv3_2, 8 filters, 128 px, 32 steps
    python benchmarks/bench_atlas.py --size 224 --steps 64

The grid comparison runs in this process, interleaved over repetitions. The process comparison
times the ``kernelviz atlas`` command itself: one process using every core, against two shard
processes (``--shard 0/2`` and ``--shard 1/2``) started together with the cores split between them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import torchvision

from kernelviz import layer_grid
from kernelviz.core.models import IMAGENET_MEAN, IMAGENET_STD, set_model_meta


def grid_rate(model, layer: str, filters: list[int], batch: int, size: int, steps: int) -> float:
    start = time.perf_counter()
    layer_grid(model, layer, filters, batch_size=batch, size=size, steps=steps)
    return len(filters) / (time.perf_counter() - start)


def atlas_rate(layer: str, count: int, size: int, steps: int, processes: int) -> float:
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as out:
        base = [
            sys.executable,
            "-m",
            "kernelviz",
            "atlas",
            "vgg16",
            "-o",
            out,
            "--layers",
            layer,
            "--filters",
            str(count),
            "--weights",
            "random",
            "--size",
            str(size),
            "--steps",
            str(steps),
            "--quiet",
            "--device",
            "cpu",
            "--batch-size",
            "1",
        ]
        threads = str(max(1, cores // processes))
        env = {**os.environ, "OMP_NUM_THREADS": threads, "PYTHONWARNINGS": "ignore"}
        start = time.perf_counter()
        shards = [[*base, "--shard", f"{i}/{processes}"] for i in range(processes)] if processes > 1 else [base]
        procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL) for cmd in shards]
        if any(p.wait() != 0 for p in procs):
            raise RuntimeError("an atlas process failed")
        return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layer", default="conv3_2")
    parser.add_argument("--filters", type=int, default=8)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = set_model_meta(torchvision.models.vgg16(weights=None).eval(), mean=IMAGENET_MEAN, std=IMAGENET_STD)
    filters = list(range(args.filters))
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores; vgg16(weights=None) "
        f"{args.layer}, {args.filters} filters, {args.size} px, {args.steps} steps, {args.reps} repetitions"
    )
    grid_rate(model, args.layer, filters[:2], 2, args.size, 2)  # warm-up
    rates: dict[str, list[float]] = {"one at a time": [], f"batch of {args.filters}": []}
    for _ in range(args.reps):
        rates["one at a time"].append(grid_rate(model, args.layer, filters, 1, args.size, args.steps))
        rates[f"batch of {args.filters}"].append(
            grid_rate(model, args.layer, filters, args.filters, args.size, args.steps)
        )
    procs: dict[str, list[float]] = {"1 process": [], "2 processes": []}
    for _ in range(args.reps):
        procs["1 process"].append(atlas_rate(args.layer, args.filters, args.size, args.steps, 1))
        procs["2 processes"].append(atlas_rate(args.layer, args.filters, args.size, args.steps, 2))
    base = statistics.median(rates["one at a time"])
    print("\nlayer grid (one process):")
    for name, values in rates.items():
        print(f"  {name:<16} {statistics.median(values):6.3f} filters/s  ({statistics.median(values) / base:.2f}x)")
    base = statistics.median(procs["1 process"])
    print("kernelviz atlas command (process start and model load included):")
    for name, values in procs.items():
        print(f"  {name:<16} {statistics.median(values):6.3f} filters/s  ({statistics.median(values) / base:.2f}x)")


if __name__ == "__main__":
    main()
