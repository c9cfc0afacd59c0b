"""The explorer over HTTP: every endpoint with good and bad requests, the token, traversal, the cache."""

from __future__ import annotations

import io
import json
import re
from html.parser import HTMLParser

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import kernelviz
from kernelviz.core.models import model_meta, model_slug
from kernelviz.errors import KernelvizError
from kernelviz.sets.atlas import atlas

pytest.importorskip("starlette")
pytest.importorskip("httpx")
from starlette.testclient import TestClient

from kernelviz.serve.app import COOKIE, create_app
from kernelviz.serve.explorer import Explorer

from ..nets import tiny_vgg
from ..sets.test_site import EVIL, _Walk, evil_net

TOKEN = "s3cret-token"
FAST = {"steps": 4, "size": 32}


def _explorer(tmp_path, model=None, **kwargs) -> Explorer:
    net = model if model is not None else tiny_vgg()
    settings = kernelviz.OptimSettings.from_json({**kernelviz.DEFAULTS.to_json(), **FAST})
    return Explorer(net, tmp_path / "atlas" / model_slug(model_meta(net).name), settings=settings, **kwargs)


@pytest.fixture
def served(tmp_path):
    ex = _explorer(tmp_path, images=_photos(tmp_path))
    client = TestClient(create_app(ex, TOKEN))
    client.get(f"/?token={TOKEN}")  # sets the cookie
    yield ex, client
    ex.worker.stop()


def _photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(folder / f"p{i}.png")
    return folder


def _png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((36, 36, 3), 120, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_token_is_required_everywhere(tmp_path):
    ex = _explorer(tmp_path)
    client = TestClient(create_app(ex, TOKEN))
    for path in ("/", "/layer/conv1_1", "/filter/conv1_1/0", "/image", "/files/settings.json", "/api/status/conv1_1"):
        response = client.get(path)
        assert response.status_code == 403, path
        assert "token is required" in response.text
    assert client.get("/?token=wrong").status_code == 403
    assert client.post("/api/compute", json={"layer": "conv1_1", "filters": [0]}).status_code == 403
    assert client.get("/static/app.js").status_code == 200  # page assets hold nothing of the model
    ok = client.get(f"/?token={TOKEN}")
    assert ok.status_code == 200 and COOKIE in ok.cookies
    assert client.get("/layer/conv1_1").status_code == 200  # the cookie from now on
    header = TestClient(create_app(ex, TOKEN)).get("/", headers={"x-kernelviz-token": TOKEN})
    assert header.status_code == 200
    assert TestClient(create_app(ex, None)).get("/").status_code == 200  # --no-token
    ex.worker.stop()


def test_model_layer_and_filter_pages(served):
    ex, client = served
    home = client.get("/").text
    assert "depth 9" in home and 'href="/layer/conv1_1"' in home and "RF" in home
    for other in ("relu1_1", "pool1", "features"):  # an activation, a pooling layer, a block: each has its page
        assert f'href="/layer/{other}"' in home and client.get(f"/layer/{other}").status_code == 200, other
    layer = client.get("/layer/conv2_1")
    assert layer.status_code == 200 and 'data-missing="[' in layer.text and 'id="f15"' in layer.text
    assert "fourier image (detail 0.57, decay 1.25), 4 steps" in layer.text  # what shapes the pictures
    response = client.post("/api/compute", json={"layer": "conv2_1", "filters": [0, 1, 9]})
    assert response.status_code == 200 and response.json()["batches"] >= 1
    for future in ex.request_filters("conv2_1", [0, 1, 9]) or []:
        future.result(timeout=120)
    ex.worker.wait_idle(timeout=120)  # the queue is drained
    done = client.get("/api/status/conv2_1").json()["done"]
    assert {0, 1, 9} <= set(done)
    page = client.get("/filter/conv2_1/1").text
    assert "mean activation" in page and "<svg" in page and "fed most by" in page
    assert 'href="/filter/conv1_2/' in page  # the channels of the previous conv layer that feed it
    kernel = client.get("/api/kernel/conv2_1/1.png")
    assert kernel.status_code == 200 and kernel.headers["content-type"] == "image/png"
    src = "/files/conv2_1/0001.png"
    assert src in page and client.get(src).status_code == 200


def test_bad_requests_are_clear_and_the_server_goes_on(served):
    _, client = served
    unknown = client.get("/layer/conv9_9")
    assert unknown.status_code == 404 and "unknown layer" in unknown.text
    assert "out of range" in client.get("/filter/conv1_1/99").text
    assert "whole number" in client.get("/filter/conv1_1/x").text
    assert client.get("/layer/fc6").status_code == 400  # not a convolution
    bad = client.post("/api/compute", content=b"{nope")
    assert bad.status_code == 400 and "not JSON" in bad.json()["error"]
    assert client.post("/api/compute", json={"layer": "conv1_1", "filters": "all"}).status_code == 400
    assert "unknown variant" in client.post("/api/variant", json={"layer": "conv1_1", "filter": 0, "variant": "x"}).text
    assert client.get("/").status_code == 200  # still serving


@pytest.mark.parametrize(
    "path",
    [
        "/files/../tiny_vgg/settings.json",
        "/files/%2e%2e/%2e%2e/secret.txt",
        "/files/..%2f..%2fsecret.txt",
        "/files//etc/passwd",
        "/files/conv1_1/../../../secret.txt",
    ],
)
def test_no_file_outside_the_atlas_can_be_read(served, tmp_path, path):
    (tmp_path / "secret.txt").write_text("do not serve")
    _, client = served
    response = client.get(path)
    assert "do not serve" not in response.text
    assert response.status_code in (400, 404)


def test_uploads_and_image_endpoints(served):
    _, client = served
    response = client.post("/image", files={"file": ("a.png", _png_bytes(), "image/png")}, follow_redirects=False)
    assert response.status_code == 303
    page = client.get(response.headers["location"])
    assert page.status_code == 200 and "top-5" in page.text and "filters that fire most" in page.text
    assert page.text.count('class="thumb wait" data-layer="conv1_1"') == 6  # the top units, as (empty) thumbnails
    assert '<option value="features">' in page.text  # feature maps of every layer with a page
    assert 'data-slot="caricature"' in page.text and "every depth (conv1_1, " in page.text
    upload = response.headers["location"].split("=")[1]
    assert re.search(rf'href="/filter/conv1_1/\d+\?upload={upload}"', page.text)  # the photo goes along
    for url in (
        f"/api/image.png?upload={upload}",
        f"/api/heatmap.png?upload={upload}&method=gradcam&target=3",
        f"/api/heatmap.png?upload={upload}&method=saliency&filter=conv2_1:3",
        f"/api/maps.png?upload={upload}&layer=conv1_1",
        f"/api/maps.png?upload={upload}&layer=features",  # a block's output
        f"/api/maps.png?upload={upload}&layer=relu2_1",  # an activation
        f"/api/photo.png?upload={upload}&kind=caricature&layer=conv2_1",  # what the layer keeps of the image
    ):
        got = client.get(url)
        assert got.status_code == 200 and got.content[:4] == b"\x89PNG", (url, got.text[:200])
    assert "unknown method" in client.get(f"/api/heatmap.png?upload={upload}&method=nope").json()["error"]
    assert "no class names" in client.get(f"/api/heatmap.png?upload={upload}&target=tabby").json()["error"]
    assert client.get("/image?pick=p1.png").status_code == 200
    kept = client.get(f"/image?upload={upload}&layer=conv2_1").text  # the maps' layer, kept in the URL
    maps_form, caricature_form = kept.split('id="maps-form"')[1], kept.split('data-slot="caricature"')[1]
    assert '<option value="conv2_1" selected>' in maps_form.split("</form>")[0]
    layer_choice = caricature_form.split('name="layer"')[1].split("</select>")[0]
    assert " selected" not in layer_choice and "every depth" in layer_choice  # the caricature starts at every depth
    assert client.get("/image?pick=../atlas/tiny_vgg/settings.json").status_code in (400, 404)
    assert client.get("/api/image.png?upload=../../x").status_code == 404
    broken = client.post("/image", files={"file": ("b.png", b"not an image at all", "image/png")})
    assert broken.status_code == 400 and "not an image kernelviz can read" in broken.text
    empty = client.post("/image", files={"file": ("c.png", b"", "image/png")})
    assert empty.status_code == 400 and "empty" in empty.text


def test_upload_size_is_limited(served, monkeypatch):
    import kernelviz.serve.app as app_module
    import kernelviz.serve.photos as photos_module

    monkeypatch.setattr(photos_module, "MAX_UPLOAD", 1000)
    monkeypatch.setattr(app_module, "MAX_UPLOAD", 1000)
    _, client = served
    response = client.post("/image", files={"file": ("big.png", b"x" * 5000, "image/png")})
    assert response.status_code == 400 and "limited to" in response.text


def test_a_unit_asked_twice_is_computed_once_and_the_cache_is_an_atlas(tmp_path):
    ex = _explorer(tmp_path)
    first = ex.request_filters("conv1_1", [0, 1])
    second = ex.request_filters("conv1_1", [1, 2])  # the same atlas batch (filters 0-7)
    assert first and second and first[0] is second[0]
    first[0].result(timeout=120)
    assert ex.request_filters("conv1_1", [3]) == []  # on disk now: nothing to queue
    assert ex.worker.runs[("batch", "conv1_1", 0)] == 1
    ex.worker.stop()
    # kernelviz atlas with the same settings finds those filters done and finishes the rest
    report = atlas(ex.model, tmp_path / "atlas", ex.optim, layers=["conv1_1"])
    assert report.skipped == 8 and report.computed == 0 and report.index_written
    # and a restarted explorer on a finished atlas has every picture without computing
    again = Explorer(tiny_vgg(), ex.root)
    assert again.done("conv1_1") == list(range(8)) and again.request_filters("conv1_1", list(range(8))) == []
    again.worker.stop()
    with pytest.raises(KernelvizError, match="other settings"):
        Explorer(tiny_vgg(), ex.root, settings=kernelviz.DEFAULTS.with_(steps=7))


class _Exploding(nn.Module):
    """Its conv2 weights are NaN: every optimization of conv2 fails."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        with torch.no_grad():
            self.conv2.weight.fill_(float("nan"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(torch.relu(self.conv1(x)))


def test_a_failing_computation_is_reported_and_the_worker_goes_on(tmp_path):
    ex = _explorer(tmp_path, model=_Exploding())
    said: list[dict] = []
    ex.worker.subscribe(said.append)
    failed = ex.request_filters("conv2", [0])[0]
    with pytest.raises(KernelvizError):
        failed.result(timeout=120)
    assert any(e["type"] == "error" and "NaN or infinite" in e["message"] for e in said), said
    fine = ex.request_filters("conv1", [0])[0]
    assert fine.result(timeout=120) == 4  # the next task runs
    ex.worker.stop()


def test_every_name_is_escaped(tmp_path):
    ex = _explorer(tmp_path, model=evil_net())
    client = TestClient(create_app(ex, None))
    pages = [client.get("/").text]
    link = next(a for a in _links(pages[0]) if a.startswith("/layer/"))
    pages.append(client.get(link).text)
    ex.request_filters(EVIL, [0])[0].result(timeout=120)
    pages.append(client.get(link.replace("/layer/", "/filter/") + "/0").text)
    for page in pages:
        walk = _Walk()
        walk.feed(page)
        assert "img" not in {t for t, a in walk.tags if any(k == "onerror" for k, _ in a)}
        assert not any(k.startswith("on") for _, attrs in walk.tags for k, _ in attrs), page
        assert EVIL not in page  # only ever escaped
    assert client.get(link).status_code == 200
    ex.worker.stop()


def _links(page: str) -> list[str]:
    found: list[str] = []

    class Links(HTMLParser):
        def handle_starttag(self, tag, attrs):
            found.extend(v for k, v in attrs if k == "href" and v)

    Links().feed(page)
    return found


def test_events_reach_subscribers_and_a_closed_one_is_dropped(tmp_path):
    ex = _explorer(tmp_path)
    got: list[dict] = []

    def closed(event: dict) -> None:
        raise RuntimeError("client went away")

    ex.worker.subscribe(got.append)
    ex.worker.subscribe(closed)
    ex.request_filters("conv1_1", [0])[0].result(timeout=120)
    kinds = [e["type"] for e in got]
    assert kinds[0] == "progress" and kinds.count("done") == 8
    done = [e for e in got if e["type"] == "done"]
    assert done[0]["src"] == "/files/conv1_1/0000.png" and isinstance(done[0]["value"], float)
    assert json.dumps(got)  # JSON-ready for the event stream
    assert closed not in ex.worker._listeners
    ex.worker.stop()


def test_serve_command_prints_its_url_and_binds_locally(cli, monkeypatch, tmp_path):
    import uvicorn

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(kw))
    result = cli("serve", "MODEL", "--weights", "random", "--atlas", str(tmp_path / "at"), "--port", "8123")
    assert result.exit_code == 0, result.output
    assert calls == [{"host": "127.0.0.1", "port": 8123, "log_level": "warning"}]
    assert "http://localhost:8123/?token=" in result.output
    assert (tmp_path / "at" / "tiny_vgg" / "settings.json").exists()  # the cache is an atlas folder
    exposed = cli(
        "serve", "MODEL", "--weights", "random", "--host", "0.0.0.0", "--no-token", "--atlas", str(tmp_path / "at")
    )
    assert "warning: binding 0.0.0.0 exposes the explorer" in exposed.output
    assert "http://0.0.0.0:8765/\n" in exposed.output  # no token asked for
    missing = cli("serve", "MODEL", "--weights", "random", "--images", str(tmp_path / "nowhere"))
    assert missing.exit_code == 2 and "does not exist" in missing.output


def test_feeders_of_a_depthwise_filter_are_its_own_channels(tmp_path):
    """A depthwise filter reads one channel of the layer before: the one with its own index."""
    net = nn.Sequential()
    net.add_module("stem", nn.Conv2d(3, 6, 3, padding=1))
    net.add_module("depthwise", nn.Conv2d(6, 6, 3, padding=1, groups=6))
    net.add_module("grouped", nn.Conv2d(6, 4, 1, groups=2))
    ex = _explorer(tmp_path, model=net)
    assert [(u.layer, u.unit) for u in ex.wiring.feeders("depthwise", 4)] == [("stem", 4)]
    assert {u.unit for u in ex.wiring.feeders("grouped", 3)} == {3, 4, 5}  # the second group's inputs
    assert {u.layer for u in ex.wiring.feeders("stem", 0)} == {None}  # the image
    ex.worker.stop()


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(6, 6, 3, padding=1)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.act(self.conv(x))


def _residual_net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential()
    net.add_module("stem", nn.Conv2d(3, 6, 3, padding=1))
    net.add_module("block", _Residual())
    net.add_module("head", nn.Conv2d(6, 4, 1))
    with torch.no_grad():  # head filter f reads channel c with weight HEAD[f, c]
        net.head.weight.copy_(HEAD[:, :, None, None])
    return kernelviz.set_model_meta(net.eval(), name="residual", input_size=32)


HEAD = torch.tensor(
    [
        [0.1, -0.9, 0.3, 0.0, 0.5, -0.2],
        [0.7, 0.2, -0.4, 0.6, 0.0, 0.1],
        [-0.3, 0.5, 0.8, -0.1, 0.2, 0.0],
        [0.0, 0.1, -0.6, 0.9, -0.3, 0.4],
    ]
)


def test_block_outputs_and_activations_have_pages_linked_to_their_neighbours(tmp_path):
    """A block's output and an activation get a layer page, filter pages and pictures like a convolution; a unit
    links to the filter it is computed from, the filters it feeds most (by weight: known here) and, for a
    convolution, its strongest inputs (brute force)."""
    ex = _explorer(tmp_path, model=_residual_net())
    client = TestClient(create_app(ex, None))
    assert [r.name for r in ex.unit_layers()] == ["stem", "block.conv", "block.act", "block", "head"]
    home = client.get("/").text
    assert 'href="/layer/block"' in home and 'href="/layer/block.act"' in home and "(block)" in home
    # what a channel is computed from, what it feeds, and a convolution's strongest inputs
    assert ex.wiring.computed_from("block") == ex.wiring.computed_from("block.act") == "block.conv"
    assert ex.wiring.computed_from("head") is None
    for c in range(6):
        expect = sorted(range(4), key=lambda f: (-abs(float(HEAD[f, c])), f))[:3]
        assert [u.unit for u in ex.wiring.feeds_into("block", c, k=3)] == expect
        assert {u.layer for u in ex.wiring.feeds_into("block", c)} == {"head"}
    w = ex.model.block.conv.weight
    norms = w[1].flatten(1).norm(dim=1)
    assert ex.wiring.strongest_inputs("block.conv", 1, k=6) == norms.argsort(descending=True).tolist()
    assert [u.layer for u in ex.wiring.feeds_into("stem", 0)] == ["block.conv"] * 6
    assert ex.wiring.feeds_into("head", 0) == []  # the network's end
    # the block's pages: its pictures are made like any others'
    assert client.get("/layer/block").status_code == 200
    assert "channel n is computed from filter n of" in client.get("/layer/block").text
    assert client.post("/api/compute", json={"layer": "block", "filters": [2]}).status_code == 200
    ex.worker.wait_idle(timeout=120)
    record = ex.folder.record("block", 2)
    assert record is not None and record["layer"] == "block"
    page = client.get("/filter/block/2").text
    assert "computed from" in page and 'href="/filter/block.conv/2"' in page and "feeds most" in page
    assert 'href="/filter/head/' in page and "/api/kernel/" not in page  # no kernel: not a convolution
    assert 'class="thumb wait" data-layer="head"' in page and "make the 4 missing pictures" in page
    assert client.get("/api/kernel/block/2.png").status_code == 404
    assert client.get("/api/kernel/block.conv/2.png").status_code == 200
    conv = client.get("/filter/block.conv/2").text
    assert "fed most by" in conv and 'href="/filter/stem/' in conv and 'href="/filter/block/' not in conv
    # a neighbour made since shows its picture
    for future in ex.request_filters("head", [0]):
        future.result(timeout=120)
    assert '<img class="thumb" data-layer="head" data-filter="0"' in client.get("/filter/block/2").text
    ex.worker.stop()


def test_variants_and_dataset_examples_on_the_filter_page(served):
    """Each variant button makes its picture under <layer>/variants/ (the atlas ignores it); with --images the
    filter page shows the real images that excite the filter, cropped at its receptive field."""
    ex, client = served
    for kind in ("seed", "pixel", "maco", "fine", "steps", "diversity", "negative"):
        assert client.post("/api/variant", json={"layer": "conv2_1", "filter": 2, "variant": kind}).status_code == 200
    ex.worker.wait_idle(timeout=300)
    made = ex.variants("conv2_1", 2)
    assert set(made) == {"seed", "pixel", "maco", "fine", "steps", "diversity", "negative"}
    records = {k: json.loads(p.with_suffix(".json").read_text()) for k, p in made.items()}
    assert records["seed"]["settings"]["seed"] == ex.optim.seed + 1
    assert records["pixel"]["settings"]["param"] == "pixel" and records["steps"]["settings"]["steps"] == 8
    assert (records["fine"]["settings"]["detail"], records["fine"]["settings"]["decay"]) == (1.0, 1.0)
    assert records["diversity"]["diversity_weight"] > 0
    negative = records["negative"]
    assert negative["negative"] is True and negative["final_value"] < records["seed"]["final_value"]
    page = client.get("/filter/conv2_1/2").text
    assert page.count("/files/conv2_1/variants/") == 7
    assert f"mean activation {records['pixel']['final_value']:.4g}</p>" in page  # each variant's activation
    batch = ", ".join(f"{v:.4g}" for v in records["diversity"]["batch_final_values"])
    assert len(records["diversity"]["batch_final_values"]) == 4 and f"mean activation {batch}</p>" in page
    assert "find the images of --images" in page
    assert client.post("/api/examples", json={"layer": "conv2_1"}).status_code == 200
    ex.worker.wait_idle(timeout=300)
    page = client.get("/filter/conv2_1/2").text
    assert page.count('alt="example"') == 3 * 3 and "synthesized / best natural max" in page  # top, mean, bottom
    best = ex.examples("conv2_1")["filters"]["2"][0]["value"]
    quantiles = page.count('alt="quantile example"')  # the unit's statistics: images around its quantiles
    assert quantiles > 0 and "fires on" in page
    assert page.count("<figcaption>") == 9 + quantiles and f"<figcaption>{best:.3g}</figcaption>" in page  # values
    assert "highest mean activation" in page and "most negative" in page
    crop = page.split('alt="example"')[0].rsplit('src="', 1)[1].split('"')[0]
    assert client.get(crop).status_code == 200


def test_client_errors_are_400_or_404_never_500(served):
    """Faults a client can send: null bytes in paths, broken uploads, JSON nested past Python's limit, filters
    out of range. Each is refused as the client's error, in words."""
    _, client = served
    assert client.get("/files/a%00b.png").status_code == 404
    assert client.get("/api/image.png?pick=p0.png%00.png").status_code == 404
    png = _png_bytes()
    two = [("file", ("a.png", png, "image/png")), ("file", ("b.png", png, "image/png"))]
    response = client.post("/image", files=two)
    assert response.status_code == 400 and "could not be read" in response.text
    garbage = client.post(
        "/image", content=b"--xx\r\nnot a part", headers={"content-type": "multipart/form-data; boundary=xx"}
    )
    assert garbage.status_code == 400
    nested = client.post("/api/compute", content=b"[" * 100_000 + b"]" * 100_000)
    assert nested.status_code == 400 and "nested too deeply" in nested.json()["error"]
    for bad in (8, -1):  # conv1_1 of the tiny network has 8 filters
        response = client.post("/api/compute", json={"layer": "conv1_1", "filters": [0, bad]})
        assert response.status_code == 400 and "0-7" in response.json()["error"], bad
    assert client.post("/api/compute", json={"layer": "no_such", "filters": [0]}).status_code == 404


def test_a_layer_named_with_a_slash_has_its_pages(tmp_path):
    net = nn.Sequential()
    net.add_module("</script>", nn.Conv2d(3, 4, 3, padding=1))
    net.add_module("relu", nn.ReLU())
    ex = _explorer(tmp_path, model=net)
    client = TestClient(create_app(ex, None))
    links = [a for a in _links(client.get("/").text) if a.startswith("/layer/")]
    assert links and all(client.get(a).status_code == 200 for a in links)
    ex.request_filters("</script>", [0])[0].result(timeout=120)
    link = links[0].replace("/layer/", "/filter/") + "/0"
    page = client.get(link)
    assert page.status_code == 200 and page.text.count("</script>") == page.text.count("<script")  # escaped
    ex.worker.stop()


def test_concepts_are_found_shown_per_class_and_located_in_an_image(tmp_path):
    """The concepts page finds a layer's concepts over --images on request (then shows each with its picture,
    patches, share and importance), per class too; the image page shows where they are; every name is escaped."""
    from ..nets import planted_net
    from ..units.test_concepts import planted_images

    photos = tmp_path / "photos"
    planted_images(photos, 12, classes=2)
    (photos / "class1").rename(photos / EVIL)  # a class named like a script injection
    ex = _explorer(tmp_path, model=planted_net(), images=photos)
    client = TestClient(create_app(ex, None))
    home = client.get("/").text
    assert "/concepts/act" in _links(home) and "/concepts/mix" not in _links(home)  # activations only
    assert "/concepts/act" in _links(client.get("/layer/mix").text)  # the conv's page links its activation's
    before = client.get("/concepts/act").text
    assert 'id="concepts-button"' in before and "concept 0" not in before
    assert client.post("/api/concepts", json={"layer": "act", "k": 3}).json() == {"queued": True}
    ex.concepts.request("act", 3).result(timeout=120)
    page = client.get("/concepts/act").text
    for j in range(3):
        assert f'id="c{j}"' in page
    crops = [a for a in _images(page) if "/patches/" in a]
    pictures = [a for a in _images(page) if a.endswith("_picture.png")]
    assert len(pictures) == 3 and len(crops) == 3 * 9
    assert all(client.get(src).status_code == 200 for src in pictures + crops[:3])
    assert "importance" in page and "gradient x code" in page
    ex.concepts.request("act", 2, EVIL).result(timeout=120)
    walk = _Walk()
    walk.feed(page)  # a long class list is a search box: its options are the classes
    offered = [dict(attrs)["value"] for tag, attrs in walk.tags if tag == "option" and dict(attrs).get("value")]
    assert sorted(offered) == sorted(["class0", EVIL])
    by_class = client.get("/concepts/act", params={"class": EVIL}).text
    assert by_class.count('class="concept"') == 2 and "6 images" in by_class
    image = client.get("/image?pick=class0/img000.png").text
    assert 'id="concepts-form"' in image
    response = client.get("/api/concept_maps.png?pick=class0/img000.png&layer=act&class=")
    assert response.status_code == 200 and response.content[:4] == b"\x89PNG"
    for bad, status in (
        ("/concepts/mix", 400),  # a conv: signed outputs
        ("/concepts/act?class=nope", 404),
        ("/api/concept_maps.png?pick=class0/img000.png&layer=act&class=class0", 404),  # not found for that class yet
    ):
        assert client.get(bad).status_code == status, bad
    assert client.post("/api/concepts", json={"layer": "act", "k": 0}).status_code == 400
    for text_ in (home, page, by_class, image):
        walk = _Walk()
        walk.feed(text_)
        assert not any(k.startswith("on") for _, attrs in walk.tags for k, _ in attrs)
        assert EVIL not in text_
    ex.worker.stop()


def _images(page: str) -> list[str]:
    found: list[str] = []

    class Images(HTMLParser):
        def handle_starttag(self, tag, attrs):
            found.extend(v for k, v in attrs if k == "src" and v and tag == "img")

    Images().feed(page)
    return found


def test_serve_takes_the_optimization_settings_a_quick_preset_and_a_fixed_token(cli, monkeypatch, tmp_path):
    """--quick and the optimization options set how pictures are made (written into the atlas's settings.json);
    without them an atlas keeps its own; --token fixes the token, so a URL works after a restart."""
    import uvicorn

    apps = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: apps.append(app))
    fixed = "a-token-for-my-notes-0123"

    def settings(folder):
        return json.loads((tmp_path / folder / "tiny_vgg" / "settings.json").read_text())

    quick = cli("serve", "MODEL", "--weights", "random", "--atlas", tmp_path / "q", "--quick", "--token", fixed)
    assert quick.exit_code == 0, quick.output
    assert f"?token={fixed}" in quick.output and (settings("q")["steps"], settings("q")["size"]) == (64, 128)
    for _ in range(2):  # a restart: the same URL opens
        assert TestClient(apps[-1]).get(f"/?token={fixed}").status_code == 200
        cli("serve", "MODEL", "--weights", "random", "--atlas", tmp_path / "q", "--token", fixed)
    assert settings("q")["steps"] == 64  # no option given: the atlas keeps its settings
    mixed = cli("serve", "MODEL", "--weights", "random", "--atlas", tmp_path / "m", "--quick", "--steps", "12")
    assert mixed.exit_code == 0 and (settings("m")["steps"], settings("m")["size"]) == (12, 128)
    other = cli("serve", "MODEL", "--weights", "random", "--atlas", tmp_path / "q", "--steps", "12")
    assert other.exit_code == 1 and "other settings" in other.output
    monkeypatch.setenv("KERNELVIZ_TOKEN", fixed)
    cli("serve", "MODEL", "--weights", "random", "--atlas", tmp_path / "e")
    assert TestClient(apps[-1]).get(f"/?token={fixed}").status_code == 200
    monkeypatch.delenv("KERNELVIZ_TOKEN")
    short = cli("serve", "MODEL", "--weights", "random", "--token", "abc")
    assert short.exit_code == 2 and "at least 16 characters" in short.output
    both = cli("serve", "MODEL", "--weights", "random", "--token", fixed, "--no-token")
    assert both.exit_code == 2 and "exclude each other" in both.output


def test_the_image_page_url_keeps_the_views_choices(served):
    """Method, target, filter, layer and concepts chosen on the image page come back from its URL (reopened, the
    page shows the same view); a bad method falls back to the default, and values are escaped."""
    _, client = served
    page = client.get(f"/image?pick=p1.png&method=saliency&target=3&filter=conv2_1:3&layer=conv2_1&x={EVIL}").text
    assert '<option value="saliency" selected>' in page and '<option value="gradcam" selected>' not in page
    assert 'name="target" size="14" value="3"' in page and 'value="conv2_1:3"' in page
    assert '<option value="conv2_1" selected>' in page
    evil = client.get("/image", params={"pick": "p1.png", "method": "nope", "target": EVIL}).text
    assert '<option value="gradcam" selected>' in evil and EVIL not in evil


def test_the_newest_request_runs_first_and_a_page_left_waits_behind_it():
    """Tasks of the newest request run before older ones, each request's in the order asked; asking again for a
    queued task moves it up; a running task that does not give way is not interrupted, and every task runs once."""
    import threading

    from kernelviz.serve.worker import Worker

    worker, ran, started, gate = Worker(), [], threading.Event(), threading.Event()

    def task(name, wait=False):
        def run(emit):
            if wait:
                started.set()
                gate.wait(10)
            ran.append(name)

        return run

    worker.submit("running", task("running", wait=True))
    started.wait(10)
    layer_page = worker.new_request()
    for n in range(3):
        worker.submit(f"layer batch {n}", task(f"layer batch {n}"), layer_page)
    filter_page = worker.new_request()  # the user left the layer page for a filter page
    worker.submit("filter", task("filter"), filter_page)
    back = worker.new_request()
    worker.submit("layer batch 2", task("never built"), back)  # asked again by a newer request: moved up
    last = worker.submit("later", task("later"))
    gate.set()
    last.result(timeout=10)
    worker.stop()
    assert ran == ["running", "later", "layer batch 2", "filter", "layer batch 0", "layer batch 1"]
    assert all(count == 1 for count in worker.runs.values())


def test_a_batch_gives_way_to_a_newer_page_and_runs_again_to_the_same_pictures(tmp_path):
    """A filter page opened while a layer page's batch runs: the batch stops at its next progress step, the filter
    page's batch runs, then the left batch runs again from its start, to pictures equal to those of a run that was
    never stopped (each filter's start depends on its index only)."""
    import threading

    slow = {"steps": 400, "size": 32, "batch_size": 8}

    def explorer(folder):
        settings = kernelviz.OptimSettings.from_json({**kernelviz.DEFAULTS.to_json(), **slow})
        return Explorer(tiny_vgg(), tmp_path / folder / "tiny_vgg", settings=settings)

    ex, running = explorer("left"), threading.Event()
    ex.worker.subscribe(lambda e: running.set() if e["type"] == "progress" and e.get("step") else None)
    finished = []
    (left,) = ex.request_filters("conv2_1", [0])  # the layer page's first batch: filters 0-7
    left.add_done_callback(lambda f: finished.append("left"))
    assert running.wait(60)
    (opened,) = ex.request_filters("conv3_1", [5])  # then a filter page of another layer
    opened.add_done_callback(lambda f: finished.append("opened"))
    left.result(timeout=300)
    assert finished == ["opened", "left"] and ex.worker.preemptions[("batch", "conv2_1", 0)] == 1
    assert ex.worker.preemptions[("batch", "conv3_1", 0)] == 0
    ex.worker.stop()
    never = explorer("never")
    for future in never.request_filters("conv2_1", [0]):
        future.result(timeout=300)
    never.worker.stop()
    for n in range(8):
        a, b = ex.folder.record("conv2_1", n), never.folder.record("conv2_1", n)
        assert a["final_value"] == b["final_value"] and a["curve"] == b["curve"]
        assert ex.folder.picture("conv2_1", n).read_bytes() == never.folder.picture("conv2_1", n).read_bytes()


def test_a_layer_page_shows_quick_previews_first_and_each_is_replaced_by_its_picture(tmp_path):
    """The layer page's request makes the previews (their own settings, batches of PREVIEW_BATCH) before any full
    batch: every preview event comes before the first done event; a preview is the picture those settings make; a
    page drawn while only a preview is on disk shows it; nothing is previewed twice or once made."""
    from kernelviz.optvis.batch import layer_grid
    from kernelviz.optvis.settings import PREVIEW_BATCH

    ex = _explorer(tmp_path)
    assert ex.preview is None  # 4 steps at 32 px: as quick as any preview
    ex.preview = ex.optim.with_(steps=2, size=24, batch_size=PREVIEW_BATCH)
    events: list[dict] = []
    ex.worker.subscribe(events.append)
    client = TestClient(create_app(ex, TOKEN))
    client.get(f"/?token={TOKEN}")
    asked = list(range(PREVIEW_BATCH + 2))  # two preview tasks, of conv3_1 (32 filters)
    answer = client.post("/api/compute", json={"layer": "conv3_1", "filters": asked, "previews": True}).json()
    assert answer["preview_batches"] == 2 and answer["batches"] == 4  # atlas batches of 8: filters 0-31
    ex.worker.wait_idle(timeout=300)
    kinds = [(e["type"], e.get("filter")) for e in events if e["type"] in ("preview", "done")]
    first_done = next(i for i, (kind, _) in enumerate(kinds) if kind == "done")
    assert sorted(n for kind, n in kinds[:first_done] if kind == "preview") == asked
    assert sorted(n for kind, n in kinds if kind == "done") == list(range(32))  # every filter of the 4 batches
    made = layer_grid(ex.model, "conv3_1", asked[:PREVIEW_BATCH], ex.preview.with_(batch_size=PREVIEW_BATCH))
    expected = kernelviz.load_image(ex.folder.preview("conv3_1", 3))
    assert expected.shape[-1] == 24 and torch.allclose(expected, made.images[3], atol=1 / 255 + 1e-6)
    ex.folder.record_file("conv3_1", 5).unlink()  # filter 5: only its preview on disk
    page = client.get("/layer/conv3_1").text
    assert 'class="preview" src="/files/conv3_1/previews/0005.png"' in page and page.count('class="preview"') == 1
    again = client.post("/api/compute", json={"layer": "conv3_1", "filters": [5, 6], "previews": True}).json()
    assert again["preview_batches"] == 0 and again["batches"] == 1  # a preview is kept; 6 is made
    ex.worker.stop(wait=True)


def test_pictures_from_a_photo_on_the_layer_filter_and_image_pages(tmp_path):
    """Caricature and DeepDream of a layer, every depth, and a filter's accentuation: each page offers its photo
    first (the one it was opened with), /api/photo.png answers a PNG of the photo beside the picture(s), and a
    request it cannot serve gets a clear 400/404."""
    ex = _explorer(tmp_path)
    client = TestClient(create_app(ex, TOKEN))
    client.get(f"/?token={TOKEN}")
    alone = client.get("/filter/conv2_1/3").text  # no photo anywhere yet
    assert "upload a photo on the" in alone and 'class="photo-form"' not in alone
    upload = client.post("/image", files={"file": ("a.png", _png_bytes(), "image/png")}, follow_redirects=False)
    digest = upload.headers["location"].split("=")[1]
    for page in (f"/layer/conv2_1?upload={digest}", f"/filter/conv2_1/3?upload={digest}"):
        html = client.get(page).text
        assert f'<option value="upload={digest}" selected>' in html, page
    layer_page = client.get(f"/layer/conv2_1?upload={digest}").text
    assert '<option value="dream">DeepDream</option>' in layer_page
    assert '<input type="hidden" name="kind" value="accentuate">' in client.get("/filter/conv2_1/3").text

    def picture(query: str) -> tuple[int, int]:
        got = client.get(f"/api/photo.png?upload={digest}&{query}")
        assert got.status_code == 200 and got.content[:4] == b"\x89PNG", (query, got.text[:200])
        return Image.open(io.BytesIO(got.content)).size

    one = picture("kind=dream&layer=conv2_1")
    assert one[0] > one[1]  # the photo, then its DeepDream
    every = picture("kind=caricature&layer=")
    assert every[0] > 2.5 * one[0]  # the photo and 5 caricatures
    convs, depths = [r.name for r in ex.wiring.convs], ex.depth_layers()
    assert len(set(depths)) == 5 and depths[0] == convs[0] and depths[-1] == convs[-1]
    assert depths == sorted(depths, key=convs.index)  # early to late
    picture("kind=accentuate&layer=conv2_1&filter=3")
    assert client.get(f"/api/photo.png?upload={digest}&kind=accentuate&layer=conv2_1").status_code == 400
    assert "unknown kind" in client.get(f"/api/photo.png?upload={digest}&kind=nope&layer=conv2_1").json()["error"]
    bad = client.get(f"/api/photo.png?upload={digest}&kind=accentuate&layer=conv2_1&filter=99")
    assert bad.status_code in (400, 404) and "99" in bad.json()["error"]
    assert client.get("/api/photo.png?upload=0123456789abcdef&kind=dream&layer=conv2_1").status_code == 404
    ex.worker.stop(wait=True)


def test_previews_give_way_to_a_newer_page_and_a_filter_page_shows_its_preview(tmp_path):
    """A layer page's preview task stops at its next progress step when a filter page is opened, and runs again
    after it (its previews then written whole); the filter page, asked with previews, shows its own preview while
    its picture is computed."""
    import threading

    from kernelviz.serve.pages import page
    from kernelviz.serve.views import filter_view

    ex = _explorer(tmp_path)
    ex.preview = ex.optim.with_(steps=400, size=24, batch_size=8)  # slow enough to be caught running
    running, events = threading.Event(), []
    ex.worker.subscribe(lambda e: running.set() if e.get("task") == "preview" and e.get("step") else None)
    ex.worker.subscribe(events.append)
    finished = []
    previews, _ = ex.request_page("conv2_1", [0, 1])
    previews[0].add_done_callback(lambda f: finished.append("previews"))
    assert running.wait(60)
    _, batches = ex.request_page("conv3_1", [5])  # a filter page: its preview, then its batch
    batches[0].add_done_callback(lambda f: finished.append("opened"))
    previews[0].result(timeout=300)
    assert finished[0] == "opened" and ex.worker.preemptions[("preview", "conv2_1", 0, 1)] == 1
    ex.worker.wait_idle(timeout=300)
    # run again at its own place, before its page's batch: the previews are made, then the pictures
    assert all(ex.folder.preview("conv2_1", n).is_file() for n in (0, 1))
    order = [e["type"] for e in events if e["type"] in ("preview", "done") and e["layer"] == "conv2_1"]
    assert order[:2] == ["preview", "preview"] and order.count("done") == 8
    ex.worker.stop(wait=True)
    ex.folder.record_file("conv3_1", 5).unlink()  # as while its picture is being computed
    html = page("filter", filter_view(ex, "conv3_1", 5))
    assert 'class="big preview" id="preview" src="/files/conv3_1/previews/0005.png"' in html


def _markup_everywhere(value, mark):
    """``value`` (a JSON document) with every text replaced by markup (file names keep a picture's suffix)."""
    if isinstance(value, dict):
        return {k: _markup_everywhere(v, mark) for k, v in value.items()}
    if isinstance(value, list):
        return [_markup_everywhere(v, mark) for v in value]
    if isinstance(value, str):
        return mark + (".png" if value.endswith((".png", ".jpg")) else "")
    return value


def test_a_concepts_file_full_of_markup_is_shown_escaped_and_a_damaged_one_is_refused(tmp_path):
    """A concepts.json whose every text field holds markup (a shared or downloaded atlas) and a class folder named
    like a script tag: the concepts, filter and image pages show them escaped; a file with markup where numbers
    belong, a picture outside the folder or a traversing layer is refused with a 400 or 404 that names no absolute
    path, never a 500 (issue 34's known answer, and issue 36's)."""
    from ..nets import planted_net
    from ..units.test_concepts import planted_images

    script = "<script>alert(1)"  # a folder name cannot hold "/": an opening tag is enough to run
    photos = tmp_path / "photos"
    planted_images(photos, 8, classes=2)
    (photos / "class1").rename(photos / script)
    ex = _explorer(tmp_path, model=planted_net(), images=photos)
    client = TestClient(create_app(ex, None))
    ex.concepts.request("act", 2).result(timeout=120)
    ex.request_filters("act", [0])[0].result(timeout=120)
    file = ex.folder.concepts_dir("act") / "concepts.json"
    whole = json.loads(file.read_text())
    file.write_text(json.dumps(_markup_everywhere(whole, EVIL)))
    pages = {
        "concepts": client.get("/concepts/act"),
        "class": client.get("/concepts/act", params={"class": script}),
        "filter": client.get("/filter/act/0"),
        "image": client.get("/image?pick=class0/img000.png"),
    }
    for name, response in pages.items():
        assert response.status_code == 200, name
        walk = _Walk()
        walk.feed(response.text)
        assert not any(k.startswith("on") for _, attrs in walk.tags for k, _ in attrs), name
        assert EVIL not in response.text and script not in response.text, name
        assert response.text.count("<script") == 2, name  # the page's own two
    assert EVIL.replace("<", "&lt;").replace(">", "&gt;").replace('"', "&#34;") in pages["concepts"].text
    root = str(ex.root.resolve())
    for broken in (
        {**whole, "k": EVIL},  # markup where a number belongs
        {**whole, "size": 0},
        {**whole, "size": 10**6},  # would allocate gigabytes
        {**whole, "concepts": [{**whole["concepts"][0], "picture": "/etc/passwd"}, *whole["concepts"][1:]]},
        {**whole, "concepts": [{**whole["concepts"][0], "picture": "../../../settings.json"}, *whole["concepts"][1:]]},
        {**whole, "samples": "12"},
    ):
        file.write_text(json.dumps(broken))
        for url in ("/concepts/act", "/api/concept_maps.png?pick=class0/img000.png&layer=act"):
            response = client.get(url)
            assert response.status_code == 400, (url, broken)
            assert "not a kernelviz concepts file" in response.text and root not in response.text
        assert client.get("/").status_code == 200 and client.get("/image?pick=class0/img000.png").status_code == 200
    for url in ("/concepts/%2E%2E", "/api/concept_maps.png?pick=class0/img000.png&layer=.."):
        assert client.get(url).status_code == 404, url
    ex.worker.stop()


def test_events_are_declared_once_and_the_script_reads_only_declared_ones():
    """Every event the server sends is made by ``events.event`` (no ``{"type": ...}`` literal elsewhere), and the
    page script reads only declared types and fields (it gets the table from ``data-events``)."""
    import re
    from pathlib import Path

    import kernelviz.serve as serve_package
    from kernelviz.serve.events import EVENTS, event

    folder = Path(serve_package.__file__).parent
    for module in folder.glob("*.py"):
        if module.name != "events.py":
            assert not re.search(r'\{\s*"type":', module.read_text()), module.name
    script = (folder / "static" / "app.js").read_text()
    types = set(re.findall(r'e\.type === "(\w+)"', script))
    assert types and types <= set(EVENTS), types - set(EVENTS)
    fields = set(re.findall(r"\be\.(\w+)", script)) | set(re.findall(r'\be\["(\w+)"\]', script))
    declared = {name for kind in EVENTS.values() for name in kind} | {"type"}
    assert fields <= declared, fields - declared
    assert script.count("new EventSource(") == 1  # one connection per page
    with pytest.raises(ValueError, match="undeclared"):
        event("done", layer="conv1_1", colour="red")
    assert event("examples", layer="a") == {"type": "examples", "layer": "a"}
