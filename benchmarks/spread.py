"""The spread of every statistic a calibrated test thresholds, over seeds and CPU kernels.

A calibrated test (``pytest -m calibrated``) thresholds a number that moves with the floating-point path:
the toy network trained in the session, an optimization's end point. This script runs those tests once per
(kernel configuration, seed), each in its own process (kernels are chosen when torch starts), with
``KERNELVIZ_TEST_SEED`` set and ``KERNELVIZ_MEASURED`` collecting what each test records, and prints per
statistic its minimum and maximum over everything run, next to the threshold the test holds it to.

    python benchmarks/spread.py                      # seeds 0-4, native + AVX2-only + one thread
    python benchmarks/spread.py --seeds 0-2 --configs native,avx2 --tests tests/test_semantics.py
    python benchmarks/spread.py --slow               # also the slow tests on the trained EfficientNet-Lite0

Kernel configurations: ``native`` (whatever this CPU offers, e.g. AVX-512), ``avx2`` (oneDNN, MKL and ATen held
to AVX2 kernels, as on an older or a consumer CPU) and ``1thread`` (one intra-op thread: reductions split
differently). Ten to twenty minutes on 2 cores for the defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Environment of each kernel configuration (added to this process's).
CONFIGS: dict[str, dict[str, str]] = {
    "native": {},
    "avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"},
    "1thread": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
}


def seeds(spec: str) -> list[int]:
    """``"0-4"`` → [0, 1, 2, 3, 4]; ``"0,3"`` → [0, 3]."""
    out: list[int] = []
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        out += range(int(lo), int(hi or lo) + 1)
    return out


def run(config: str, seed: int, tests: list[str], slow: bool, measured: Path) -> tuple[int, int, float]:
    """One pytest process; returns (passed, failed, seconds). Statistics are appended to ``measured``."""
    env = {**os.environ, **CONFIGS[config], "KERNELVIZ_TEST_SEED": str(seed), "KERNELVIZ_MEASURED": str(measured)}
    env["PYTHONWARNINGS"] = "ignore"
    marks = "calibrated" if slow else "calibrated and not slow"
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", marks, *tests],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    passed = int(tail.split(" passed")[0].split()[-1]) if " passed" in tail else 0
    failed = int(tail.split(" failed")[0].split()[-1]) if " failed" in tail else 0
    if failed:
        for line in proc.stdout.splitlines():
            if line.startswith("FAILED"):
                print(f"    {config} seed {seed}: {line[:160]}", flush=True)
    return passed, failed, seconds


def _numbers(value: object) -> list[float]:
    if isinstance(value, list):
        return [x for v in value for x in _numbers(v)]
    return [float(value)] if isinstance(value, int | float) else []


def table(rows: list[dict]) -> str:
    """Markdown: one row per (test, statistic) with its range over every config and seed, and per config."""
    by_stat: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        by_stat[(row["test"], row["name"])][row["config"]] += _numbers(row["value"])
    configs = [c for c in CONFIGS if any(c in v for v in by_stat.values())]
    head = "| test | statistic | all | " + " | ".join(configs) + " |"
    lines = [head, "|" + "---|" * (3 + len(configs))]

    def span(values: list[float]) -> str:
        return f"{min(values):.3g} … {max(values):.3g}" if values else "—"

    for (test, name), per in sorted(by_stat.items()):
        every = [v for vs in per.values() for v in vs]
        short = test.removeprefix("tests/")
        cells = " | ".join(span(per.get(c, [])) for c in configs)
        lines.append(f"| {short} | {name} | {span(every)} | {cells} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0-4", help="values of KERNELVIZ_TEST_SEED (default 0-4)")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="kernel configurations to run")
    parser.add_argument("--tests", nargs="*", default=[], help="test files or node ids (default: all)")
    parser.add_argument("--slow", action="store_true", help="also the slow calibrated tests")
    parser.add_argument("--out", type=Path, help="also write the table (markdown) and the raw rows (.jsonl)")
    args = parser.parse_args()
    rows: list[dict] = []
    failures = 0
    for config in args.configs.split(","):
        for seed in seeds(args.seeds):
            with tempfile.TemporaryDirectory() as tmp:
                measured = Path(tmp) / "measured.jsonl"
                passed, failed, seconds = run(config, seed, args.tests, args.slow, measured)
                failures += failed
                print(f"{config:8s} seed {seed}: {passed} passed, {failed} failed, {seconds:.0f} s", flush=True)
                if measured.exists():
                    rows += [{**json.loads(line), "config": config} for line in measured.read_text().splitlines()]
    text = table(rows)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
        args.out.with_suffix(".jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
