"""Does every model a researcher may bring work? ``layers``, ``filter``, ``heatmap``, ``maps`` and ``examples`` on
every torchvision classification model and a list of popular timm CNNs and vision transformers, random weights, in
one process.

Each command runs through the same library call the CLI makes (:mod:`kernelviz.jobs`), at the model's own
input size, with 2 optimizer steps; the filter, the feature maps and the dataset examples (4 generated images) use
the model's last default unit layer (:func:`~kernelviz.core.layers.default_units`): its last convolution with a
spatial output, or for a transformer its last block's MLP activation on the patch grid.
A cell is ``ok``, ``refused`` (a one-line :class:`~kernelviz.KernelvizError` that says what to
do) or ``FAIL`` (anything else: a traceback a user would see). Writes a Markdown table.

    python benchmarks/sweep_models.py benchmarks/SWEEP.md             # every model (tens of minutes on 2 cores)
    python benchmarks/sweep_models.py out.md resnet18 timm:convnext_tiny  # some models
    python benchmarks/sweep_models.py benchmarks/SWEEP.md --update swin_v2_t  # rerun rows of an existing table
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
from kernelviz.core.layers import default_units
from kernelviz.core.models import model_meta
from kernelviz.errors import KernelvizError
from kernelviz.files.write import save_png
from kernelviz.jobs.inspect import export_heatmaps, export_maps, layer_table
from kernelviz.jobs.optimize import synthesize_filters
from kernelviz.optvis.settings import DEFAULTS
from kernelviz.units.examples import find_examples

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
    # vision transformers: class token, distillation token, registers (with and without a class token), BEiT, EVA
    "vit_base_patch16_224",
    "deit_small_distilled_patch16_224",
    "vit_base_patch16_reg4_gap_256",
    "vit_small_patch14_reg4_dinov2",
    "swin_tiny_patch4_window7_224",
    "beit_base_patch16_224",
    "eva02_tiny_patch14_224",
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


def sweep_one(name: str, photo: Path, out: Path, folder: Path) -> dict[str, str]:
    row: dict[str, str] = {}
    start = time.perf_counter()
    try:
        model = load(name)
    except Exception as err:
        return {"load": f"FAIL: {type(err).__name__}: {str(err)[:100]}"}
    table: list[Any] = []
    row["layers"] = cell(lambda: table.append(layer_table(model)))
    rows = default_units(model, table[0].rows) if table else []
    units = [r for r in rows if len(r.shape) == 3 and r.shape[1] * r.shape[2] > 1]  # a grid, not a pooled 1x1
    layer = units[-1].name if units else None
    settings = DEFAULTS.with_(steps=2)
    if layer is None:
        row["filter"] = row["maps"] = row["examples"] = "refused: no unit layer with a spatial output"
    else:
        row["filter"] = cell(lambda: synthesize_filters(model, layer, [0], settings, output=out / f"{name}.png"))
        row["maps"] = cell(lambda: export_maps(model, layer, [photo], output=out / f"{name}_maps.png", k=4))
        row["examples"] = cell(lambda: find_examples(model, layer, [0, 1], folder, k=2, workers=0))
    row["heatmap"] = cell(lambda: export_heatmaps(model, [photo], ["gradcam"], output=out / "heat"))
    row["layer"] = layer or "-"
    row["seconds"] = f"{time.perf_counter() - start:.0f}"
    return row


COMMANDS = ("layers", "filter", "heatmap", "maps", "examples")


def read_table(path: Path) -> dict[str, dict[str, str]]:
    """The rows of a table this script wrote, ``{model: cells}``."""
    rows = {}
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == len(COMMANDS) + 3 and cells[0] not in ("model", "---"):
            rows[cells[0]] = {**dict(zip(COMMANDS, cells[1:], strict=False)), "layer": cells[-2], "seconds": cells[-1]}
    return rows


def main() -> None:
    target = Path(sys.argv[1])
    update = sys.argv[2:3] == ["--update"]
    names = sys.argv[3 if update else 2 :] or [*torchvision_names(), *(f"timm:{n}" for n in TIMM)]
    warnings.filterwarnings("ignore")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    results: dict[str, dict[str, str]] = read_table(target) if update else {}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        photo = out / "photo.png"
        save_png(torch.rand(3, 256, 256, generator=torch.Generator().manual_seed(0)), photo)
        folder = out / "images"
        folder.mkdir()
        for k in range(4):
            save_png(torch.rand(3, 256, 256, generator=torch.Generator().manual_seed(k + 1)), folder / f"{k}.png")
        for i, name in enumerate(names, 1):
            results[name] = sweep_one(name, photo, out, folder)
            print(f"[{i}/{len(names)}] {name}: {results[name]}", flush=True)
    commands = COMMANDS
    passed = [n for n, r in results.items() if all(r.get(c) == "ok" for c in commands)]
    refused = [n for n, r in results.items() if n not in passed and not any("FAIL" in v for v in r.values())]
    failed = [n for n, r in results.items() if any("FAIL" in v for v in r.values())]
    lines = [
        "# Model sweep",
        "",
        f"`python benchmarks/sweep_models.py` on {time.strftime('%Y-%m-%d')}: torch {torch.__version__}, random "
        "weights, each model at its own input size, 2 optimizer steps; filter, maps and examples (4 generated images) "
        "on its last default unit layer: the last spatial conv, or a transformer's last MLP activation on the patch "
        "grid; heatmap: Grad-CAM at the default layer.",
        "",
        f"**{len(passed)} of {len(results)} models pass every command; {len(refused)} are refused for a command with a "
        f"one-line message; {len(failed)} fail.**",
        "",
        "| model | layers | filter | heatmap | maps | examples | layer used | s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        cells = [r.get(c, r.get("load", "-")).replace("|", "/") for c in commands]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {r.get('layer', '-')} | {r.get('seconds', '-')} |")
    target.write_text("\n".join(lines) + "\n")
    print(f"wrote {target}: {len(passed)} pass, {len(refused)} refused, {len(failed)} fail")


if __name__ == "__main__":
    main()
