"""The CLI end to end on VGG-16 with random weights, and every bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from kernelviz.cli import main, parse_filters

SMALL = ["--weights", "random", "--size", "32", "--steps", "4", "--device", "cpu"]


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def invoke(*args: str):
        return CliRunner().invoke(main, list(args), catch_exceptions=False)

    return invoke


def test_filter_single_default_name(run, tmp_path):
    result = run("filter", "vgg16", "conv3_2", "17", *SMALL)
    assert result.exit_code == 0, result.output
    png = tmp_path / "vgg16_conv3_2_0017.png"
    assert Image.open(png).size == (32, 32)
    record = json.loads(png.with_suffix(".json").read_text())
    assert record["model"] == "vgg16" and record["weights"] == "random"
    assert record["layer"] == "conv3_2" and record["filter"] == 17
    assert record["objective"] == "channel(conv3_2:17)"
    assert record["settings"]["seed"] == 0 and len(record["curve"]) == 4
    assert record["wall_seconds"] > 0 and "torch" in record["versions"]


def test_filter_many_into_folder(run, tmp_path):
    result = run("filter", "vgg16", "conv2_1", "0-2", "7", "-o", "out", *SMALL)
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (tmp_path / "out").glob("*.png"))
    assert names == [f"vgg16_conv2_1_{n:04d}.png" for n in (0, 1, 2, 7)]


def test_filter_explicit_file(run, tmp_path):
    result = run("filter", "vgg16", "relu1_1", "3", "-o", "pic.png", *SMALL, "--param", "pixel")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "pic.png").exists() and (tmp_path / "pic.json").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["filter", "vgg61", "conv3_2", "1"], "unknown model 'vgg61'. Did you mean:"),
        (["filter", "vgg16", "conv3_22", "1", *SMALL], "kernelviz layers"),
        (
            ["filter", "vgg16", "conv3_2", "256", *SMALL],
            "out of range: layer 'conv3_2' has 256 filters (0-255)",
        ),
        (["filter", "vgg16", "conv3_2", "-3", *SMALL], "must be >= 0"),
        (["filter", "vgg16", "conv3_2", "x", *SMALL], "cannot read filter"),
        (["filter", "vgg16", "conv3_2", "1", "--weights", "missing.pth"], "weights file not found"),
        (["filter", "vgg16", "conv3_2", "1", "-o", "a.png", "2", *SMALL], "give a folder"),
    ],
)
def test_bad_input_is_one_line_error(run, args, message):
    result = run(*args)
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output


def test_corrupt_weights_file(run, tmp_path):
    (tmp_path / "bad.pth").write_text("garbage")
    result = run("filter", "vgg16", "conv3_2", "1", "--weights", "bad.pth")
    assert result.exit_code == 1 and "cannot read weights file" in result.output


def test_offline_default_weights(run, monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "cache"))

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    result = run("filter", "vgg16", "conv3_2", "17")
    assert result.exit_code == 1
    assert "could not get the pretrained vgg16 weights" in result.output
    assert "--weights random" in result.output and "Traceback" not in result.output


def test_layers_command(run):
    result = run("layers", "vgg16", "--weights", "random")
    assert result.exit_code == 0, result.output
    line = next(ln for ln in result.output.splitlines() if ln.startswith("conv3_2 "))
    assert line.split() == ["conv3_2", "features.12", "Conv2d", "256x56x56", "256", "32"]
    assert "depth 16 (13 conv + 3 fully connected" in result.output


def test_custom_model_from_shell_with_checkpoint(run, tmp_path):
    (tmp_path / "netdef.py").write_text(
        "import torch.nn as nn\n"
        "def small():\n"
        "    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3))\n"
    )
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3))
    torch.save({"state_dict": model.state_dict()}, tmp_path / "small.pt")
    sys.path.insert(0, str(tmp_path))
    try:
        result = run("filter", "netdef:small", "2", "3", "--weights", "small.pt", "--size", "16", "--steps", "3")
    finally:
        sys.path.remove(str(tmp_path))
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "small_2_0003.json").read_text())
    assert record["weights"] == "small.pt"


def test_python_dash_m_and_help():
    out = subprocess.run([sys.executable, "-m", "kernelviz", "--help"], capture_output=True, text=True, check=True)
    assert "filter" in out.stdout and "layers" in out.stdout


def test_parse_filters():
    assert parse_filters(("0-3", "17", "5,6", "2")) == [0, 1, 2, 3, 17, 5, 6]


def test_filter_is_reproducible(run, tmp_path):
    for folder in ("a", "b"):
        assert run("filter", "vgg16", "conv1_2", "1", "-o", folder, *SMALL).exit_code == 0
    a = Image.open(tmp_path / "a" / "vgg16_conv1_2_0001.png").tobytes()
    b = Image.open(tmp_path / "b" / "vgg16_conv1_2_0001.png").tobytes()
    assert a == b


def test_grid_command_writes_sheet_and_individual_files(run, tmp_path):
    result = run(
        "grid",
        "vgg16",
        "conv2_1",
        "--filters",
        "0-3",
        "-o",
        "g.png",
        "--individual",
        "each",
        "--transforms",
        "none",
        *SMALL,
    )
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "g.json").read_text())
    assert record["filters"] == [0, 1, 2, 3] and len(record["final_values"]) == 4
    assert record["settings"]["transforms"] is None and record["settings"]["steps"] == 4
    assert sorted(p.name for p in (tmp_path / "each").glob("*.png")) == [f"vgg16_conv2_1_{n:04d}.png" for n in range(4)]
    assert Image.open(tmp_path / "g.png").size[0] > 200


def test_atlas_command_keeps_transforms_none(run, tmp_path):
    result = run(
        "atlas", "vgg16", "-o", "at", "--layers", "conv1_1", "--filters", "2", "--transforms", "none", "--quiet", *SMALL
    )
    assert result.exit_code == 0, result.output
    settings = json.loads((tmp_path / "at" / "vgg16" / "settings.json").read_text())
    assert settings["transforms"] == "none"
    record = json.loads((tmp_path / "at" / "vgg16" / "conv1_1" / "0001.json").read_text())
    assert record["settings"]["transforms"] is None
