"""One command that proves kernelviz's CUDA paths and measures them, for the first GPU this project gets.

    python benchmarks/gpu_proof.py OUT            # on one CUDA GPU; budget: under 8 minutes in all
    python benchmarks/gpu_proof.py OUT --smoke    # the same code paths on the CPU at tiny sizes (the test suite)

Writes ``OUT/gpu_proof.json`` (every number) and ``OUT/gpu_proof.md`` (a report to commit as
``benchmarks/GPU.md``), and exits 1 when a correctness check fails (the reports are written anyway).

Correctness, each against the CPU computed in the same run at a small size, on ``vgg16(weights=None)``:
``visualize`` at conv3_2 for several filters in fp32 and bf16 (final objective within the seed-to-seed
noise measured in the same run), every heatmap method (correlation of the maps; > 0.99 required for the
deterministic ones), feature maps (relative error), the model unchanged after every call, the CLI
headline command with ``--device cuda``, ``atlas`` with its default GPU batch size, and a one-process
``torchrun`` atlas.

Speed, interleaved over repetitions in one process: a full conv3_2 layer (256 filters, 224 px) at the
auto-chosen batch size, fp32 and bf16, seconds per step measured between a short and a longer run (so
set-up is not counted) and projected to 256 steps; the naive loop and lucent (when installed) at the same
batch; achieved TFLOP/s against the card's bf16 (and fp32) matmul peak measured in the same run; peak GPU
memory. Then every conv layer of VGG-16 once, for the projected time of a whole atlas. Last, the dataset scan of
every conv of VGG-16 (``scan_units``): its maxima against the CPU's, and images/s against the forward alone on
the same images.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scan import make_collection
from bench_step import conv_gflop, lucent, naive

import kernelviz
from kernelviz.core.models import IMAGENET_MEAN, IMAGENET_STD, set_model_meta
from kernelviz.explain.rollout import ROLLOUT_METHODS
from kernelviz.optvis.batch import auto_batch_size
from kernelviz.optvis.transforms import standard_transforms

LAYER = "conv3_2"


@dataclass(frozen=True)
class Plan:
    """Sizes of one run: the full proof on a GPU, or the smoke run on a CPU."""

    check_size: int  # px for the correctness checks against the CPU
    check_steps: int
    check_filters: tuple[int, ...]
    seeds: int  # CPU runs per filter that measure the seed-to-seed noise
    speed_size: int  # px for the timings
    speed_filters: int  # filters of conv3_2 in the speed batch (a whole layer: 256)
    short_steps: int  # seconds per step = (t(long) - t(short)) / (long - short)
    long_steps: int
    reps: int
    atlas_layers: tuple[str, ...]  # layers timed for the whole-atlas projection
    matmul: int  # side of the square matmul that measures the peak
    scan_images: int = 2048  # images in the dataset-scan timing (every conv of VGG-16)
    scan_batch: int = 128


FULL = Plan(
    64,
    32,
    (0, 17, 100),
    3,
    224,
    256,
    4,
    20,
    3,
    tuple(f"conv{b}_{i}" for b, n in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3)) for i in range(1, n + 1)),
    8192,
)
SMOKE = Plan(32, 3, (0, 5), 2, 32, 4, 1, 3, 1, ("conv1_1", "conv3_2"), 256, 24, 4)


def make_vgg16(device: torch.device) -> nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.vgg16(weights=None).eval()
    set_model_meta(model, name="vgg16", weights="random", mean=IMAGENET_MEAN, std=IMAGENET_STD)
    return model.to(device)


def fingerprint(model: nn.Module) -> str:
    """A digest of everything kernelviz promises not to change: weights, buffers and every flag."""
    h = hashlib.sha256()
    for key, value in model.state_dict().items():
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    flags = [(p.requires_grad, p.grad is None) for p in model.parameters()]
    flags += [
        (m.training, getattr(m, "inplace", None), len(m._forward_hooks) + len(m._forward_pre_hooks))
        for m in model.modules()
    ]
    h.update(repr(flags).encode())
    return h.hexdigest()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, fn: Callable[[], Any]) -> float:
    """Wall seconds of ``fn()``, the device's queue drained before and after."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten().double(), b.flatten().double()
    a, b = a - a.mean(), b - b.mean()
    denominator = float(a.norm() * b.norm())
    return float((a @ b) / denominator) if denominator > 0 else float(torch.equal(a, b))


class Report:
    """Collects checks and measurements; a failing check is recorded with its error, and the run goes on."""

    def __init__(self) -> None:
        self.checks: list[dict[str, Any]] = []
        self.data: dict[str, Any] = {}

    def check(self, name: str, fn: Callable[[], tuple[bool, str]]) -> None:
        start = time.perf_counter()
        try:
            ok, detail = fn()
        except Exception as err:  # the proof reports what broke instead of stopping
            ok, detail = False, f"{type(err).__name__}: {err}".splitlines()[0]
            traceback.print_exc()
        self.checks.append(
            {"name": name, "ok": bool(ok), "detail": detail, "seconds": round(time.perf_counter() - start, 2)}
        )
        print(f"[{'ok' if ok else 'FAIL'}] {name}: {detail}", flush=True)


# -- correctness ----------------------------------------------------------------------------------


def check_visualize(
    plan: Plan, cpu: nn.Module, dev: nn.Module, device: torch.device, precision: str
) -> tuple[bool, str]:
    kwargs = dict(steps=plan.check_steps, size=plan.check_size)
    noise, gaps = [], []
    for n in plan.check_filters:
        ref = [
            float(kernelviz.visualize(cpu, f"{LAYER}:{n}", seed=s, precision="fp32", **kwargs).final[0])
            for s in range(plan.seeds)
        ]
        before = fingerprint(dev)
        got = float(
            kernelviz.visualize(dev, f"{LAYER}:{n}", seed=0, device=device, precision=precision, **kwargs).final[0]
        )
        if fingerprint(dev) != before:
            return False, f"the model changed during visualize (filter {n})"
        noise.append(statistics.stdev(ref) if len(ref) > 1 else 0.0)
        gaps.append(abs(got - ref[0]))
    limit = 2 * max(noise) + 1e-4
    ok = max(gaps) <= limit
    return ok, (
        f"filters {list(plan.check_filters)}: |{device.type} {precision} - cpu fp32| max {max(gaps):.4g}, "
        f"seed noise (std over {plan.seeds} CPU seeds) max {max(noise):.4g}, limit {limit:.4g}"
    )


def check_heatmaps(plan: Plan, cpu: nn.Module, dev: nn.Module, report: Report) -> tuple[bool, str]:
    images = torch.rand(2, 3, plan.check_size, plan.check_size, generator=torch.Generator().manual_seed(0))
    corr, failed = {}, []
    # a small vision transformer (random weights) for the attention methods and Grad-CAM at a token layer
    torch.manual_seed(0)
    vit_cpu = torchvision.models.VisionTransformer(64, 16, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64)
    torch.nn.init.normal_(vit_cpu.heads.head.weight, std=0.5)  # torchvision starts it at zero: no gradient
    vit_cpu = kernelviz.set_model_meta(vit_cpu.eval(), input_size=64)
    vit_dev = copy.deepcopy(vit_cpu).to(next(dev.parameters()).device)
    vit_images = torch.nn.functional.interpolate(images, size=(64, 64), mode="bilinear", antialias=True)
    runs = [(m, cpu, dev, images) for m in kernelviz.METHODS if m not in ROLLOUT_METHODS]
    runs += [(m, vit_cpu, vit_dev, vit_images) for m in (*ROLLOUT_METHODS, "gradcam")]
    for method, on_cpu, on_dev, x in runs:
        kwargs = dict(target=[1, 2], ig_steps=8, smooth_samples=4)
        key = method if on_cpu is cpu else f"{method} (ViT)"
        a = kernelviz.attribute(on_cpu, x, method, **kwargs).maps
        before = fingerprint(on_dev)
        b = kernelviz.attribute(on_dev, x, method, **kwargs).maps
        if fingerprint(on_dev) != before:
            failed.append(f"{key} changed the model")
        corr[key] = round(correlation(a, b), 5)
        if method not in ("smoothgrad", "gradient_shap") and corr[key] <= 0.99:  # noise drawn on the device
            failed.append(f"{key} corr {corr[key]}")
    report.data["heatmap_correlation"] = corr
    return not failed, ("; ".join(failed) or "all deterministic methods > 0.99") + f" {corr}"


def check_feature_maps(plan: Plan, cpu: nn.Module, dev: nn.Module) -> tuple[bool, str]:
    images = torch.rand(2, 3, plan.check_size, plan.check_size, generator=torch.Generator().manual_seed(1))
    worst = 0.0
    for layer in ("conv1_1", LAYER, "pool5"):
        a, b = kernelviz.feature_maps(cpu, images, layer), kernelviz.feature_maps(dev, images, layer)
        worst = max(worst, float((a - b).abs().max() / a.abs().max().clamp(min=1e-12)))
    return worst < 1e-2, f"max |dev - cpu| / max |cpu| over conv1_1, {LAYER}, pool5: {worst:.2e} (TF32 convs allowed)"


def run_cli(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    exe = shutil.which("kernelviz") or str(Path(sys.executable).parent / "kernelviz")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([exe, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def check_cli(plan: Plan, out: Path, device: torch.device) -> tuple[bool, str]:
    png = out / "cli" / "vgg16_conv3_2_0017.png"
    proc = run_cli(
        [
            "filter",
            "vgg16",
            "conv3_2",
            "17",
            "--weights",
            "random",
            "--device",
            device.type,
            "--size",
            str(plan.check_size),
            "--steps",
            str(plan.check_steps),
            "-o",
            str(png),
        ],
        out,
    )
    record = json.loads(png.with_suffix(".json").read_text()) if png.with_suffix(".json").exists() else {}
    ok = proc.returncode == 0 and png.exists() and record.get("settings", {}).get("device", "").startswith(device.type)
    return (
        ok,
        f"exit {proc.returncode}, device {record.get('settings', {}).get('device')}, "
        f"precision {record.get('settings', {}).get('precision')} {proc.stderr[-300:] if not ok else ''}",
    )


def check_atlas(plan: Plan, dev: nn.Module, out: Path, report: Report) -> tuple[bool, str]:
    filters = min(16, plan.speed_filters)
    result = kernelviz.atlas(
        dev,
        out / "atlas",
        layers=[LAYER],
        filters=filters,
        steps=plan.check_steps,
        size=plan.check_size,
    )
    settings = json.loads((result.root / "settings.json").read_text())
    report.data["atlas_default_batch_size"] = settings["batch_size"]
    ok = result.computed == filters and result.index_written
    return (
        ok,
        f"{result.computed} filters, index written: {result.index_written}, default batch {settings['batch_size']}",
    )


def check_torchrun(plan: Plan, out: Path, device: torch.device) -> tuple[bool, str]:
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    exe = shutil.which("kernelviz") or str(Path(sys.executable).parent / "kernelviz")
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    args = [
        "atlas",
        "vgg16",
        "-o",
        "trun",
        "--weights",
        "random",
        "--layers",
        "conv1_1",
        "--filters",
        "4",
        "--size",
        str(plan.check_size),
        "--steps",
        str(plan.check_steps),
        "--quiet",
    ]
    if device.type != "cuda":
        args += ["--device", "cpu"]  # on a GPU, "auto" must become cuda:LOCAL_RANK
    proc = subprocess.run(
        [torchrun, "--nproc-per-node", "1", "--no-python", exe, *args],
        cwd=out,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    record = out / "trun" / "vgg16" / "conv1_1" / "0003.json"
    used = json.loads(record.read_text())["settings"]["device"] if record.exists() else None
    ok = proc.returncode == 0 and used is not None and used.startswith(device.type)
    return ok, f"exit {proc.returncode}, filters on {used} {proc.stderr[-300:] if not ok else ''}"


# -- speed ----------------------------------------------------------------------------------------


def matmul_tflops(device: torch.device, n: int, dtype: torch.dtype) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    reps = 10 if device.type == "cuda" else 3
    seconds = timed(device, lambda: [a @ b for _ in range(reps)])
    return reps * 2 * n**3 / seconds / 1e12


def step_seconds(device: torch.device, run: Callable[[int], Any], plan: Plan) -> float:
    """Seconds per step of ``run(steps)``, set-up excluded: (t(long) - t(short)) / (long - short)."""
    short = timed(device, lambda: run(plan.short_steps))
    long = timed(device, lambda: run(plan.long_steps))
    return max(long - short, 1e-9) / (plan.long_steps - plan.short_steps)


def network_side(size: int) -> int:
    """The side the network sees after kernelviz's standard transforms."""
    x = torch.zeros(1, 3, size, size)
    for t in standard_transforms(torch.Generator().manual_seed(0), size):
        x = t(x)
    return x.shape[-1]


def speed(plan: Plan, dev: nn.Module, device: torch.device, report: Report) -> tuple[bool, str]:
    filters = list(range(plan.speed_filters))
    batch = auto_batch_size(dev, LAYER, plan.speed_size, device, len(filters))
    group = filters[:batch]
    obj = kernelviz.channel(LAYER, group if len(group) > 1 else group[0])

    def kv(precision: str) -> Callable[[int], Any]:
        return lambda steps: kernelviz.visualize(
            dev, obj, steps=steps, size=plan.speed_size, precision=precision, batch=len(group)
        )

    configs: dict[str, Callable[[int], Any]] = {
        "kernelviz fp32": kv("fp32"),
        "kernelviz bf16": kv("bf16"),
        "naive loop fp32": lambda steps: naive(dev, LAYER, 17, plan.speed_size, steps, len(group)),
    }
    try:
        import lucent as _

        configs["lucent fp32"] = lambda steps: lucent(dev, LAYER, 17, plan.speed_size, steps, len(group))
    except ImportError:
        report.data["lucent"] = "not installed"
    times: dict[str, list[float]] = {name: [] for name in configs}
    memory: dict[str, float | None] = {}
    for name, fn in configs.items():  # warm-up (cuDNN autotuning, allocator) and peak memory
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        fn(plan.short_steps)
        sync(device)
        memory[name] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None
    for _ in range(plan.reps):
        for name, fn in configs.items():
            times[name].append(step_seconds(device, fn, plan))
    work = 2 * conv_gflop(dev, LAYER, network_side(plan.speed_size)) / 1e3  # TFLOP per image-step, fwd + input bwd
    rows = {}
    for name, values in times.items():
        per_step = statistics.median(values)
        rows[name] = {
            "seconds_per_step": per_step,
            "seconds_per_image_step": per_step / len(group),
            "images_per_second_256_steps": len(group) / (256 * per_step),
            "projected_layer_seconds_256_steps": 256 * per_step * -(-len(filters) // len(group)),
            "tflops": work * len(group) / per_step if name.startswith("kernelviz") else None,
            "peak_gib": memory[name],
        }
    report.data["speed"] = {
        "layer": LAYER,
        "size": plan.speed_size,
        "filters": len(filters),
        "batch": len(group),
        "tflop_per_image_step": work,
        "configs": rows,
    }
    bf16 = rows["kernelviz bf16"]
    return True, (
        f"batch {len(group)}: bf16 {bf16['seconds_per_step']:.4f} s/step, layer in "
        f"{bf16['projected_layer_seconds_256_steps']:.1f} s (256 steps)"
    )


def atlas_projection(plan: Plan, dev: nn.Module, device: torch.device, report: Report) -> tuple[bool, str]:
    layers = {}
    for name in plan.atlas_layers:
        channels = dev.get_submodule(kernelviz.resolve_layer(dev, name)).out_channels
        batch = auto_batch_size(dev, name, plan.speed_size, device, channels)
        obj = kernelviz.channel(name, list(range(batch)) if batch > 1 else 0)
        per_step = step_seconds(
            device,
            lambda steps, o=obj, b=batch: kernelviz.visualize(
                dev,
                o,
                steps=steps,
                size=plan.speed_size,
                precision="bf16" if device.type == "cuda" else "fp32",
                batch=b,
            ),
            plan,
        )
        layers[name] = {
            "filters": channels,
            "batch": batch,
            "seconds_per_step": per_step,
            "projected_seconds": 256 * per_step * -(-channels // batch),
        }
    total = sum(v["projected_seconds"] for v in layers.values())
    report.data["atlas_projection"] = {
        "layers": layers,
        "projected_seconds": total,
        "filters": sum(v["filters"] for v in layers.values()),
    }
    return True, f"{len(layers)} layers: {total / 60:.1f} minutes projected"


def check_scan(
    plan: Plan, cpu: nn.Module, dev: nn.Module, device: torch.device, out: Path, report: Report
) -> tuple[bool, str]:
    """The dataset scan of every conv of VGG-16 on the device: the same maxima as on the CPU (a small collection),
    and images/s against the forward alone on the same images, decoded and on the device already."""
    folder = make_collection(out / "scan-images", plan.scan_images)
    files = sorted(folder.glob("*.jpg"))[: plan.scan_images]
    layers = [f"conv{b}_{i}" for b, n in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3)) for i in range(1, n + 1)]
    small = files[:16]
    on_cpu = kernelviz.scan_units(cpu, small, layers, size=plan.check_size, batch_size=8, workers=0)
    on_dev = kernelviz.scan_units(dev, small, layers, size=plan.check_size, batch_size=8, workers=0)
    error = max(
        float(((a.top.values - b.top.values).abs() / a.top.values.abs().clamp_min(1e-3)).max())
        for a, b in zip(on_cpu.layers.values(), on_dev.layers.values(), strict=True)
    )
    meta = kernelviz.model_meta(dev)
    x = torch.stack([kernelviz.load_image(p, plan.speed_size) for p in files])
    x = meta.normalize(x.to(device))
    b = plan.scan_batch
    with torch.no_grad():
        dev(x[:b])  # warm-up
        limit = len(x) / timed(device, lambda: [dev(x[i : i + b]) for i in range(0, len(x), b)])
    scan = len(files) / timed(
        device, lambda: kernelviz.scan_units(dev, files, layers, size=plan.speed_size, batch_size=b)
    )
    report.data["scan"] = {
        "images": len(files),
        "batch": b,
        "forward_only_images_per_s": limit,
        "scan_images_per_s": scan,
        "share_of_forward_only": scan / limit,
        "max_relative_error_vs_cpu": error,
        "hours_for_50000": 50_000 / scan / 3600,
    }
    ok = error < 1e-2
    return ok, f"{scan:.0f} img/s = {scan / limit:.0%} of the forward alone; maxima vs CPU within {error:.1e}"


# -- report ---------------------------------------------------------------------------------------


def _cell(value: object, fmt: str = "") -> str:
    return "-" if value is None else format(value, fmt).replace("|", "\\|")


def _speed_lines(s: dict[str, Any], peak: dict[str, float]) -> list[str]:
    lines = [
        f"{s['layer']}, {s['filters']} filters, {s['size']} px, batch {s['batch']} (auto), "
        f"{s['tflop_per_image_step'] * 1e3:.1f} GFLOP per image-step (forward to the layer, one channel of it, "
        "and the input-gradient backward):",
        "",
        "| config | s/step | s/image-step | images/s, 256 steps | layer, 256 steps (s) | TFLOP/s | % of matmul peak "
        "| peak GiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in s["configs"].items():
        tf = r["tflops"]
        same = peak.get("bf16" if "bf16" in name else "fp32")  # each precision against its own peak
        share = 100 * tf / same if tf and same else None
        cells = [
            _cell(r["seconds_per_step"], ".4f"),
            _cell(r["seconds_per_image_step"], ".5f"),
            _cell(r["images_per_second_256_steps"], ".2f"),
            _cell(r["projected_layer_seconds_256_steps"], ".1f"),
            _cell(tf, ".1f"),
            _cell(share, ".0f"),
            _cell(r["peak_gib"]),
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    per = {name: r["seconds_per_image_step"] for name, r in s["configs"].items()}
    lines.append("")
    for name in ("kernelviz fp32", "kernelviz bf16"):
        versus = [f"{per[base] / per[name]:.2f}x {base}" for base in ("naive loop fp32", "lucent fp32") if base in per]
        lines.append(
            f"- {name} per image-step: {', '.join(versus)}"
            + ("" if "lucent fp32" in per else " (lucent not installed)")
        )
    return lines


def markdown(report: Report, plan: Plan, device_name: str, smoke: bool) -> str:
    d = report.data
    note = " SMOKE RUN (CPU, tiny sizes): the numbers prove the code paths, not the speed." if smoke else ""
    lines = [
        f"# GPU proof: {device_name}",
        "",
        f"`python benchmarks/gpu_proof.py OUT{' --smoke' if smoke else ''}` on {d['when']}: torch {d['torch']}, "
        f"{device_name}.{note}",
        "",
        "## Correctness (against the CPU, same run)",
        "",
        "| check | result | detail | s |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {c['name']} | {'ok' if c['ok'] else '**FAIL**'} | {_cell(c['detail'])} | {c['seconds']} |"
        for c in report.checks
    ]
    peak = d.get("matmul_tflops", {})
    lines += [
        "",
        "## Speed",
        "",
        f"Matmul peak measured in this run: bf16 {_cell(peak.get('bf16'), '.1f')} "
        f"TFLOP/s, fp32 {_cell(peak.get('fp32'), '.1f')} TFLOP/s.",
        "",
    ]
    if d.get("speed"):
        lines += _speed_lines(d["speed"], peak)
    a = d.get("atlas_projection")
    if a:
        lines += [
            "",
            f"## Whole atlas, projected ({a['filters']} filters of {len(a['layers'])} layers, 256 steps, "
            f"{plan.speed_size} px)",
            "",
            "| layer | filters | batch | s/step | projected s |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {k} | {v['filters']} | {v['batch']} | {v['seconds_per_step']:.4f} | {v['projected_seconds']:.0f} |"
            for k, v in a["layers"].items()
        ]
        lines += ["", f"Projected total: **{a['projected_seconds'] / 60:.1f} minutes**."]
    sc = d.get("scan")
    if sc:
        lines += [
            "",
            f"## Dataset scan (every conv of VGG-16, {sc['images']} JPEGs, batch {sc['batch']})",
            "",
            "| forward only (img/s) | scan (img/s) | scan / forward only | 50,000 images |",
            "|---|---|---|---|",
            f"| {sc['forward_only_images_per_s']:.0f} | {sc['scan_images_per_s']:.0f} | "
            f"{sc['share_of_forward_only']:.0%} | {sc['hours_for_50000'] * 60:.1f} min |",
        ]
    lines += [
        "",
        "## Targets (one H100)",
        "",
        "- A full conv3_2 layer (256 filters, 224 px, 256 steps) in <= 30 s with bf16.",
        "- A whole VGG-16 atlas (4,224 conv filters, 224 px, 256 steps) projected at <= 15 minutes.",
        "- >= 40% of the measured bf16 matmul peak in the optimization step; >= 5x lucent per image-step.",
        "- The dataset scan at >= 85% of the forward alone.",
        "",
        f"Whole run: {d['wall_seconds']:.0f} s.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="folder for gpu_proof.json and gpu_proof.md (and scratch files)")
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny sizes: prove the script itself works")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    plan = SMOKE if args.smoke else FULL
    if not args.smoke and not torch.cuda.is_available():
        parser.error("no CUDA GPU here: run with --smoke to check the script on the CPU")
    device = torch.device("cpu" if args.smoke else "cuda")
    device_name = "CPU (smoke run)" if args.smoke else torch.cuda.get_device_name(device)
    args.out.mkdir(parents=True, exist_ok=True)
    report = Report()
    report.data.update(
        device=device_name,
        torch=torch.__version__,
        python=platform.python_version(),
        when=time.strftime("%Y-%m-%d %H:%M"),
        plan=asdict(plan),
        smoke=args.smoke,
    )
    print(f"gpu_proof on {device_name}, torch {torch.__version__}", flush=True)

    cpu = make_vgg16(torch.device("cpu"))
    dev = copy.deepcopy(cpu).to(device)
    set_model_meta(dev, kernelviz.model_meta(cpu))
    for precision in ("fp32", "bf16"):
        report.check(f"visualize {LAYER} {precision}", lambda p=precision: check_visualize(plan, cpu, dev, device, p))
    report.check("heatmaps, every method", lambda: check_heatmaps(plan, cpu, dev, report))
    report.check("feature maps", lambda: check_feature_maps(plan, cpu, dev))
    report.check("CLI headline command", lambda: check_cli(plan, args.out, device))
    report.check("atlas, default batch size", lambda: check_atlas(plan, dev, args.out, report))
    report.check("torchrun, one process", lambda: check_torchrun(plan, args.out, device))

    report.data["matmul_tflops"] = {
        "bf16": matmul_tflops(device, plan.matmul, torch.bfloat16),
        "fp32": matmul_tflops(device, plan.matmul, torch.float32),
    }
    report.check("speed of a full layer", lambda: speed(plan, dev, device, report))
    report.check("whole-atlas projection", lambda: atlas_projection(plan, dev, device, report))
    report.check("dataset scan, every conv", lambda: check_scan(plan, cpu, dev, device, args.out, report))

    report.data["wall_seconds"] = time.perf_counter() - start
    report.data["checks"] = report.checks
    (args.out / "gpu_proof.json").write_text(json.dumps(report.data, indent=2, default=str) + "\n")
    (args.out / "gpu_proof.md").write_text(markdown(report, plan, device_name, args.smoke))
    print(f"wrote {args.out / 'gpu_proof.json'} and {args.out / 'gpu_proof.md'} ({report.data['wall_seconds']:.0f} s)")
    return 0 if all(c["ok"] for c in report.checks) else 1


if __name__ == "__main__":
    sys.exit(main())
