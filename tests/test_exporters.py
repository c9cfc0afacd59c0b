"""Feature maps, kernel pictures, image input, and the maps/heatmap/weights commands."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from matplotlib.figure import Figure
from PIL import Image
from torch import nn

import kernelviz
from kernelviz.cli import main
from kernelviz.errors import KernelvizError
from kernelviz.io import load_image
from kernelviz.kernels import kernel_weights, plot_kernels
from kernelviz.maps import feature_maps, plot_feature_maps, top_channels

from .test_render import SOBEL_X

RANDOM = ["--weights", "random", "--size", "32", "--device", "cpu"]


@pytest.fixture
def photo(tmp_path):
    """A real photo (scikit-image's coffee cup) saved as PNG."""
    data = pytest.importorskip("skimage.data")
    path = tmp_path / "coffee.png"
    Image.fromarray(data.coffee()).save(path)
    return path


def test_feature_maps_match_direct_computation(vgg16):
    images = torch.rand(2, 3, 32, 32)
    maps = feature_maps(vgg16, images, "pool1")
    with torch.no_grad():
        expected = vgg16.features[:5](kernelviz.model_meta(vgg16).normalize(images))
    torch.testing.assert_close(maps, expected)
    assert maps.shape == (2, 64, 16, 16)


def test_sobel_feature_map_lights_up_vertical_edges():
    """The article: a vertical Sobel kernel's feature map is strong on vertical edges only."""
    conv = nn.Conv2d(3, 1, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(SOBEL_X.expand(1, 3, 3, 3) / 3)
    img = torch.zeros(3, 16, 16)
    img[:, :, 8:] = 1.0  # a vertical edge at x = 8
    img[:, 12:, :] = 0.5  # and a horizontal one at y = 12
    maps = feature_maps(nn.Sequential(conv, nn.ReLU()), img, "1")[0, 0]
    assert maps[:10, 7:9].min() > 1.0  # on the vertical edge
    # flat regions and the horizontal edge give nothing (column 0 sees the zero padding: a real edge)
    assert maps[:, 1:6].abs().max() == 0 and maps[13:, 10:14].abs().max() == 0


def test_max_pooling_keeps_the_strongest_response(vgg16):
    images = torch.rand(1, 3, 32, 32)
    relu = feature_maps(vgg16, images, "relu1_2")
    pool = feature_maps(vgg16, images, "pool1")
    torch.testing.assert_close(pool, relu.unflatten(2, (16, 2)).unflatten(4, (16, 2)).amax((3, 5)))


def test_top_channels_and_plot():
    maps = torch.zeros(5, 4, 4)
    for c, level in enumerate([0.1, 3.0, 0.5, 2.0, -1.0]):
        maps[c] = level
    assert top_channels(maps, 3) == [1, 3, 2]
    fig = plot_feature_maps(maps, image=torch.rand(3, 8, 8), k=3, scale="shared", title="t")
    assert isinstance(fig, Figure)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title().startswith("ch")]
    assert titles == ["ch 1\n[3, 3]", "ch 3\n[2, 2]", "ch 2\n[0.5, 0.5]"]
    with pytest.raises(KernelvizError, match="out of range"):
        plot_feature_maps(maps, channels=[7])


def test_kernel_pictures(vgg16):
    w = kernel_weights(vgg16, "conv1_1")
    assert w.shape == (64, 3, 3, 3) and torch.equal(w, vgg16.features[0].weight.detach())
    fig = plot_kernels(w)
    tiles = [im.get_array() for ax in fig.axes for im in ax.get_images()]
    assert len(tiles) == 64
    peak = float(w.abs().max())
    np.testing.assert_allclose(tiles[5], (0.5 + w[5] / (2 * peak)).permute(1, 2, 0).numpy(), rtol=1e-6)
    deeper = plot_kernels(kernel_weights(vgg16, "conv2_1"), filters=[0, 1], inputs=[3, 4, 5])
    assert sum(len(ax.get_images()) for ax in deeper.axes) == 6
    with pytest.raises(KernelvizError, match="not a Conv2d"):
        kernel_weights(vgg16, "relu1_1")


def test_load_image_formats(tmp_path):
    rgba = np.zeros((10, 20, 4), dtype=np.uint8)
    rgba[..., 0] = 255
    rgba[:, :10, 3] = 255  # left half opaque red, right half transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    img = load_image(tmp_path / "a.png")
    assert img.shape == (3, 10, 20)
    assert torch.allclose(img[:, 5, 2], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.allclose(img[:, 5, 15], torch.ones(3))  # transparent over white
    Image.fromarray(np.full((40, 30), 128, dtype=np.uint8), "L").save(tmp_path / "g.jpg")
    gray = load_image(tmp_path / "g.jpg", 16)
    assert gray.shape == (3, 16, 16) and abs(float(gray.mean()) - 128 / 255) < 0.02
    (tmp_path / "bad.png").write_text("not an image")
    with pytest.raises(KernelvizError, match="cannot read image"):
        load_image(tmp_path / "bad.png")
    with pytest.raises(KernelvizError, match="not found"):
        load_image(tmp_path / "missing.png")


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_maps_command(photo, tmp_path):
    out = tmp_path / "maps"
    result = invoke("maps", "vgg16", "pool1", str(photo), "-o", str(out), "-k", "4", "--raw", *RANDOM)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "coffee_pool1_maps.json").read_text())
    raw = np.load(out / "coffee_pool1_maps.npy")
    assert raw.shape == (64, 16, 16) == tuple(record["shape"])
    assert record["channels"] == np.argsort(-raw.reshape(64, -1).mean(1))[:4].tolist()
    assert record["stats"]["max"][0] == pytest.approx(float(raw[record["channels"][0]].max()), rel=1e-5)
    assert Image.open(out / "coffee_pool1_maps.png").size[0] > 300


def test_heatmap_command_several_methods(photo, tmp_path):
    out = tmp_path / "hm"
    result = invoke(
        "heatmap", "vgg16", str(photo), "-m", "gradcam", "-m", "saliency", "-t", "7", "-o", str(out), *RANDOM
    )
    assert result.exit_code == 0, result.output
    for method in ("gradcam", "saliency"):
        record = json.loads((out / f"coffee_{method}.json").read_text())
        assert record["method"] == method and record["target"] == 7
        assert np.load(out / f"coffee_{method}.npy").shape == (32, 32)
    assert record["settings"]["reduction"] == "max |.| over color channels"
    assert (out / "coffee_methods.png").exists()


def test_heatmap_command_real_network(photo, tmp_path):
    pytest.importorskip("efficientnet_lite_pytorch")
    result = invoke("heatmap", "kernelviz.zoo:efficientnet_lite0", str(photo), "-o", str(tmp_path), "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "coffee.png: top-5 espresso" in result.output
    record = json.loads((tmp_path / "coffee_gradcam.json").read_text())
    assert record["target_name"] == "espresso"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["heatmap", "vgg16", "missing.jpg", *RANDOM], "image not found"),
        (["heatmap", "vgg16", "PHOTO", "-t", "tabby", *RANDOM], "no class names"),
        (["heatmap", "vgg16", "PHOTO", "-t", "1000", *RANDOM], "out of range"),
        (["heatmap", "vgg16", "PHOTO", "-m", "gradcamm", *RANDOM], "unknown method"),
        (["maps", "vgg16", "conv9_1", "PHOTO", *RANDOM], "unknown layer"),
        (["maps", "vgg16", "fc6", "PHOTO", *RANDOM], "no spatial maps"),
        (["weights", "vgg16", "relu1_1", *RANDOM[:2]], "not a Conv2d"),
    ],
)
def test_exporter_errors(photo, args, message):
    result = invoke(*[str(photo) if a == "PHOTO" else a for a in args])
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output


def test_weights_command(tmp_path):
    path = tmp_path / "k.png"
    result = invoke("weights", "vgg16", "conv1_1", "-o", str(path), "--weights", "random")
    assert result.exit_code == 0, result.output
    assert Image.open(path).size[0] > 300


def test_written_files_have_usual_permissions(tmp_path):
    import os
    import stat

    from kernelviz.io import save_json

    path = save_json({"a": 1}, tmp_path / "x.json")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask


def test_random_views_are_seeded_crops():
    from kernelviz.transforms import random_views

    images = torch.rand(2, 3, 40, 40)
    views = random_views(images, 3, seed=1)
    assert views.shape == (6, 3, 40, 40)
    assert torch.equal(views, random_views(images, 3, seed=1))
    assert not torch.equal(views, random_views(images, 3, seed=2))
    assert views.min() >= images.min() - 1e-6 and views.max() <= images.max() + 1e-6  # resampled, not invented
