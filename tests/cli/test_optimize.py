"""The optimizing commands end to end (filter, grid, atlas, examples), and every bad input.

The headline command runs on VGG-16 itself; everything else on the tiny VGG-shaped network
(``tests.nets:tiny_vgg``, written MODEL here), which answers to the same layer names.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from ..conftest import FAST, VGG_FAST


def test_headline_command_on_vgg16(cli, tmp_path):
    result = cli("filter", "vgg16", "conv3_2", "17", *VGG_FAST)
    assert result.exit_code == 0, result.output
    png = tmp_path / "vgg16_conv3_2_0017.png"
    assert Image.open(png).size == (32, 32)
    record = json.loads(png.with_suffix(".json").read_text())
    assert record["model"] == "vgg16" and record["weights"] == "random"
    assert record["layer"] == "conv3_2" and record["filter"] == 17
    assert record["objective"] == "channel(conv3_2:17)"
    assert record["settings"]["seed"] == 0 and len(record["curve"]) == 4
    assert record["wall_seconds"] > 0 and "torch" in record["versions"]


def test_filter_many_into_folder(cli, tmp_path):
    result = cli("filter", "MODEL", "conv2_1", "0-2", "7", "-o", "out", *FAST)
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (tmp_path / "out").glob("*.png"))
    assert names == [f"tiny_vgg_conv2_1_{n:04d}.png" for n in (0, 1, 2, 7)]


def test_filter_explicit_file(cli, tmp_path):
    result = cli("filter", "MODEL", "relu1_1", "3", "-o", "pic.png", *FAST, "--param", "pixel")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "pic.png").exists() and (tmp_path / "pic.json").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["filter", "vgg61", "conv3_2", "1"], "unknown model 'vgg61'. Did you mean:"),
        (["filter", "MODEL", "conv3_22", "1", *FAST], "kernelviz layers"),
        (["filter", "MODEL", "conv3_2", "32", *FAST], "out of range: layer 'conv3_2' has 32 filters (0-31)"),
        (["filter", "MODEL", "conv3_2", "-3", *FAST], "must be >= 0"),
        (["filter", "MODEL", "conv3_2", "x", *FAST], "cannot read filter"),
        (["filter", "MODEL", "conv3_2", "1", "--weights", "missing.pth"], "weights file not found"),
        (["filter", "MODEL", "conv3_2", "1", "-o", "a.png", "2", *FAST], "give a folder"),
        (["filter", "MODEL", "conv3_2", "1", "-o", "a.jpg", *FAST], "give a name ending in .png"),
        (["filter", "MODEL", "conv3_2", "1", "--lr", "0", *FAST], "lr must be a positive number"),
        (["atlas", "MODEL", "-o", "at", "--filters", "0", *FAST], "--filters 0 asks for no filters"),
        (["atlas", "MODEL", "-o", "at", "--shard", "2/2", *FAST], "shard 2/2 is not valid"),
    ],
)
def test_bad_input_is_one_line_error(cli, args, message):
    result = cli(*args)
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output


def test_unwritable_output_fails_before_any_work(cli, tmp_path):
    (tmp_path / "file").write_text("x")
    result = cli("filter", "MODEL", "conv3_2", "1", "-o", "file/pic.png", *FAST)
    assert result.exit_code == 1 and "cannot write into file" in result.output
    result = cli("grid", "MODEL", "conv1_1", "--individual", "file", *FAST)
    assert result.exit_code == 1 and "cannot write into file" in result.output
    result = cli("atlas", "MODEL", "-o", "file", "--filters", "2", *FAST)
    assert result.exit_code == 1 and "cannot write into file" in result.output
    assert not list(tmp_path.glob("*.png"))  # nothing was computed and written elsewhere


def test_corrupt_weights_file(cli, tmp_path):
    (tmp_path / "bad.pth").write_text("garbage")
    result = cli("filter", "MODEL", "conv3_2", "1", "--weights", "bad.pth")
    assert result.exit_code == 1 and "cannot read weights file" in result.output


def test_offline_default_weights(cli, monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "cache"))

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    result = cli("filter", "vgg16", "conv3_2", "17")
    assert result.exit_code == 1
    assert "could not get the pretrained vgg16 weights" in result.output
    assert "--weights random" in result.output and "Traceback" not in result.output


def test_layers_command(cli):
    result = cli("layers", "vgg16", "--weights", "random")
    assert result.exit_code == 0, result.output
    line = next(ln for ln in result.output.splitlines() if ln.startswith("conv3_2 "))
    assert line.split() == ["conv3_2", "features.12", "Conv2d", "256x56x56", "256", "56x56", "32"]
    assert "depth 16 (13 conv + 3 fully connected" in result.output
    assert cli("layers", "MODEL", "--size", "-5").exit_code == 2  # click refuses it, with usage
    convs = cli("layers", "vgg16", "--weights", "random", "--type", "conv", "--grep", "conv[45]_")
    assert [ln.split()[0] for ln in convs.output.splitlines()[1:7]] == [
        "conv4_1",
        "conv4_2",
        "conv4_3",
        "conv5_1",
        "conv5_2",
        "conv5_3",
    ]
    assert "(6 of 39 layers shown)" in convs.output
    unknown = cli("layers", "MODEL", "--type", "conv", "--type", "transformer")
    assert unknown.exit_code == 1 and len(unknown.output.strip().splitlines()) == 1
    assert (
        "has a type containing 'transformer': its types are AdaptiveAvgPool2d, Conv2d, Dropout, Linear"
        in unknown.output
    )
    bad = cli("layers", "MODEL", "--grep", "conv[")
    assert bad.exit_code == 1 and "cannot read --grep 'conv['" in bad.output


def test_layers_blocks_and_activations(cli, tmp_path):
    """--all and --type block list every block's output, with the shape a hook on the block sees; --type act the
    activations; a model without aliases gets one name column, not two identical ones."""
    model = torchvision.models.resnet18(weights=None).eval()
    seen: dict[str, tuple[int, ...]] = {}

    def record(path, module, inputs, output):
        seen.setdefault(path, tuple(output.shape[1:]))

    hooks = [m.register_forward_hook(functools.partial(record, p)) for p, m in model.named_modules() if p]
    with torch.no_grad():
        model(torch.zeros(1, 3, 224, 224))
    for h in hooks:
        h.remove()
    every = cli("layers", "resnet18", "--weights", "random", "--all")
    assert every.exit_code == 0, every.output
    lines = every.output.splitlines()
    assert lines[0].split() == ["name", "type", "output", "units", "grid", "RF"]
    rows = {ln.split()[0]: ln for ln in lines[1:] if ln and not ln.startswith(("(", "resnet18"))}
    blocks = [name for name, ln in rows.items() if "(block)" in ln]
    assert blocks[:3] == ["layer1.0", "layer1.1", "layer1"] and "layer3.0.downsample" in blocks
    for name in blocks:
        shape = rows[name].split()[3]
        assert shape == "x".join(map(str, seen[name])), name
    plain = cli("layers", "resnet18", "--weights", "random").output.splitlines()
    assert not any(ln.split()[0] == "layer3.0" for ln in plain if ln)  # blocks only when asked
    only = cli("layers", "resnet18", "--weights", "random", "--type", "block")
    listed = [ln.split()[0] for ln in only.output.splitlines()[1:] if "(block)" in ln]
    assert listed == blocks and f"({len(blocks)} of " in only.output
    acts = cli("layers", "vgg16", "--weights", "random", "--type", "act")
    names = [ln.split()[0] for ln in acts.output.splitlines()[1:] if ln.startswith("relu")]
    assert len(names) == 15 and "(15 of 39 layers shown)" in acts.output  # 13 conv + 2 fully connected ReLUs
    assert acts.output.splitlines()[0].split()[:2] == ["name", "path"]  # VGG's names differ from its paths
    # a block's name is a layer name like any other
    photo = tmp_path / "noise.png"
    Image.fromarray(torch.randint(0, 256, (64, 64, 3), dtype=torch.uint8).numpy()).save(photo)
    maps = cli("maps", "resnet18", "layer3.0", str(photo), "--weights", "random", "-k", "4")
    assert maps.exit_code == 0, maps.output


def test_custom_model_from_shell_with_checkpoint(cli, tmp_path):
    (tmp_path / "netdef.py").write_text(
        "import torch.nn as nn\n"
        "def small():\n"
        "    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3))\n"
    )
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3))
    torch.save({"state_dict": model.state_dict()}, tmp_path / "small.pt")
    sys.path.insert(0, str(tmp_path))
    try:
        result = cli("filter", "netdef:small", "2", "3", "--weights", "small.pt", "--size", "16", "--steps", "3")
    finally:
        sys.path.remove(str(tmp_path))
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "small_2_0003.json").read_text())
    assert record["weights"] == "small.pt"


def test_python_dash_m_and_help():
    out = subprocess.run([sys.executable, "-m", "kernelviz", "--help"], capture_output=True, text=True, check=True)
    assert "filter" in out.stdout and "layers" in out.stdout


def test_filter_is_reproducible(cli, tmp_path):
    for folder in ("a", "b"):
        assert cli("filter", "MODEL", "conv1_2", "1", "-o", folder, *FAST).exit_code == 0
    a = Image.open(tmp_path / "a" / "tiny_vgg_conv1_2_0001.png").tobytes()
    b = Image.open(tmp_path / "b" / "tiny_vgg_conv1_2_0001.png").tobytes()
    assert a == b


def test_grid_command_writes_sheet_and_individual_files(cli, tmp_path):
    result = cli(
        "grid",
        "MODEL",
        "conv2_1",
        "--filters",
        "0-3",
        "-o",
        "g.png",
        "--individual",
        "each",
        "--transforms",
        "none",
        *FAST,
    )
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "g.json").read_text())
    assert record["filters"] == [0, 1, 2, 3] and len(record["final_values"]) == 4
    assert record["settings"]["transforms"] is None and record["settings"]["steps"] == 4
    assert sorted(p.name for p in (tmp_path / "each").glob("*.png")) == [
        f"tiny_vgg_conv2_1_{n:04d}.png" for n in range(4)
    ]
    assert Image.open(tmp_path / "g.png").size[0] > 200


def test_atlas_command_keeps_transforms_none(cli, tmp_path):
    result = cli(
        "atlas", "MODEL", "-o", "at", "--layers", "conv1_1", "--filters", "2", "--transforms", "none", "--quiet", *FAST
    )
    assert result.exit_code == 0, result.output
    settings = json.loads((tmp_path / "at" / "tiny_vgg" / "settings.json").read_text())
    assert settings["transforms"] == "none"
    record = json.loads((tmp_path / "at" / "tiny_vgg" / "conv1_1" / "0001.json").read_text())
    assert record["settings"]["transforms"] is None


def test_atlas_command_negative_keeps_both_pictures(cli, tmp_path):
    result = cli("atlas", "MODEL", "-o", "at", "--layers", "conv1_1", "--filters", "2", "--negative", "--quiet", *FAST)
    assert result.exit_code == 0, result.output
    layer = tmp_path / "at" / "tiny_vgg" / "conv1_1"
    for n in range(2):
        negative = json.loads((layer / "variants" / f"{n:04d}_negative.json").read_text())
        positive = json.loads((layer / f"{n:04d}.json").read_text())
        assert negative["negative"] is True and "negative" not in positive
        assert negative["final_value"] < positive["final_value"]  # minimized against maximized
    assert (layer / "sheet_negative.png").is_file() and 'class="card both"' in (layer / "index.html").read_text()


def test_examples_command(cli, tmp_path):
    data = pytest.importorskip("skimage.data")
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("chelsea", "coffee", "astronaut"):
        Image.fromarray(getattr(data, name)()).save(folder / f"{name}.png")
    (folder / "bad.jpg").write_text("x")
    result = cli("examples", "MODEL", "conv2_1", "3", "--images", str(folder), "-k", "2", "-o", "ex.png", *FAST)
    assert result.exit_code == 0, result.output
    assert "scanned 3 images, skipped 1 unreadable" in result.output
    record = json.loads((tmp_path / "ex.json").read_text())
    assert len(record["examples"]) == 2 and record["ratio_to_best_natural"] > 0
    assert record["examples"][0]["max"] >= record["examples"][1]["max"]


def test_preprocessing_options_and_the_notice(cli, tmp_path):
    (tmp_path / "plainnet.py").write_text(
        "import torch.nn as nn\ndef make():\n    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        bare = cli("filter", "plainnet:make", "0", "1", "--steps", "1", "--size", "16", "-o", "a.png")
        told = cli(
            "filter",
            "plainnet:make",
            "0",
            "1",
            "--steps",
            "1",
            "--size",
            "16",
            "-o",
            "b.png",
            "--mean",
            "0.5",
            "--std",
            "0.25,0.25,0.25",
        )
    finally:
        sys.path.remove(str(tmp_path))
    assert bare.exit_code == 0 and "carries no preprocessing" in bare.output and "--mean, --std" in bare.output
    assert told.exit_code == 0 and "carries no preprocessing" not in told.output
    record = json.loads((tmp_path / "b.json").read_text())
    assert record["settings"]["normalization"] == {"mean": [0.5] * 3, "std": [0.25] * 3}
    bad = cli("layers", "MODEL", "--mean", "a,b")
    assert bad.exit_code == 1 and "cannot read --mean 'a,b'" in bad.output


def test_options_a_mode_ignores_are_refused_in_one_line(cli, tmp_path):
    """`examples MODEL --images DIR` (the scan) makes no picture: the optimizer's options are refused, not ignored;
    `heatmap --concepts` draws concepts, not a method: the method's options are refused."""
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(folder / "a.png")
    scan = cli("examples", "MODEL", "--images", str(folder), "-o", "out", "--steps", "5", "--lr", "0.1")
    assert scan.exit_code == 2 and "--steps, --lr do not apply to a scan of every unit" in scan.output
    assert "Traceback" not in scan.output and not (tmp_path / "out").exists()
    fine = cli("examples", "MODEL", "--images", str(folder), "-o", "out", "--batch-size", "2", "--quiet")
    assert fine.exit_code == 0, fine.output  # the scan's own options
    concepts = tmp_path / "concepts.json"
    concepts.write_text("{}")
    heat = cli("heatmap", "MODEL", str(folder / "a.png"), "--concepts", str(concepts), "-m", "saliency", "--score")
    assert heat.exit_code == 2 and "--method, --score do not apply to --concepts" in heat.output
