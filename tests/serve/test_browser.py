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
    root = tmp_path / "atlas" / "tiny_vgg"
    explorer = Explorer(tiny_vgg(), root, settings=settings)
    explorer.preview = settings.with_(steps=2, size=24, batch_size=8)  # as quick as previews are, next to these
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(photo)
    token, port = "a-fixed-token-for-notes", tour.free_port()  # as `kernelviz serve --token ... --port ...`
    with tour.running(create_app(explorer, token), port) as base:
        seen = tour.tour(base, token, "conv2_1", photo, timeout_s=120, block="features")
    explorer.worker.stop()
    assert seen["console_errors"] == []
    assert set(seen["pages"]) == {"model", "layer", "filter", "block", "block_filter", "image"}
    sources = {name: shown["event_sources"] for name, shown in seen["pages"].items()}
    assert sources == {"model": 0, "layer": 1, "filter": 1, "block": 1, "block_filter": 1, "image": 1}, sources
    # a block output: its layer page filled with pictures, its filter page linked to what it comes from
    assert seen["pages"]["block"]["images"] >= 32 and "features" in seen["pages"]["block"]["title"]
    assert sorted(explorer.done("features")) == list(range(32))
    assert "computed from" in seen["block_filter_text"] and "conv3_2 filter 0" in seen["block_filter_text"]
    # a restart with the same token: URLs saved before open again, in a browser that has no cookie
    saved = [f"{base}/?token={token}", f"{seen['pages']['filter']['url']}?token={token}", seen["reopened"]["url"]]
    restarted = Explorer(tiny_vgg(), root, settings=settings)
    with tour.running(create_app(restarted, token), port) as again:
        assert again == base
        back = tour.reopen([*saved[:2], f"{saved[2]}&token={token}"])
        wrong = tour.reopen([f"{base}/?token=another-token-entirely"])
    restarted.worker.stop()
    assert back["console_errors"] == [] and [p["status"] for p in back["pages"]] == [200, 200, 200]
    assert "filter 3" in back["pages"][1]["title"] and back["pages"][1]["images"] >= 2  # the picture kept on disk
    assert wrong["pages"][0]["status"] == 403
    assert seen["pages"]["layer"]["images"] >= 16  # every thumbnail of conv2_1 arrived and loaded
    assert seen["pages"]["filter"]["images"] >= 2  # the picture and its kernel
    assert "filter 3" in seen["pages"]["filter"]["title"]
    assert sorted(explorer.done("conv2_1")) == list(range(16))
    reopened = seen["reopened"]  # the image page's URL kept method and layer, and reopened to them
    assert "method=saliency" in reopened["url"] and reopened["method"] == "saliency"
    assert reopened["layer"] == reopened["maps_layer"] != "conv1_1"
    assert seen["layer_previews"] == 16  # a quick preview of each filter came first, then its picture
    width, height = seen["caricature"]  # the image and its caricatures at 5 depths, side by side
    assert width > 3 * height > 0  # (one caricature beside the image: about 1.3 to 1)
    accentuated = seen["accentuated"]  # from the image page's filter link, the photo offered first
    assert "upload=" in accentuated["url"] and accentuated["photo"] in accentuated["url"]
    assert accentuated["size"][0] > accentuated["size"][1] > 0  # the photo and its accentuation


def test_the_tour_on_a_vision_transformer(tmp_path):
    """The same tour on a (tiny, random) ViT: the MLP units of a block on its 4 x 4 patch grid get layer and filter
    pages, a block's token output too, and the image page's heatmap and maps work at a token layer."""
    tour = _tour()
    if tour.chromium_path() is None:
        pytest.skip("no system Chromium (.ci/run installs it: apt-get install chromium)")
    timm = pytest.importorskip("timm")
    import torch

    import kernelviz
    from kernelviz.serve.app import create_app
    from kernelviz.serve.explorer import Explorer

    torch.manual_seed(0)
    vit = timm.models.vision_transformer.VisionTransformer(
        img_size=64, patch_size=16, embed_dim=32, depth=2, num_heads=2, mlp_ratio=1.0, num_classes=5
    ).eval()
    vit = kernelviz.set_model_meta(vit, name="tiny_vit", input_size=64, mean=(0.5,) * 3, std=(0.25,) * 3)
    settings = kernelviz.DEFAULTS.with_(steps=8)
    explorer = Explorer(vit, tmp_path / "atlas" / "tiny_vit", settings=settings)
    explorer.preview = settings.with_(steps=2, batch_size=8)
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(photo)
    with tour.running(create_app(explorer, "vit-token")) as base:
        seen = tour.tour(base, "vit-token", "blocks.1.mlp.act", photo, timeout_s=120, block="blocks.0")
    explorer.worker.stop()
    assert seen["console_errors"] == []
    assert sorted(explorer.done("blocks.1.mlp.act")) == list(range(32))  # every unit of the layer's page
    assert "blocks.0" in seen["pages"]["block"]["title"] and seen["pages"]["block"]["images"] >= 32
    assert seen["pages"]["filter"]["images"] >= 1 and "filter 3" in seen["pages"]["filter"]["title"]
    assert (
        explorer.wiring.computed_from("blocks.1.mlp.act") is None
    )  # it rectifies mlp.fc1's output, not the patch conv's
    from kernelviz.serve.pages import page
    from kernelviz.serve.views import layer_view, model_view

    assert "output 17x32 (read as 32 units on the 4x4 patch grid, 1 prefix token left out)" in page(
        "layer", layer_view(explorer, "blocks.1.mlp.act")
    )
    assert "<td>17x32</td><td>32</td><td>4x4 +1 token</td>" in page("model", model_view(explorer))
