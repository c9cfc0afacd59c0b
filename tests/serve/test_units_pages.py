"""Unit statistics and labels on every front-end's pages: the atlas site's cards, the explorer's filter, layer, model
and search pages (and their JSON), every label escaped."""

from __future__ import annotations

import csv
import json

import pytest

import kernelviz

pytest.importorskip("starlette")
pytest.importorskip("httpx")
from starlette.testclient import TestClient

from kernelviz.serve.app import create_app
from kernelviz.serve.explorer import Explorer

from ..sets.test_site import EVIL, _Walk
from ..units.test_statistics import planted_images, planted_net

TOKEN = "s3cret-token"
NET = "tests.units.test_statistics:planted_net"
SVG = {"svg", "rect", "line", "text", "title"}


def _no_injection(html: str) -> None:
    assert EVIL not in html  # only ever escaped
    walk = _Walk()
    walk.feed(html)
    for tag, attrs in walk.tags:
        assert not any(name.startswith("on") for name, _ in attrs), (tag, attrs)
        assert tag != "img" or dict(attrs).get("src") != "x", attrs


@pytest.fixture
def atlas_with_units(cli, tmp_path):
    """planted_net's layer ``0`` scanned over 12 images of 3 classes, the red ones also labelled :data:`EVIL` by a
    label file; then its atlas (pictures of the 5 units) and site."""
    planted_images(tmp_path / "images")
    with (tmp_path / "labels.csv").open("w", newline="") as f:
        csv.writer(f).writerows([f"images/red/red{i}.png", EVIL] for i in range(4))  # EVIL quoted as CSV wants
    done = cli("examples", NET, "--images", "images", "--labels", "labels.csv", "-o", "out", "--layers", "0",
               "--workers", "0", "--quiet")  # fmt: skip
    assert done.exit_code == 0, done.output
    done = cli("atlas", NET, "-o", "out", "--layers", "0", "--filters", "all", "--size", "16", "--steps", "2",
               "--quiet")  # fmt: skip
    assert done.exit_code == 0, done.output
    return tmp_path / "out" / "planted_net"  # the folder named after the model as the CLI names it


def test_the_site_shows_each_units_statistics_histogram_and_labels(atlas_with_units):
    data = json.loads((atlas_with_units / "0" / "units.json").read_text())
    assert [u["labels"][0]["name"] for u in data["units"][:3]] == ["red", "green", "blue"]
    assert [(x["name"], x["kind"], x["auc"]) for x in data["units"][0]["labels"]] == [
        ("red", "class", 1.0),
        (EVIL, "label", 1.0),
    ]
    page = (atlas_with_units / "0" / "index.html").read_text()
    _no_injection(page)
    assert page.count('<svg class="histogram"') == 5 and "fires on 33.3% of the 12 images" in page
    assert "label: <b>green</b>" in page and "AUC 1.000" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page  # the label file's label, shown as text
    assert "dead</b>: above 0 on no image" in page and "dense</b>: above 0 on 95% or more" in page
    assert page.count('alt="quantile example"') > 0


def test_the_explorer_shows_them_sorts_filters_and_searches_by_label(atlas_with_units):
    net = kernelviz.set_model_meta(planted_net(), name=NET, weights="default")  # as the CLI loaded it
    ex = Explorer(net, atlas_with_units)  # the atlas's own settings
    client = TestClient(create_app(ex, TOKEN))
    try:
        client.get(f"/?token={TOKEN}")
        home = client.get("/").text
        assert 'action="/units"' in home  # the model page searches units by label
        layer = client.get("/layer/0").text
        _no_injection(layer)
        rows = [line for line in layer.splitlines() if line.startswith("<tr data-n=")]
        assert len(rows) == 5 and 'data-label="green"' in rows[1] and 'data-state="dead"' in rows[4]
        unit = client.get("/filter/0/1").text
        _no_injection(unit)
        assert "label: <b>green</b>" in unit and '<svg class="histogram"' in unit and "fires on 33.3%" in unit
        found = client.get("/units", params={"label": "green"}).text
        assert 'href="/filter/0/1"' in found and "1.000" in found
        assert "no unit is labelled like that" in client.get("/units", params={"label": "violet"}).text
        evil = client.get("/units", params={"label": EVIL}).text
        _no_injection(evil)
        assert 'href="/filter/0/0"' in evil  # the label searched for and shown, escaped
        as_json = client.get("/units", params={"label": "blue", "format": "json"}).json()
        assert [(f["layer"], f["unit"], f["auc"]) for f in as_json["found"]] == [("0", 2, "1.000")]
        filter_json = client.get("/filter/0/3", params={"format": "json"}).json()
        assert filter_json["stats"]["dense"] and filter_json["stats"]["label"] is None
    finally:
        ex.worker.stop()
