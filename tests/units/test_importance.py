"""What each unit matters for: the first-order estimate against known answers, exact ablation, and on the pages."""

from __future__ import annotations

import json
import math

import pytest
import torch

import kernelviz
from kernelviz.errors import KernelvizError
from kernelviz.units.importance import exact_drops, unit_importance

from ..conftest import assert_unchanged, snapshot
from .test_ablation import routed_explorer, routed_net
from .test_statistics import planted_images

ROUTED = "tests.units.test_ablation:routed_net"


def test_each_unit_carries_its_own_class_by_the_softmax_derivative(tmp_path):
    """Known answer: on the routed toy, image i of class k has logits (z, 0, 0) up to order with z = 100 x the mean
    of its unit; the first-order drop of p_k when that unit goes to 0 is p_k (1 - p_k) z, and 0 for every other
    unit. The ranking agrees with exact ablation (which is 2/3 for the own unit, 0 for the others)."""
    images = planted_images(tmp_path / "images")
    net = routed_net()
    before = snapshot(net)
    found = unit_importance(net, "1", images, workers=0)
    assert_unchanged(net, before)
    assert found.names == ["blue", "green", "red"] and found.kinds == ["class"] * 3 and found.images.tolist() == [4] * 3
    x = torch.stack([kernelviz.load_image(f, 16) for f in sorted((tmp_path / "images").rglob("*.png"))])
    z = 100 * x.mean((2, 3))  # (N, 3) the units' means times the head's weight, per colour channel
    own = z.max(1).values.double()
    rest = 2 / (own.exp() + 2)  # 1 - p, exact in float64 (about 1e-4: float32's softmax holds it to ~5e-4)
    expected = ((1 - rest) * rest * own).float()
    carried = found.per_image.max(1).values
    torch.testing.assert_close(carried, expected, rtol=2e-3, atol=0)
    for unit, colour in ((0, "red"), (1, "green"), (2, "blue")):
        assert found.top(unit)[0][1] == colour and found.top(unit)[0][2] > 0
        assert [v for _, _, v, _ in found.top(unit)[1:]] == [0.0, 0.0]
    assert found.carried(3) == 0.0  # the unit that feeds no output carries nothing
    exact = exact_drops(net, "1", [0, 1, 2, 3], images, workers=0)
    for unit in range(4):
        assert torch.equal(exact[unit] > 0.1, found.per_image[:, unit] > 0)  # the same images, the same units
    record = found.unit_json(0)
    assert [c["name"] for c in record["classes"]] == ["red"] and "first-order" in record["estimate"]
    assert found.unit_json(3)["classes"] == []  # it carries nothing


def test_importance_refuses_what_it_cannot_read(tmp_path):
    images = planted_images(tmp_path / "images")
    with pytest.raises(KernelvizError, match="layer"):
        unit_importance(routed_net(), "nowhere", images, workers=0)
    with pytest.raises(KernelvizError, match="classes"):
        unit_importance(routed_net(), "1", sorted((tmp_path / "images").rglob("*.png")), workers=0)


def test_examples_importance_writes_it_into_units_json_and_the_pages_sort_by_it(cli, tmp_path):
    pytest.importorskip("starlette")
    from starlette.testclient import TestClient

    from kernelviz.serve.app import create_app
    from kernelviz.serve.explorer import Explorer

    planted_images(tmp_path / "images")
    done = cli("examples", ROUTED, "--images", "images", "-o", "out", "--layers", "1", "--workers", "0", "--quiet",
               "--importance")  # fmt: skip
    assert done.exit_code == 0, done.output
    assert "wrote what each unit of 1 matters for" in done.output
    root = tmp_path / "out" / "routed_net"
    data = json.loads((root / "1" / "units.json").read_text())
    assert [u["matters_for"]["classes"][0]["name"] for u in data["units"][:3]] == ["red", "green", "blue"]
    assert "first-order" in data["importance"]["estimate"] and data["units"][3]["carried"] == 0.0
    again = cli("examples", ROUTED, "--images", "images", "-o", "out", "--layers", "1", "--workers", "0", "--quiet",
                "--importance")  # fmt: skip
    assert "matters for" not in again.output  # the same scan and labels: kept
    table = cli("units", "out/routed_net", "--sort", "carried")
    assert table.exit_code == 0, table.output
    rows = [line.split() for line in table.output.splitlines()[2:]]
    assert "matters most for" in table.output and [r[0] for r in rows][-1] == "3" and "red" in table.output
    net = kernelviz.set_model_meta(routed_net(), name=ROUTED, weights="default")
    ex = Explorer(net, root)
    try:
        client = TestClient(create_app(ex, "token"))
        client.get("/?token=token")
        layer = client.get("/layer/1").text
        rows = [line for line in layer.splitlines() if line.startswith("<tr data-n=")]
        assert 'data-key="carried"' in layer and not math.isnan(float(rows[0].split('data-carried="')[1].split('"')[0]))
        assert 'data-n="3"' in rows[-1]  # the unit that carries nothing last
        unit = client.get("/filter/1/0").text
        assert "matters most for" in unit and "red +" in unit
    finally:
        ex.worker.stop()


def test_the_explorer_estimates_a_layers_importance_on_request(tmp_path):
    """With --images and no units.json yet: the layer page offers it; the request scans the layer, then writes what
    each unit matters for; the page then lists it, the units that carry most first."""
    with routed_explorer(tmp_path) as (ex, client):
        assert 'id="importance-button"' in client.get("/layer/1").text
        assert client.post("/api/importance", json={"layer": "1"}).json() == {"queued": True}
        ex.request_importance("1").result(timeout=120)
        layer = client.get("/layer/1").text
        assert 'data-key="carried"' in layer and 'id="importance-button"' not in layer
        rows = [line for line in layer.splitlines() if line.startswith("<tr data-n=")]
        assert 'data-n="3"' in rows[-1] and "red (+" in layer
        assert client.post("/api/importance", json={"layer": "nowhere"}).status_code == 404
