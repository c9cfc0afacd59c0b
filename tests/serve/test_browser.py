"""The explorer in a real browser: Playwright drives the system Chromium through the whole tour."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("playwright")
pytest.importorskip("uvicorn")

TOUR = Path(__file__).parents[2] / "docs" / "serve_tour.py"


def _tour():
    spec = importlib.util.spec_from_file_location("serve_tour", TOUR)
    module = importlib.util.module_from_spec(spec)
    sys.modules["serve_tour"] = module
    spec.loader.exec_module(module)
    return module


def test_the_whole_tour_in_chromium(tmp_path):
    tour = _tour()
    if tour.chromium_path() is None:
        pytest.skip("no system Chromium (.ci/run installs it: apt-get install chromium)")
    import kernelviz
    from kernelviz.serve.app import create_app
    from kernelviz.serve.explorer import Explorer

    from ..nets import tiny_vgg

    settings = kernelviz.DEFAULTS.with_(steps=8, size=32)
    explorer = Explorer(tiny_vgg(), tmp_path / "atlas" / "tiny_vgg", settings=settings)
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(photo)
    with tour.running(create_app(explorer, "tok")) as base:
        seen = tour.tour(base, "tok", "conv2_1", photo, timeout_s=120)
    explorer.worker.stop()
    assert seen["console_errors"] == []
    assert set(seen["pages"]) == {"model", "layer", "filter", "image"}
    assert seen["pages"]["layer"]["images"] >= 16  # every thumbnail of conv2_1 arrived and loaded
    assert seen["pages"]["filter"]["images"] >= 2  # the picture and its kernel
    assert "filter 3" in seen["pages"]["filter"]["title"]
    assert sorted(explorer.done("conv2_1")) == list(range(16))
    reopened = seen["reopened"]  # the image page's URL kept method and layer, and reopened to them
    assert "method=saliency" in reopened["url"] and reopened["method"] == "saliency"
    assert reopened["layer"] == reopened["maps_layer"] != "conv1_1"
