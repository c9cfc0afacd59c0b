"""Load check of ``kernelviz serve``: 8 concurrent clients, the same and different units.

A real uvicorn server in this process (a thread) and 8 client threads with their own HTTP connections: four
ask for the same filter, four for filters of other layers. Each posts ``/api/compute``, waits until its
filter is on disk (``/api/status``), then opens the filter's page. Printed: what every client got, how many
times each worker task ran (each must run once), the filters written, and the latency of the page and the
picture of a cached unit (no model forward), over 100 requests each.

    python benchmarks/bench_serve.py                              # tests.nets:tiny_vgg, random weights
    python benchmarks/bench_serve.py --model kernelviz.zoo:efficientnet_lite0 --steps 32 --size 96
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "docs")]

from serve_tour import running  # noqa: E402

import kernelviz  # noqa: E402
from kernelviz.core.models import model_slug  # noqa: E402
from kernelviz.serve.app import create_app  # noqa: E402
from kernelviz.serve.explorer import Explorer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tests.nets:tiny_vgg")
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--size", type=int, default=None)
    args = parser.parse_args()
    model = kernelviz.load_model(args.model, weights="random" if "tests." in args.model else "default", device="cpu")
    settings = kernelviz.DEFAULTS.with_(steps=args.steps, size=args.size)
    with tempfile.TemporaryDirectory() as tmp:
        explorer = Explorer(model, Path(tmp) / model_slug(kernelviz.model_meta(model).name), settings=settings)
        convs = [r.name for r in explorer.conv_layers()]
        same = (convs[len(convs) // 2], 3)
        others = [(convs[i % len(convs)], 1 + i) for i in (0, 1, len(convs) - 1, len(convs) - 2)]
        asks = [same] * 4 + others
        token = "bench"
        results: list[dict] = [{} for _ in asks]
        with running(create_app(explorer, token)) as base:

            def client(i: int, layer: str, n: int) -> None:
                start = time.perf_counter()
                with httpx.Client(base_url=base, headers={"x-kernelviz-token": token}, timeout=600) as http:
                    r = http.post("/api/compute", json={"layer": layer, "filters": [n]})
                    r.raise_for_status()
                    while n not in http.get(f"/api/status/{layer}").json()["done"]:
                        time.sleep(0.05)
                    page = http.get(f"/filter/{layer}/{n}")
                results[i] = {
                    "unit": f"{layer}:{n}",
                    "status": page.status_code,
                    "seconds": time.perf_counter() - start,
                }

            threads = [threading.Thread(target=client, args=(i, *ask)) for i, ask in enumerate(asks)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            with httpx.Client(base_url=base, headers={"x-kernelviz-token": token}) as http:
                layer, n = same
                timings = {}
                for what, url in (("filter page", f"/filter/{layer}/{n}"), ("picture", f"/files/{layer}/{n:04d}.png")):
                    http.get(url)
                    ms = []
                    for _ in range(100):
                        t0 = time.perf_counter()
                        assert http.get(url).status_code == 200
                        ms.append(1000 * (time.perf_counter() - t0))
                    timings[what] = ms
        explorer.worker.stop()
        written = sum(1 for _ in Path(tmp).rglob("[0-9][0-9][0-9][0-9].json"))
    print(f"model {args.model}, {args.steps} steps, batches of {explorer.optim.batch_size} filters")
    for r in results:
        print(f"  client asked {r['unit']:<14} -> HTTP {r['status']} after {r['seconds']:.2f} s")
    runs = dict(explorer.worker.runs)
    print(f"worker tasks: {runs}")
    print(
        f"every task ran once: {all(v == 1 for v in runs.values())}; filters written: {written} ({len(runs)} batches)"
    )
    for what, ms in timings.items():
        print(
            f"cached {what}: median {statistics.median(ms):.1f} ms, p95 {sorted(ms)[94]:.1f} ms, max {max(ms):.1f} ms"
        )


if __name__ == "__main__":
    main()
