"""How long a layer page of the explorer takes to fill: time to its first and its last picture.

    python benchmarks/bench_layer_page.py [--layer _blocks.9._project_conv] [--presets defaults,quick]

On the ImageNet-trained EfficientNet-Lite0, the explorer (no HTTP: what the page's request queues) asks for the
first page's filters (48) of ``--layer`` in a fresh atlas folder, once per preset (``kernelviz serve`` at its
defaults, and with ``--quick``), and prints the seconds from the request to each picture written: the first
(what a user waits for before anything shows), the 8th (the first batch), and the last; before them, as the
page asks for them, the quick previews (``kernelviz.optvis.settings.PREVIEW``), first and last. Then the user leaves:
once the page's first picture is in, a filter page of another layer (``--then``) is asked for, and the seconds
until its picture is written are printed, against the time of one batch (the queue serves the newest request
first, so it waits only for the batch running).
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import torch

import kernelviz
from kernelviz.optvis.settings import QUICK
from kernelviz.serve.explorer import Explorer
from kernelviz.zoo import efficientnet_lite0

PRESETS = {"defaults": kernelviz.DEFAULTS, "quick": QUICK}


def fill_page(
    model: torch.nn.Module, settings: kernelviz.OptimSettings, layer: str, count: int, previews_only: bool = False
) -> tuple[list[float], list[float], int]:
    """Seconds from asking for a layer page's ``count`` filters (as the page does: previews first) to each preview
    and to each picture written; the batch size. ``previews_only``: stop at the first picture."""
    with tempfile.TemporaryDirectory() as tmp:
        ex = Explorer(model, Path(tmp) / "efficientnet_lite0", settings=settings)
        times: list[float] = []
        previews: list[float] = []
        finished = threading.Event()
        start = time.perf_counter()

        def listen(event: dict) -> None:
            if event.get("type") == "preview":
                previews.append(time.perf_counter() - start)
            if event.get("type") == "done":
                times.append(time.perf_counter() - start)
                if len(times) == count or previews_only:
                    finished.set()

        ex.worker.subscribe(listen)
        ex.request_page(layer, list(range(count)))
        finished.wait()
        ex.worker.stop(wait=True)  # its running batch still holds hooks on the model
        return previews, times, int(ex.optim.batch_size or 0)


def leave_page(model: torch.nn.Module, settings: kernelviz.OptimSettings, layer: str, count: int, then: str) -> float:
    """Seconds from opening the filter page ``then`` (``LAYER:N``), once the layer page's first picture is in, to
    that filter's picture."""
    other, n = then.rsplit(":", 1)
    with tempfile.TemporaryDirectory() as tmp:
        ex = Explorer(model, Path(tmp) / "efficientnet_lite0", settings=settings)
        first, wanted = threading.Event(), threading.Event()
        done_at: list[float] = []

        def follow(event: dict) -> None:
            if event.get("type") != "done":
                return
            if event["layer"] == layer:
                first.set()
            if event["layer"] == other and event["filter"] == int(n):
                done_at.append(time.perf_counter())
                wanted.set()

        ex.worker.subscribe(follow)
        ex.request_filters(layer, list(range(count)))
        first.wait()
        left = time.perf_counter()
        ex.request_filters(other, [int(n)])  # the user opens a filter page of another layer
        wanted.wait()
        ex.worker.stop(wait=True)  # its running batch still holds hooks on the model
        return done_at[0] - left


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layer", default="_blocks.9._project_conv")
    parser.add_argument("--presets", default="defaults,quick")
    parser.add_argument("--filters", type=int, default=48)
    parser.add_argument("--then", default="_blocks.10._project_conv:3", help="LAYER:N of the filter page opened")
    parser.add_argument("--leave-only", action="store_true", help="Only the filter page opened after leaving.")
    parser.add_argument("--previews-only", action="store_true", help="Stop at each page's first full picture.")
    args = parser.parse_args()
    model = efficientnet_lite0()
    print(f"EfficientNet-Lite0 {args.layer}, {args.filters} filters; {torch.get_num_threads()} threads")
    for name in args.presets.split(","):
        settings = PRESETS[name]
        if args.leave_only:
            waited = leave_page(model, settings, args.layer, args.filters, args.then)
            print(f"  {name:8s} filter page {args.then} opened after leaving the layer page: {waited:6.1f} s")
            continue
        previews, times, batch = fill_page(model, settings, args.layer, args.filters, args.previews_only)
        if previews:
            print(
                f"  {name:8s} previews: first {previews[0]:6.1f} s, last ({len(previews)}th) {previews[-1]:6.1f} s",
                flush=True,
            )
        print(
            f"  {name:8s} ({settings.steps} steps, {settings.size or 224} px, batches of {batch}): first picture "
            f"{times[0]:6.1f} s, 8th {times[min(7, len(times) - 1)]:6.1f} s, last ({len(times)}th) {times[-1]:6.1f} s",
            flush=True,
        )
        if args.previews_only:
            continue
        waited = leave_page(model, settings, args.layer, args.filters, args.then)
        print(
            f"  {name:8s} filter page {args.then} opened after leaving the layer page: its picture in {waited:6.1f} s "
            f"(one batch: {times[0]:.1f} s)"
        )


if __name__ == "__main__":
    main()
