"""The GPU proof script runs end to end before any GPU exists: its --smoke mode on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_proof.py"


@pytest.mark.slow  # about 95 s on 2 cores
def test_gpu_proof_smoke_run(tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "2"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path), "--smoke"], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads((tmp_path / "gpu_proof.json").read_text())
    names = [c["name"] for c in data["checks"]]
    assert all(c["ok"] for c in data["checks"]), data["checks"]
    assert {"visualize conv3_2 bf16", "heatmaps, every method", "CLI headline command", "torchrun, one process"} <= set(
        names
    )
    speed = data["speed"]["configs"]
    assert {"kernelviz fp32", "kernelviz bf16", "naive loop fp32"} <= set(speed)
    assert all(r["seconds_per_step"] > 0 for r in speed.values())
    assert data["atlas_projection"]["projected_seconds"] > 0 and data["matmul_tflops"]["fp32"] > 0
    report = (tmp_path / "gpu_proof.md").read_text()
    assert "SMOKE RUN" in report and all(name in report for name in names)


def test_gpu_proof_refuses_to_run_without_a_gpu_unless_smoke(tmp_path):
    import pytest
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the script would run for real")
    proc = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--smoke" in proc.stderr
