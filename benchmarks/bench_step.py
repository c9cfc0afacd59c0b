"""Seconds per image-step of feature visualization: kernelviz against a naive loop and lucent.

Runs, in one process and interleaved (repetition by repetition, so machine noise hits every
configuration alike), on torchvision's ``vgg16(weights=None)``:

* ``naive``      full model, weights not frozen (weight gradients computed), a forward hook on the
                 target, plain pixels in [0, 1], Adam, no transforms;
* ``kv_pixel``   kernelviz with the same settings (pixel parameterization, no transforms);
* ``lucent``     lucent's ``render_vis`` (when installed), Fourier image at the same size, its
                 standard transforms;
* ``kv_default`` kernelviz with its defaults (Fourier image, standard transforms) at the same size;
* ``kv_bf16``    the same with ``precision="bf16"`` (``--bf16``; very slow on CPUs without bf16 units).

Prints the median seconds per image-step over repetitions, ratios, the optimizer's own overhead
(parameterization + transforms + optimizer update, no network), peak memory per configuration
(each in a fresh subprocess), the machine's fp32 matmul throughput and the achieved FLOP rate.

    python benchmarks/bench_step.py                      # 224 px, conv3_2:17, 8 steps, 3 repetitions
    python benchmarks/bench_step.py --size 128 --reps 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import torch
import torchvision
from torch import nn

import kernelviz
from kernelviz.core.models import IMAGENET_MEAN, IMAGENET_STD, ModelMeta, set_model_meta

CONFIGS = ("naive", "kv_pixel", "lucent", "kv_default", "kv_bf16")


def make_model() -> nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.vgg16(weights=None).eval()
    return set_model_meta(model, mean=IMAGENET_MEAN, std=IMAGENET_STD)


def naive(model: nn.Module, layer: str, n: int, size: int, steps: int, batch: int = 1) -> None:
    """What a first attempt looks like: the whole network, weight gradients and all (on the model's device)."""
    module = model.get_submodule(kernelviz.resolve_layer(model, layer))
    device = next(model.parameters()).device
    store = {}
    handle = module.register_forward_hook(lambda m, i, o: store.__setitem__("a", o))
    norm = ModelMeta(mean=IMAGENET_MEAN, std=IMAGENET_STD).normalize
    try:
        start = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
        img = start.to(device).requires_grad_(True)
        opt = torch.optim.Adam([img], lr=0.05)
        for _ in range(steps):
            opt.zero_grad()
            model(norm(img))
            loss = -store["a"][:, n].mean()
            loss.backward()
            opt.step()
            with torch.no_grad():
                img.clamp_(0, 1)
    finally:
        handle.remove()
        model.zero_grad(set_to_none=True)


def lucent_optvis() -> Any:
    """``lucent.optvis`` (0.1.8), with kornia >= 0.5's names given where lucent calls the old top-level ones."""
    import kornia
    import kornia.geometry.transform as kt

    for name in ("get_rotation_matrix2d", "warp_affine"):
        if not hasattr(kornia, name):
            setattr(kornia, name, getattr(kt, name))
    import lucent.optvis as optvis
    import lucent.optvis.objectives
    import lucent.optvis.param
    import lucent.optvis.render  # noqa: F401  (the submodules, loaded)

    return optvis


def lucent(model: nn.Module, layer: str, n: int, size: int, steps: int, batch: int = 1) -> None:
    optvis = lucent_optvis()
    param, render = optvis.param, optvis.render

    path = kernelviz.resolve_layer(model, layer).replace(".", "_")
    render.render_vis(
        model,
        f"{path}:{n}",
        lambda: param.image(size, batch=batch),
        thresholds=(steps,),
        show_image=False,
        progress=False,
        fixed_image_size=size,
    )


def run(config: str, model: nn.Module, layer: str, n: int, size: int, steps: int) -> None:
    obj = f"{layer}:{n}"
    if config == "naive":
        naive(model, layer, n, size, steps)
    elif config == "kv_pixel":
        kernelviz.visualize(model, obj, steps=steps, size=size, param="pixel", transforms=None)
    elif config == "lucent":
        lucent(model, layer, n, size, steps)
    elif config == "kv_default":
        kernelviz.visualize(model, obj, steps=steps, size=size)
    elif config == "kv_bf16":
        kernelviz.visualize(model, obj, steps=steps, size=size, precision="bf16")


def overhead(size: int, steps: int) -> float:
    """Seconds per step of everything but the network: render, transforms, normalization, Adam."""
    from kernelviz.optvis.params import image_param
    from kernelviz.optvis.transforms import standard_transforms

    g = torch.Generator().manual_seed(0)
    image = image_param("fourier", 1, (size, size), generator=g, device=torch.device("cpu"))
    chain = standard_transforms(g, size)
    opt = torch.optim.Adam(image.params, lr=0.05)
    norm = ModelMeta(mean=IMAGENET_MEAN, std=IMAGENET_STD).normalize
    start = time.perf_counter()
    for _ in range(steps):
        x = image.render()
        for t in chain:
            x = t(x)
        loss = -norm(x).contiguous(memory_format=torch.channels_last).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (time.perf_counter() - start) / steps


def matmul_gflops() -> float:
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    start = time.perf_counter()
    for _ in range(5):
        a @ b
    return 5 * 2 * 2048**3 / (time.perf_counter() - start) / 1e9


def conv_gflop(model: nn.Module, layer: str, size: int) -> float:  # on the model's device
    """Forward GFLOP up to the target layer at ``size`` px, the target computed for one channel."""
    path = kernelviz.resolve_layer(model, layer)
    target = model.get_submodule(path)
    total = 0.0

    def count(m: nn.Module, inputs: tuple, out: torch.Tensor) -> None:
        nonlocal total
        cout = 1 if m is target else m.out_channels
        k = m.kernel_size[0] * m.kernel_size[1]
        total += 2 * m.in_channels // m.groups * cout * k * out.shape[-2] * out.shape[-1]

    handles = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        kernelviz.activations(model, torch.zeros(1, 3, size, size, device=next(model.parameters()).device), layer)
    finally:
        for h in handles:
            h.remove()
    return total / 1e9


def transformed_size(size: int) -> int:
    """Side of the image the network sees after kernelviz's standard transforms (padding adds pixels)."""
    from kernelviz.optvis.transforms import standard_transforms

    x = torch.zeros(1, 3, size, size)
    for t in standard_transforms(torch.Generator().manual_seed(0), size):
        x = t(x)
    return x.shape[-1]


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def peak_memory(config: str, args: argparse.Namespace) -> float | None:
    """Peak RSS growth in MiB of one configuration over the loaded model, in a fresh process."""
    cmd = [
        sys.executable,
        __file__,
        "--memory-of",
        config,
        "--size",
        str(args.size),
        "--steps",
        str(args.steps),
        "--layer",
        args.layer,
        "--filter",
        str(args.filter),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    try:
        return json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"]
    except (IndexError, json.JSONDecodeError, KeyError):
        return None


def precision_effect(model: nn.Module, layer: str, n: int, size: int, steps: int) -> None:
    """What lower precision does to the result: objective reached and image difference vs fp32."""
    print(f"\nprecision effect ({layer}:{n}, {size} px, {steps} steps, same seed):")
    base = kernelviz.visualize(model, f"{layer}:{n}", steps=steps, size=size, precision="fp32")
    print(f"  fp32  final objective {float(base.final[0]):.4f}  {base.seconds / steps:.3f} s/step")
    for precision in ("bf16", "fp16"):
        try:
            other = kernelviz.visualize(model, f"{layer}:{n}", steps=steps, size=size, precision=precision)
        except RuntimeError as err:  # fp16 autocast is not supported on every CPU build
            print(f"  {precision}  not available here: {str(err).splitlines()[0]}")
            continue
        diff = (other.images - base.images).abs()
        print(
            f"  {precision}  final objective {float(other.final[0]):.4f} ({float(other.final[0] / base.final[0]):.3f}x"
            f" fp32), image mean |diff| {float(diff.mean()):.4f}, max {float(diff.max()):.3f};"
            f" {other.seconds / steps:.3f} s/step"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--layer", default="conv3_2")
    parser.add_argument("--filter", type=int, default=17)
    parser.add_argument("--bf16", action="store_true", help="also time precision=bf16")
    parser.add_argument(
        "--precision-effect", action="store_true", help="only compare fp32 with bf16/fp16 results (at --size, --steps)"
    )
    parser.add_argument("--memory-of", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    model = make_model()

    if args.precision_effect:
        precision_effect(model, args.layer, args.filter, args.size, args.steps)
        return
    if args.memory_of:  # child process: one configuration, report peak RSS growth over the loaded model
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak-RSS mark (VmHWM) to the current RSS
        base = _status_kib("VmRSS")
        run(args.memory_of, model, args.layer, args.filter, args.size, args.steps)
        print(json.dumps({"peak_mib": round((_status_kib("VmHWM") - base) / 1024, 1)}))
        return

    try:
        import lucent  # noqa: F401

        has_lucent = True
    except ImportError:
        has_lucent = False
    configs = [c for c in CONFIGS if (c != "lucent" or has_lucent) and (c != "kv_bf16" or args.bf16)]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, vgg16(weights=None), "
        f"{args.layer}:{args.filter}, {args.size} px, {args.steps} steps x {args.reps} repetitions"
    )
    for c in configs:  # warm-up
        run(c, model, args.layer, args.filter, args.size, 2)
    times: dict[str, list[float]] = {c: [] for c in configs}
    for _ in range(args.reps):
        for c in configs:
            start = time.perf_counter()
            run(c, model, args.layer, args.filter, args.size, args.steps)
            times[c].append((time.perf_counter() - start) / args.steps)
    med = {c: statistics.median(v) for c, v in times.items()}

    gflop = conv_gflop(model, args.layer, args.size)
    peak = matmul_gflops()
    over = statistics.median(overhead(args.size, args.steps) for _ in range(args.reps))
    print(
        f"\nfp32 matmul peak: {peak:.0f} GFLOP/s; forward to {args.layer} at {args.size} px: {gflop:.1f} GFLOP "
        "(fwd + input-gradient bwd ~ 2x that; + weight gradients ~ 3x)\n"
    )
    print(f"{'config':<12}{'s/step':>9}{'vs naive':>10}{'vs lucent':>11}{'GFLOP/s':>9}{'peak MiB':>10}")
    # work of kernelviz's step: forward to the target (one channel of it) and the input-gradient backward
    work = {"kv_pixel": 2 * gflop, "kv_default": 2 * conv_gflop(model, args.layer, transformed_size(args.size))}
    work["kv_bf16"] = work["kv_default"]
    for c in configs:
        vs_lucent = f"{med['lucent'] / med[c]:.2f}x" if has_lucent else "-"
        rate = f"{work[c] / med[c]:.0f}" if c in work else "-"
        mem = peak_memory(c, args)
        print(
            f"{c:<12}{med[c]:>9.3f}{med['naive'] / med[c]:>9.2f}x{vs_lucent:>11}{rate:>9}"
            f"{mem if mem is not None else '-':>10}"
        )
    print(
        f"\noptimizer overhead (fourier render + transforms + Adam, no network): {over:.4f} s/step = "
        f"{100 * over / med['kv_default']:.1f}% of a kv_default step"
    )


if __name__ == "__main__":
    main()
