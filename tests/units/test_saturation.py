"""Rankings and pictures that survive a saturating activation (ReLU6's cap), on toy models with known answers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import kernelviz
from kernelviz.core.layers import asked_layers
from kernelviz.units.examples import effective_field
from kernelviz.units.scan import scan_units


def capped_net() -> nn.Module:
    """Unit 0 of the ReLU6 is 10 x the image's mean brightness (every photo below is past the cap of 6), unit 1 is
    -10 x it (below the floor for every photo), unit 2 a constant 3."""
    conv = nn.Conv2d(3, 3, 1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0] = 10.0 / 3
        conv.weight[1] = -10.0 / 3
        conv.bias.copy_(torch.tensor([0.0, 0.0, 3.0]))
    model = nn.Sequential(conv, nn.ReLU6(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2))
    return kernelviz.set_model_meta(model, input_size=8, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def brightness_images(root: Path, levels: list[float], names: list[str]) -> list[Path]:
    """One flat gray image per level, named so that file order is not brightness order."""
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for level, name in zip(levels, names, strict=True):
        path = root / f"{name}.png"
        Image.fromarray(np.full((8, 8, 3), round(level * 255), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


LEVELS = [0.7, 0.95, 0.8, 1.0, 0.75, 0.9, 0.85]  # all x 10 > 6: every image sits at the cap


def test_a_capped_unit_ranks_images_by_its_pre_activation_not_by_file_order(tmp_path):
    """Every image sits at ReLU6's cap (the values all 6), so file order would decide; the scan ranks them by the
    pre-activation (10 x brightness) instead, shows the capped 6, says so, and renaming the files in reverse order
    changes nothing. The unit below the floor is ranked by how far below it is (bottom: the darkest)."""
    net = capped_net()
    forward = brightness_images(tmp_path / "a", LEVELS, [f"img{i}" for i in range(len(LEVELS))])
    backward = brightness_images(tmp_path / "b", LEVELS, [f"img{len(LEVELS) - i}" for i in range(len(LEVELS))])
    brightest = sorted(range(len(LEVELS)), key=lambda i: -LEVELS[i])
    tops = []
    for folder in (forward, backward):
        scan = scan_units(net, folder, ["1"], k=4, workers=0)
        layer = scan.layers["1"]
        assert layer.ranked_by == "pre-activation" and (layer.floor, layer.cap) == (0.0, 6.0)
        files = [Path(scan.files[i]).name for i in layer.top.images[0].tolist()]
        levels = [LEVELS[[p.name for p in folder].index(f)] for f in files]
        assert levels == [LEVELS[i] for i in brightest[:4]]  # brightest first, whatever the file names
        assert layer.top.values[0].tolist() == [6.0] * 4  # what is shown: the capped activation
        assert layer.top.scores[0].tolist() == pytest.approx([10 * v for v in levels], abs=0.05)
        assert layer.top.ties(0) == 1  # no tie left
        # unit 1 sits below its floor (0) for every image: its bottom ranking orders them by how far below, the
        # brightest (-10 x 1.0) first, where the activation's minimum is 0 for all
        assert float(layer.bottom.scores[1, 0]) == pytest.approx(-10 * max(LEVELS), abs=0.05)
        assert layer.bottom.values[1].tolist() == [0.0] * 4
        tops.append(levels)
    assert tops[0] == tops[1]


def test_a_constant_unit_reports_its_ties(tmp_path):
    """Unit 2 is a constant 3 on every image: its ranking can only be file order, and the scan says so."""
    folder = tmp_path / "imgs"
    brightness_images(folder, LEVELS, [f"img{i}" for i in range(len(LEVELS))])
    layer = scan_units(capped_net(), folder, ["1"], k=4, workers=0).layers["1"]
    assert layer.top.values[2].tolist() == [3.0] * 4 and layer.top.ties(2) == 4


def test_examples_json_says_what_ranks_and_the_site_shows_it(tmp_path):
    from kernelviz.sets.examples import scan_to_atlas

    folder = tmp_path / "imgs"
    brightness_images(folder, LEVELS, [f"img{i}" for i in range(len(LEVELS))])
    report = scan_to_atlas(capped_net(), tmp_path / "atlas" / "capped", folder, ["1"], k=4, workers=0)
    page = json.loads((report.root / "1" / "examples.json").read_text())
    assert page["ranked_by"] == "pre-activation" and page["cap"] == 6.0
    top = page["filters"]["0"]
    assert [e["value"] for e in top] == [6.0] * 4 and [e["score"] for e in top] == sorted(
        (e["score"] for e in top), reverse=True
    )
    assert page["ties"] == {"2": 4}  # the constant unit's


def test_a_unit_below_the_floor_is_climbed_on_its_pre_activation_not_reported_dead():
    """Unit 1 of the ReLU6 is below its floor for every image in [0, 1] (its pre-activation is -10 x the mean
    brightness): the ReLU6's output is 0 at every step, which stopped the optimizer before ("never activated"). Its
    picture now climbs the pre-activation: it rises (to its best, a black image: 0), the unit is not reported dead,
    and the record says what was climbed."""
    net = capped_net()
    grid = kernelviz.layer_grid(net, "1", [0, 1], steps=48, size=8, param="pixel", transforms=None, lr=0.1)
    record = grid.record(1)
    curve = record["curve"]
    assert not record["dead_unit"] and curve[-1] > curve[0]
    assert record["pre_activation"] > -1.0 and record["final_value"] == 0.0  # raised toward its floor, still below
    assert "pre-activation" in record["climbed"] and record["objective"].startswith("channel(1:input")
    bright = grid.record(0)
    assert bright["at_cap"] and bright["final_value"] == 6.0 and bright["pre_activation"] > 9.0  # past the cap


def test_the_first_run_of_a_shared_module_is_its_own_layer():
    """A module that runs twice (one ReLU6 after the stem and after the head): each run is scanned as itself (a
    scan of the first run read the last run's row before, and failed)."""
    relu = nn.ReLU6()
    net = nn.Sequential(nn.Conv2d(3, 4, 3), relu, nn.Conv2d(4, 7, 3), relu)
    net = kernelviz.set_model_meta(net, input_size=12)
    rows = dict(asked_layers(net, 12, ["1#1", "1#2"], "scan"))
    assert rows["1#1"].shape == (4, 10, 10) and rows["1#2"].shape == (7, 8, 8)
    with pytest.raises(kernelviz.KernelvizError, match="runs 2 times"):
        asked_layers(net, 12, ["1"], "scan")


def test_capture_reads_an_in_place_activations_input_before_it_runs():
    net = capped_net()
    x = torch.rand(2, 3, 8, 8)
    with kernelviz.capture(net, ["0", "1", "1:input"]) as acts:  # "1" is ReLU6(inplace=True)
        net(x)
    assert torch.equal(acts["1:input"], acts["0"]) and torch.equal(acts["1"], acts["0"].clamp(0, 6))


def test_the_effective_field_of_two_uniform_convolutions():
    """Two 3x3 convolutions of ones: the input gradient of a central position is the outer product of (1, 2, 3, 2, 1)
    with itself: the 3x3 center holds 49/81 of it (more than half), its center pixel 9/81: the effective field (half
    the gradient) is 3 px, where the theoretical one is 5 px."""
    net = nn.Sequential(nn.Conv2d(3, 1, 3, padding=1, bias=False), nn.Conv2d(1, 1, 3, padding=1, bias=False))
    with torch.no_grad():
        for conv in net:
            conv.weight.fill_(1.0)
    net = kernelviz.set_model_meta(net, input_size=15, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    images = torch.rand(2, 3, 15, 15)
    assert effective_field(net, "1", images, 0.5) == 3
    assert effective_field(net, "1", images, 0.95) == 5  # nearly everything: the theoretical field
    assert effective_field(net, "0", images, 0.5) == 3  # one 3x3 convolution: flat over its 3x3
