"""Faults on the newer surfaces (scans, concepts files, pictures from a photo, negatives, the explorer's concepts
and photos), each as a new user or a hostile one met it: one test per case, each failing on the code before the
fix. Every refusal is one line that names the file or the option and what to do."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import kernelviz
from kernelviz.core.install import install_problem
from kernelviz.errors import KernelvizError, KernelvizTypeError
from kernelviz.sets.examples import scan_to_atlas
from kernelviz.units.scan import scan_units

from .conftest import FAST
from .nets import tiny_vgg
from .test_faults import one_line

ROOT = Path(__file__).resolve().parents[1]


def gray_images(root: Path, levels: list[int], size: int = 32) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, level in enumerate(levels):
        path = root / f"img{i:02d}.png"
        Image.fromarray(np.full((size, size, 3), level, dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


class Picky(nn.Module):
    """A network that raises on a white image (as a model with an input check, or a bug, might on one file)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool((x.flatten(1).amin(1) > 0.99).any()):
            raise RuntimeError("this network does not take a white image")
        return self.relu(self.conv(x))


# --- scans ------------------------------------------------------------------------------------------------------
def test_a_model_that_fails_on_one_image_skips_it_counts_it_and_ranks_the_rest_as_without_it(tmp_path):
    torch.manual_seed(0)
    net = kernelviz.set_model_meta(Picky(), input_size=32, mean=(0, 0, 0), std=(1, 1, 1))
    levels = [10, 60, 255, 120, 200, 30, 90, 150]  # the white one, third, in the first batch of 4
    files = gray_images(tmp_path / "all", levels)
    scan = scan_units(net, tmp_path / "all", ["conv", "relu"], k=3, batch_size=4, workers=0)
    assert scan.scanned == 7 and [p.name for p, _ in scan.skipped] == ["img02.png"]
    assert "the model could not run on it" in scan.skipped[0][1] and "white image" in scan.skipped[0][1]
    gray_images(tmp_path / "without", [v for v in levels if v != 255])
    alone = scan_units(net, tmp_path / "without", ["conv", "relu"], k=3, batch_size=4, workers=0)
    for layer in ("conv", "relu"):
        for ranking in ("top", "mean", "bottom"):
            a, b = scan.layers[layer].ranking(ranking), alone.layers[layer].ranking(ranking)
            # the failed batch's other images ran one by one: their values equal the batched ones' to float rounding
            assert torch.allclose(a.values, b.values, atol=1e-5) and torch.allclose(a.scores, b.scores, atol=1e-5)
            names = [[files[i].name for i in row] for row in a.images.tolist()]
            kept = [f for f in files if f.name != "img02.png"]
            assert names == [[kept[i].name for i in row] for row in b.images.tolist()]


def test_a_model_that_fails_on_every_image_says_so_in_one_line_naming_a_file(tmp_path):
    net = kernelviz.set_model_meta(Picky(), input_size=32, mean=(0, 0, 0), std=(1, 1, 1))
    gray_images(tmp_path / "white", [255, 255, 255])
    with pytest.raises(KernelvizError, match=r"could not run on any image of the batch of .*img00.png"):
        scan_units(net, tmp_path / "white", ["conv"], k=2, batch_size=4, workers=0)


_LIMITED = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing us
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1])))
exec(sys.argv[2])
"""


def _limited(code: str, limit: int, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp_path), "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-c", _LIMITED, str(limit), code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def test_a_file_size_limit_while_a_scan_checkpoints_is_one_line(tmp_path):
    """The checkpoint (torch.save) hit the limit with `RuntimeError: basic_ios::clear`; now the atomic writer says
    it: could not write ... (File too large)."""
    gray_images(tmp_path / "imgs", [10, 60, 120, 200])
    code = (
        "from kernelviz.cli import main\n"
        "sys.argv = ['kernelviz', 'examples', 'tests.nets:tiny_vgg', '--weights', 'random', '--images', 'imgs',"
        " '-o', 'out', '--workers', '0', '--every', '1', '--quiet']\n"
        "main()"
    )
    proc = _limited(code, 4000, tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "could not write" in proc.stderr and "File too large" in proc.stderr and ".pt" in proc.stderr


def test_a_jpeg_past_a_file_size_limit_is_never_left_truncated(tmp_path):
    """Pillow's JPEG encoder left a truncated file under the limit without raising; a crop is now whole or absent,
    and the error names the file."""
    code = (
        "import torch\nfrom kernelviz.files.write import save_jpeg\nfrom kernelviz.errors import KernelvizError\n"
        "try:\n    save_jpeg(torch.rand(3, 256, 256), 'crop.jpg')\nexcept KernelvizError as err:\n    print(err)\n"
    )
    proc = _limited(code, 3000, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "could not write crop.jpg" in proc.stdout and "File too large" in proc.stdout
    assert not (tmp_path / "crop.jpg").exists()


def test_images_an_examples_record_names_that_went_missing_are_restored_by_a_rerun(tmp_path):
    gray_images(tmp_path / "imgs", [10, 60, 120, 200, 250, 30])
    root = tmp_path / "out" / "tiny_vgg"
    scan_to_atlas(tiny_vgg(), root, tmp_path / "imgs", ["conv1_1"], k=3, workers=0)
    page = json.loads((root / "conv1_1" / "examples.json").read_text())
    named = {(root / "conv1_1" / e["crop"]).resolve() for found in page["filters"].values() for e in found}
    for path in list(named)[:3]:
        path.unlink()
    again = scan_to_atlas(tiny_vgg(), root, tmp_path / "imgs", ["conv1_1"], k=3, workers=0)
    assert again.layers_written == [] and all(p.is_file() for p in named)  # not rewritten: restored


# --- concepts files ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("field", "value"), [("size", 0), ("size", 10**6), ("k", "<b>3</b>"), ("concepts", [])])
def test_a_damaged_concepts_file_is_refused_before_it_is_used(cli, tmp_path, field, value):
    """`heatmap --concepts` with a bad size tried to allocate 120 GB (or died in a traceback)."""
    data = {"model": "tiny_vgg", "layer": "relu1_1", "size": 32, "k": 1, "samples": 4, "images": 2,
            "reconstruction_error": 0.1, "target": "top-1 prediction", "importance_method": "x",
            "concepts": [{"index": 0, "direction": [1.0] * 8, "share": 1.0, "importance": None, "picture": None,
                          "patches": []}]}  # fmt: skip
    data[field] = value
    (tmp_path / "concepts.json").write_text(json.dumps(data))
    gray_images(tmp_path, [100])
    message = one_line(cli("heatmap", "MODEL", "img00.png", "--concepts", "concepts.json", "--weights", "random"))
    assert "concepts.json is not a kernelviz concepts file" in message and field in message


# --- pictures from a photo --------------------------------------------------------------------------------------
def test_a_photo_holding_nan_is_refused_not_turned_black(cli, tmp_path):
    pixels = np.random.default_rng(0).random((40, 40)).astype(np.float32)
    pixels[5, 7] = np.nan
    Image.fromarray(pixels, mode="F").save(tmp_path / "float.tif")
    with pytest.raises(KernelvizError, match="1 NaN or infinite pixel"):
        kernelviz.load_image(tmp_path / "float.tif", 32)
    message = one_line(cli("dream", "MODEL", "conv2_1", "float.tif", "--weights", "random", *FAST))
    assert "float.tif holds 1 NaN or infinite pixel" in message


@pytest.mark.parametrize(("command", "option", "value"), [
    ("caricature", "--power", "-1"), ("caricature", "--power", "nan"),
    ("accentuate", "--weight", "-1"), ("accentuate", "--weight", "nan"),
])  # fmt: skip
def test_a_negative_or_nan_power_or_weight_is_refused_at_once(cli, tmp_path, command, option, value):
    gray_images(tmp_path, [100])
    args = ["conv2_1", "img00.png"] if command == "caricature" else ["conv2_1", "0", "--image", "img00.png"]
    message = one_line(cli(command, "MODEL", *args, option, value, "--weights", "random", *FAST))
    assert f"must be a finite number >= 0 ({option})" in message


# --- negatives ----------------------------------------------------------------------------------------------------
def test_a_damaged_negative_record_does_not_block_a_rerun_without_negative(tmp_path):
    kwargs = dict(layers=["conv1_1"], filters=2, steps=2, size=32)
    report = kernelviz.atlas(tiny_vgg(), tmp_path, negative=True, **kwargs)
    damaged = report.root / "conv1_1" / "variants" / "0001_negative.json"
    damaged.write_text("{not json")
    again = kernelviz.atlas(tiny_vgg(), tmp_path, **kwargs)  # failed: "the negative picture ... is damaged"
    assert (
        again.index_written
        and "negative" not in (report.root / "conv1_1" / "index.html").read_text().split("filter 1")[1][:200]
    )
    redone = kernelviz.atlas(tiny_vgg(), tmp_path, negative=True, **kwargs)  # and --negative makes it again
    assert redone.index_written and json.loads(damaged.read_text())["negative"] is True


def test_the_explorers_negative_variant_keeps_the_atlass_negative_picture(tmp_path):
    pytest.importorskip("starlette")
    from kernelviz.serve.explorer import Explorer

    settings = kernelviz.DEFAULTS.with_(steps=2, size=32)
    report = kernelviz.atlas(tiny_vgg(), tmp_path, settings, layers=["conv1_1"], filters=2, negative=True)
    picture = report.root / "conv1_1" / "variants" / "0000_negative.png"
    before = picture.read_bytes(), json.loads(picture.with_suffix(".json").read_text())
    ex = Explorer(tiny_vgg(), report.root)  # the atlas's own settings
    ex.request_variant("conv1_1", 0, "negative").result(timeout=120)
    ex.worker.stop()
    after = picture.read_bytes(), json.loads(picture.with_suffix(".json").read_text())
    assert after == before and "min_activation" in after[1]  # kept: the atlas page's "min" stays a number
    alone = Explorer(tiny_vgg(), tmp_path / "other" / "tiny_vgg", settings=settings)
    made = Path(alone.request_variant("conv1_1", 1, "negative").result(timeout=120))
    alone.worker.stop()
    assert isinstance(json.loads(made.with_suffix(".json").read_text())["min_activation"], float)  # made alone too


# --- earlier surfaces -----------------------------------------------------------------------------------------------
def test_count_depth_refuses_a_name_as_every_call_does():
    with pytest.raises(KernelvizTypeError, match=r"model must be a torch\.nn\.Module"):
        kernelviz.count_depth("vgg16")  # type: ignore[arg-type]


# --- found by a new user on real photos --------------------------------------------------------------------------
def test_the_explorer_picks_images_of_a_linked_folder_and_still_refuses_traversal(tmp_path):
    pytest.importorskip("starlette")
    from starlette.testclient import TestClient

    from kernelviz.serve.app import create_app
    from kernelviz.serve.explorer import Explorer

    real = tmp_path / "dataset"
    gray_images(real / "cats", [100, 150])
    folder = tmp_path / "images"
    (folder / "dogs").mkdir(parents=True)
    (folder / "cats").symlink_to(real / "cats")  # a linked class folder
    (folder / "dogs" / "d.png").symlink_to(real / "cats" / "img00.png")  # a linked file
    ex = Explorer(tiny_vgg(), tmp_path / "atlas" / "tiny_vgg", images=folder, settings=kernelviz.DEFAULTS.with_(
        steps=2, size=32))  # fmt: skip
    assert ex.photos.picks() == ["cats/img00.png", "cats/img01.png", "dogs/d.png"]
    client = TestClient(create_app(ex, None))
    for pick in ex.photos.picks():
        assert client.get("/api/image.png", params={"pick": pick}).status_code == 200, pick
    for bad in ("../dataset/cats/img00.png", "/etc/passwd", "cats/../../dataset/cats/img00.png"):
        assert client.get("/api/image.png", params={"pick": bad}).status_code in (400, 404), bad
    ex.worker.stop()


def test_a_torch_and_torchvision_of_different_builds_are_said_in_one_line():
    assert (
        install_problem({"torch": "2.14.1+cpu", "torchvision": "0.29.1+cpu", "torchvision_needs": "==2.14.1"}) is None
    )
    mixed = install_problem({"torch": "2.14.1+cpu", "torchvision": "0.29.1+cu128", "torchvision_needs": "==2.14.1"})
    assert mixed is not None and "different builds (cpu and cu128)" in mixed and "--index-url" in mixed
    assert "\n" not in mixed
    old = install_problem({"torch": "2.14.1", "torchvision": "0.24.1", "torchvision_needs": "==2.9.1"})
    assert old is not None and "needs torch ==2.9.1" in old
    assert install_problem() is None  # this machine's


def test_a_failure_from_a_mixed_install_is_one_line_on_the_command_line(cli, monkeypatch):
    import kernelviz.core.install as install

    def broken(*args, **kwargs):
        raise RuntimeError("operator torchvision::nms does not exist")

    monkeypatch.setattr(install, "versions", lambda: {"torch": "2.14.1+cpu", "torchvision": "0.29.1+cu128",
                                                      "torchvision_needs": "==2.14.1"})  # fmt: skip
    monkeypatch.setattr("kernelviz.core.models.load_model", broken)
    message = one_line(cli("layers", "MODEL"))
    assert "torch 2.14.1+cpu and torchvision 0.29.1+cu128 do not go together" in message


def test_concepts_with_a_high_reconstruction_error_say_what_it_means_and_what_to_do():
    from kernelviz.units.concepts import error_reading

    assert "leave unexplained" in error_reading(0.2, 8) and "--class" not in error_reading(0.2, 8)
    high = error_reading(0.917, 8)
    assert "91.7%" in high and "--class" in high and "-k" in high
    assert "--class" not in error_reading(0.917, 8, classes=False)


def test_serve_on_a_port_in_use_says_so_before_printing_a_url(cli, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli("serve", "MODEL", "--weights", "random", "--port", str(port), "--atlas", str(tmp_path / "at"))
    message = one_line(result)
    assert f"cannot listen on 127.0.0.1:{port}" in message and "--port" in message and "http://" not in result.output


def test_the_batch_size_option_says_what_it_is_in_a_scan(cli):
    text = " ".join(cli("examples", "--help").output.split())
    assert "in a scan (examples MODEL --images, atlas --images), images per forward pass" in text


def test_the_image_page_offers_the_heatmap_methods_the_model_can_run(tmp_path):
    """On a CNN, the attention methods (rollout, attention_gradient) are not offered (they failed with a 400)."""
    pytest.importorskip("starlette")
    from starlette.testclient import TestClient

    from kernelviz.serve.app import create_app
    from kernelviz.serve.explorer import Explorer

    gray_images(tmp_path / "imgs", [100])
    ex = Explorer(tiny_vgg(), tmp_path / "atlas" / "tiny_vgg", images=tmp_path / "imgs",
                  settings=kernelviz.DEFAULTS.with_(steps=2, size=32))  # fmt: skip
    page = TestClient(create_app(ex, None)).get("/image", params={"pick": "img00.png"}).text
    assert 'value="gradcam"' in page and 'value="rollout"' not in page and 'value="attention_gradient"' not in page
    response = TestClient(create_app(ex, None)).get(
        "/api/heatmap.png", params={"pick": "img00.png", "method": "rollout"}
    )
    assert response.status_code == 400 and "attention" in response.json()["error"]
    ex.worker.stop()
