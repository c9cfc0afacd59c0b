"""Switching units off, holding them at their mean, scaling them: known answers, the model untouched."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import kernelviz
from kernelviz.data.collection import collection
from kernelviz.units.ablation import ablate, ablated_logits, class_outputs

from ..conftest import assert_unchanged, snapshot
from .test_statistics import planted_images


def routed_net() -> nn.Module:
    """Class k's logit flows only through one unit: unit 0 sees red, 1 green, 2 blue (the mean of a channel after
    a ReLU); the head sends unit 2 to output 0 (``blue``, the first sorted folder), unit 1 to output 1 (``green``),
    unit 0 to output 2 (``red``); unit 3 sees every channel and feeds no output."""
    conv = nn.Conv2d(3, 4, 1, bias=False)
    head = nn.Linear(4, 3, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        for c in range(3):
            conv.weight[c, c] = 1.0
        conv.weight[3] = 1.0
        head.weight.zero_()
        for unit, output in ((2, 0), (1, 1), (0, 2)):
            head.weight[output, unit] = 100.0  # a 5x5 square of 16x16: a mean of 0.1, a logit of 10
    net = nn.Sequential(conv, nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(), head)
    return kernelviz.set_model_meta(net, input_size=16, mean=(0, 0, 0), std=(1, 1, 1))


def test_zeroing_the_unit_a_class_flows_through_sends_it_elsewhere_and_leaves_the_others(tmp_path):
    images = planted_images(tmp_path / "images")  # 4 red, 4 green, 4 blue squares on black
    net = routed_net()
    before = snapshot(net)
    found = ablate(net, "1", [0], images, workers=0)  # layer "1": the ReLU; unit 0: red
    assert_unchanged(net, before)
    assert found.matching.startswith("folder i of the sorted folders is output i")
    by_name = {o.name: o for o in found.classes}
    assert by_name["red"].accuracy == (1.0, 0.0)  # every red image goes elsewhere
    assert by_name["red"].probability[0] > 0.9 and by_name["red"].probability[1] == pytest.approx(1 / 3)
    for name in ("green", "blue"):  # their unit 0 was 0: nothing changes, bitwise
        assert by_name[name].accuracy == (1.0, 1.0) and by_name[name].probability[0] == by_name[name].probability[1]
    assert found.changed == 4 and found.accuracy == (1.0, pytest.approx(2 / 3))
    assert [o.name for o in found.hurt()] == ["red"] and found.helped() == []
    assert found.top1[0].tolist() == [0] * 4 + [1] * 4 + [2] * 4  # sorted folders: blue, green, red
    # the unit that feeds no output changes nothing; scale 1 changes nothing, bitwise
    for kwargs in ({"units": [3]}, {"units": [0, 1, 2], "mode": "scale", "factor": 1.0}):
        same = ablate(net, "1", images=images, workers=0, **kwargs)
        assert torch.equal(same.own[0], same.own[1]) and torch.equal(same.top1[0], same.top1[1]) and same.changed == 0
    # held at its mean: red's unit at the mean over all 12 images (a third of red's own), amplified: more sure
    held = ablate(net, "1", [0], images, mode="mean", workers=0)
    assert held.means is not None and held.means[0] == pytest.approx(found_mean(images, 0), rel=1e-6)
    assert {o.name: o for o in held.classes}["red"].probability[1] < by_name["red"].probability[0]
    louder = ablate(net, "1", [0], images, mode="scale", factor=4.0, workers=0)
    red = {o.name: o for o in louder.classes}["red"]
    assert red.probability[1] > red.probability[0] and red.accuracy == (1.0, 1.0)
    assert_unchanged(net, before)


def found_mean(images: Path, channel: int) -> float:
    """The mean over the images of their mean over positions of ``channel`` (what unit ``channel`` of the ReLU
    reads: the channel itself, non-negative)."""
    files = collection(images).files
    return float(np.mean([np.asarray(Image.open(f).convert("RGB"))[..., channel].mean() / 255 for f in files]))


def test_bad_input_is_refused_and_the_model_is_left_as_it_was(tmp_path):
    images = planted_images(tmp_path / "images")
    net = routed_net()
    before = snapshot(net)
    for kwargs, message in (
        ({"units": [4]}, r"unit 4 out of range: 1 has 4 units \(0-3\)"),
        ({"units": [0], "mode": "scale"}, "needs a finite factor"),
        ({"units": [0], "mode": "zero", "factor": 2.0}, "a factor goes with mode 'scale'"),
        ({"units": [0], "mode": "shuffle"}, "unknown mode"),
        ({"units": []}, "no unit to ablate"),
    ):
        with pytest.raises(kernelviz.KernelvizError, match=message):
            ablate(net, "1", images=images, workers=0, **kwargs)
    with pytest.raises(kernelviz.KernelvizError, match=r"no layer|unknown layer|not a layer"):
        ablate(net, "conv9", [0], images, workers=0)
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.new("RGB", (16, 16)).save(flat / "a.png")
    with pytest.raises(kernelviz.KernelvizError, match="no classes"):
        ablate(net, "1", [0], flat, workers=0)

    class Exploding(nn.Module):  # the edit runs, then the model fails: the hooks still go
        def __init__(self) -> None:
            super().__init__()
            self.net = routed_net()
            self.calls = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            if self.calls > 2:
                raise RuntimeError("boom")
            return self.net(x)

    bad = kernelviz.set_model_meta(Exploding(), input_size=16, mean=(0, 0, 0), std=(1, 1, 1))
    kept = snapshot(bad)
    with pytest.raises(kernelviz.KernelvizError, match="boom"):
        ablate(bad, "net.1", [0], images, workers=0)
    assert_unchanged(bad, kept)
    assert_unchanged(net, before)


def test_folders_map_to_outputs_by_wordnet_id_by_name_or_by_order(tmp_path):
    def folders(*names: str) -> Path:
        root = tmp_path / "-".join(names)
        for name in names:
            (root / name).mkdir(parents=True)
            Image.new("RGB", (8, 8)).save(root / name / "0.png")
        return root

    subset = collection(folders("n01440764_tench", "n02085620", "n04037443_racer"))  # 3 of ImageNet's 1000
    assert class_outputs(subset, 1000)[0] == [0, 151, 751]
    named = collection(folders("cat", "Dog_house"))  # sorted: Dog_house, cat
    assert class_outputs(named, 3, ("dog house", "bird", "cat")) == ([0, 2], "folders matched by name to the "
                                                                             "model's categories")  # fmt: skip
    assert class_outputs(named, 2)[0] == [0, 1]
    with pytest.raises(kernelviz.KernelvizError, match="1 class folder"):
        class_outputs(named, 3, ("dog house", "bird", "fish"))
    with pytest.raises(kernelviz.KernelvizError, match="cannot tell which of the model's 5 outputs"):
        class_outputs(named, 5)


def test_zeroing_a_unit_of_the_last_feature_map_moves_the_logits_by_the_heads_weight_times_its_mean(real_model):
    """EfficientNet-Lite0's head is the spatial mean of ``_swish#2`` then a Linear (dropout off in eval): zeroing
    unit u moves the logits by exactly -W[:, u] * mean(u) (float tolerance), on two photos."""
    from kernelviz.zoo import COLOR_PHOTOS, photo

    x = torch.stack([photo(name) for name in COLOR_PHOTOS[:2]])
    x = kernelviz.model_meta(real_model).normalize(x)
    before = snapshot(real_model)
    maps = kernelviz.activations(real_model, x, "_swish#2")["_swish#2"]  # (2, 1280, 7, 7), hook-free reference below
    weight = real_model._fc.weight.detach()
    for unit in (0, 17, 1279):
        logits, zeroed = ablated_logits(real_model, "_swish#2", [unit], x)
        expected = weight[:, unit][None, :] * maps[:, unit].mean((1, 2))[:, None]  # (2, 1000)
        torch.testing.assert_close(logits - zeroed, expected, atol=2e-4, rtol=1e-3)
        assert (logits - zeroed).abs().max() > 0 or expected.abs().max() == 0
    assert_unchanged(real_model, before)


def test_the_ablate_command_prints_a_table_and_writes_json(cli, tmp_path):
    planted_images(tmp_path / "images")
    (tmp_path / "labels.csv").write_text("".join(f"images/red/red{i}.png,warm\n" for i in range(4)))
    net = "tests.units.test_ablation:routed_net"
    done = cli("ablate", net, "1", "0", "--images", "images", "-o", "red.json", "--labels", "labels.csv",
               "--workers", "0")  # fmt: skip
    assert done.exit_code == 0, done.output
    assert "zeroed unit 0 of 1 over 12 images" in done.output and "accuracy 100.0% -> 66.7%" in done.output
    assert "4 images changed their top-1" in done.output and "red" in done.output.split("most hurt")[1]
    record = json.loads((tmp_path / "red.json").read_text())
    assert record["classes"]["red"] == {"id": "red", "name": "red", "images": 4, "accuracy": [1.0, 0.0],
                                        "probability": [pytest.approx(record["classes"]["red"]["probability"][0]),
                                                        pytest.approx(1 / 3)]}  # fmt: skip
    assert record["labels"]["warm"]["accuracy"] == [1.0, 0.0] and record["hurt"] == ["red"]
    assert record["mode"] == "zero" and record["units"] == [0] and record["matching"].startswith("folder i")
    scaled = cli("ablate", net, "1", "0-2", "--images", "images", "--scale", "2", "--workers", "0")
    assert scaled.exit_code == 0 and "units 0-2 of 1 times 2" in scaled.output, scaled.output
    both = cli("ablate", net, "1", "0", "--images", "images", "--scale", "2", "--mode", "mean")
    assert both.exit_code != 0 and "--scale" in both.output
    out_of_range = cli("ablate", net, "1", "9", "--images", "images", "--workers", "0")
    assert out_of_range.exit_code == 1 and "unit 9 out of range" in out_of_range.output


def test_scaling_curve_moves_one_photos_prediction_with_its_unit(tmp_path):
    """Known answers on the routed toy: a red square's red probability at 1x is the untouched model's, at 0x a third
    (its logit gone), and it grows with the factor; the model is left as it was."""
    from kernelviz.units.ablation import scaling_curve

    planted_images(tmp_path / "images")
    net = routed_net()
    before = snapshot(net)
    image = kernelviz.load_image(tmp_path / "images" / "red" / "red0.png", 16)
    curve = scaling_curve(net, "1", 0, image)
    assert_unchanged(net, before)
    assert curve["factors"] == [0.0, 0.5, 1.0, 2.0, 3.0, 4.0]
    red = next(c for c in curve["classes"] if c["index"] == 2)  # output 2 is red
    with torch.no_grad():
        untouched = net(image[None]).softmax(1)[0, 2]
    assert red["p"][2] == pytest.approx(float(untouched), abs=1e-6) and red["p"][0] == pytest.approx(1 / 3)
    assert red["p"] == sorted(red["p"]) and curve["classes"][0]["index"] == 2
    with pytest.raises(kernelviz.KernelvizError, match="out of range"):
        scaling_curve(net, "1", 9, image)


@contextlib.contextmanager
def routed_explorer(tmp_path: Path, **settings: object) -> Iterator[tuple[object, object]]:
    """The explorer of :func:`routed_net` with its 12 planted images as ``--images`` (``settings``: optimization
    settings to change), and a client that holds its token; the worker stopped on exit."""
    pytest.importorskip("starlette")
    from starlette.testclient import TestClient

    from kernelviz.optvis.settings import DEFAULTS
    from kernelviz.serve.app import create_app
    from kernelviz.serve.explorer import Explorer

    images = planted_images(tmp_path / "images")
    ex = Explorer(routed_net(), tmp_path / "atlas", images=Path(images), settings=DEFAULTS.with_(**settings))
    try:
        client = TestClient(create_app(ex, "token"))
        client.get("/?token=token")
        yield ex, client
    finally:
        ex.worker.stop()


def test_the_explorer_switches_a_unit_off_and_scales_it_on_a_photo(tmp_path):
    with routed_explorer(tmp_path, steps=2) as (ex, client):
        for batch in ex.request_filters("1", [0]):
            batch.result(timeout=120)
        unit = client.get("/filter/1/0").text
        assert 'data-ablate="zero"' in unit and 'id="trust-pending"' not in unit  # 12 images: too few to calibrate
        assert "no path check: it calibrates on 32 or more images" in unit
        assert client.post("/api/ablate", json={"layer": "1", "filter": 0, "kind": "zero"}).json() == {"queued": True}
        ex.request_ablation("1", 0, "zero").result(timeout=120)
        page = client.get("/filter/1/0").text
        assert "switched off</b>: accuracy 100.0% &rarr; 66.7% over 12 images" in page
        assert "<td>red</td><td>" in page  # the class most hurt, with its probability before and after
        assert client.post("/api/ablate", json={"layer": "1", "filter": 0, "kind": "x9"}).status_code == 404
        photo = client.get("/image", params={"pick": "red/red0.png", "scale_layer": "1", "scale_unit": "0"}).text
        assert "<th>0x</th>" in photo and "<th>4x</th>" in photo and "scale it from 0 to 4x" in photo
        assert "scale_layer=0&amp;scale_unit=0#scaled" in photo  # each unit that fires on it links to its curve
        bad = client.get("/image", params={"pick": "red/red0.png", "scale_layer": "1", "scale_unit": "99"}).text
        assert "out of range" in bad or "filter 99" in bad


def test_the_groups_that_moved_most_either_way_come_first():
    from kernelviz.serve.views import _moved_groups

    groups = {
        "dog": {"images": 9, "probability": [0.9, 0.5]},
        "bird": {"images": 2, "probability": [0.3, 0.45]},
        "fish": {"images": 3, "probability": [0.5, 0.49]},
        "broken": {"images": 1, "probability": [None, None]},  # no readable image: left out
    }
    assert [(g["name"], g["before"], g["after"]) for g in _moved_groups(groups, 2)] == [
        ("dog", "0.900", "0.500"),
        ("bird", "0.300", "0.450"),
    ]
