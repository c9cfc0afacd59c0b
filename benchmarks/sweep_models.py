"""Does every model a researcher may bring work? ``layers``, ``filter``, ``heatmap`` and ``maps`` on every
torchvision classification model and a list of popular timm CNNs, random weights, in one process.

Each command runs through the same library call the CLI makes (:mod:`kernelviz.jobs`), at the model's own
input size, with 2 optimizer steps; the filter and the feature maps use the model's last convolution with a
spatial output. A cell is ``ok``, ``refused`` (a one-line :class:`~kernelviz.KernelvizError` that says what to
do) or ``FAIL`` (anything else: a traceback a user would see). Writes a Markdown table.

    python benchmarks/sweep_models.py benchmarks/SWEEP.md             # every model (tens of minutes on 2 cores)
    python benchmarks/sweep_models.py out.md resnet18 timm:convnext_tiny  # some models
"""

from __future__ import annotations

import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import kernelviz
from kernelviz.core.models import model_meta
from kernelviz.errors import KernelvizError
from kernelviz.files.write import save_png
from kernelviz.jobs.inspect import export_heatmaps, export_maps, layer_table
from kernelviz.jobs.optimize import synthesize_filters
from kernelviz.optvis.settings import DEFAULTS

TIMM = (
    "resnet50",
    "resnext50_32x4d",
    "efficientnet_b0",
    "mobilenetv3_large_100",
    "convnext_tiny",
    "regnety_016",
    "densenet121",
    "inception_v3",
    "xception65",
    "cspdarknet53",
    "dla34",
    "ghostnet_100",
)


def torchvision_names() -> list[str]:
    import torchvision.models as tvm

    return sorted(tvm.list_models(module=tvm))


def load(name: str) -> torch.nn.Module:
    if name.startswith("timm:"):
        import timm

        model = timm.create_model(name.removeprefix("timm:"), pretrained=False).eval()
        return kernelviz.set_model_meta(model, model_meta(model), name=name, weights="random")
    return kernelviz.load_model(name, weights="random", device="cpu")


def cell(fn: Callable[[], Any]) -> str:
    try:
        fn()
        return "ok"
    except KernelvizError as err:
        return f"refused: {str(err)[:110]}"
    except Exception as err:  # the sweep reports what a user would have seen as a traceback
        traceback.print_exc(limit=3)
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        return f"FAIL: {type(err).__name__}: {first[:100]}"


def sweep_one(name: str, photo: Path, out: Path) -> dict[str, str]:
    row: dict[str, str] = {}
    start = time.perf_counter()
    try:
        model = load(name)
    except Exception as err:
        return {"load": f"FAIL: {type(err).__name__}: {str(err)[:100]}"}
    table: list[Any] = []
    row["layers"] = cell(lambda: table.append(layer_table(model)))
    convs = [r for r in table[0].rows if r.type.startswith("Conv") and len(r.shape) == 3] if table else []
    layer = convs[-1].name if convs else None
    settings = DEFAULTS.with_(steps=2)
    if layer is None:
        row["filter"] = row["maps"] = "refused: no convolution with a spatial output"
    else:
        row["filter"] = cell(lambda: synthesize_filters(model, layer, [0], settings, output=out / f"{name}.png"))
        row["maps"] = cell(lambda: export_maps(model, layer, [photo], output=out / f"{name}_maps.png", k=4))
    row["heatmap"] = cell(lambda: export_heatmaps(model, [photo], ["gradcam"], output=out / "heat"))
    row["layer"] = layer or "-"
    row["seconds"] = f"{time.perf_counter() - start:.0f}"
    return row


def main() -> None:
    target = Path(sys.argv[1])
    names = sys.argv[2:] or [*torchvision_names(), *(f"timm:{n}" for n in TIMM)]
    warnings.filterwarnings("ignore")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    results: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        photo = out / "photo.png"
        save_png(torch.rand(3, 256, 256, generator=torch.Generator().manual_seed(0)), photo)
        for i, name in enumerate(names, 1):
            results[name] = sweep_one(name, photo, out)
            print(f"[{i}/{len(names)}] {name}: {results[name]}", flush=True)
    commands = ("layers", "filter", "heatmap", "maps")
    passed = [n for n, r in results.items() if all(r.get(c) == "ok" for c in commands)]
    refused = [n for n, r in results.items() if n not in passed and not any("FAIL" in v for v in r.values())]
    failed = [n for n, r in results.items() if any("FAIL" in v for v in r.values())]
    lines = [
        "# Model sweep",
        "",
        f"`python benchmarks/sweep_models.py` on {time.strftime('%Y-%m-%d')}: torch {torch.__version__}, random "
        "weights, each model at its own input size, 2 optimizer steps; filter and maps on its last spatial conv.",
        "",
        f"**{len(passed)} of {len(results)} models pass every command; {len(refused)} are refused for a command with a "
        f"one-line message; {len(failed)} fail.**",
        "",
        "| model | layers | filter | heatmap | maps | layer used | s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        cells = [r.get(c, r.get("load", "-")).replace("|", "/") for c in commands]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {r.get('layer', '-')} | {r.get('seconds', '-')} |")
    target.write_text("\n".join(lines) + "\n")
    print(f"wrote {target}: {len(passed)} pass, {len(refused)} refused, {len(failed)} fail")


if __name__ == "__main__":
    main()
