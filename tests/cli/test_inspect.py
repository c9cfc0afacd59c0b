"""The inspecting commands end to end: maps, heatmap, weights, and their bad inputs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ..nets import tiny_vgg

RANDOM = ["--weights", "random", "--device", "cpu"]


@pytest.fixture
def photo(tmp_path):
    """A real photo (scikit-image's coffee cup) saved as PNG."""
    data = pytest.importorskip("skimage.data")
    path = tmp_path / "coffee.png"
    Image.fromarray(data.coffee()).save(path)
    return path


def test_maps_command(cli, photo, tmp_path):
    out = tmp_path / "maps"
    result = cli("maps", "MODEL", "pool1", str(photo), "-o", str(out), "-k", "4", "--raw", *RANDOM)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "coffee_pool1_maps.json").read_text())
    raw = np.load(out / "coffee_pool1_maps.npy")
    assert raw.shape == (8, 16, 16) == tuple(record["shape"])
    assert record["channels"] == np.argsort(-raw.reshape(8, -1).mean(1))[:4].tolist()
    assert record["stats"]["max"][0] == pytest.approx(float(raw[record["channels"][0]].max()), rel=1e-5)
    assert Image.open(out / "coffee_pool1_maps.png").size[0] > 300


def test_heatmap_command_several_methods(cli, photo, tmp_path):
    out = tmp_path / "hm"
    result = cli("heatmap", "MODEL", str(photo), "-m", "gradcam", "-m", "saliency", "-t", "7", "-o", str(out), *RANDOM)
    assert result.exit_code == 0, result.output
    for method in ("gradcam", "saliency"):
        record = json.loads((out / f"coffee_{method}.json").read_text())
        assert record["method"] == method and record["target"] == 7
        assert np.load(out / f"coffee_{method}.npy").shape == (32, 32)
    assert record["settings"]["reduction"] == "max |.| over color channels"
    assert (out / "coffee_methods.png").exists()


def test_heatmap_command_real_network(cli, photo, tmp_path):
    pytest.importorskip("efficientnet_lite_pytorch")
    result = cli("heatmap", "kernelviz.zoo:efficientnet_lite0", str(photo), "-o", str(tmp_path), "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "coffee.png: top-5 espresso" in result.output
    record = json.loads((tmp_path / "coffee_gradcam.json").read_text())
    assert record["target_name"] == "espresso"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["heatmap", "MODEL", "missing.jpg", *RANDOM], "image not found"),
        (["heatmap", "MODEL", "PHOTO", "-t", "tabby", *RANDOM], "no class names"),
        (["heatmap", "MODEL", "PHOTO", "-t", "1000", *RANDOM], "out of range"),
        (["heatmap", "MODEL", "PHOTO", "-m", "gradcamm", *RANDOM], "unknown method"),
        (["maps", "MODEL", "conv9_1", "PHOTO", *RANDOM], "unknown layer"),
        (["maps", "MODEL", "fc6", "PHOTO", *RANDOM], "no spatial maps"),
        (["weights", "MODEL", "relu1_1", *RANDOM[:2]], "not a Conv2d"),
        (["maps", "MODEL", "conv1_1", "PHOTO", "--cmap", "viridiss", *RANDOM], "unknown colormap 'viridiss'"),
        (["heatmap", "MODEL", "PHOTO", "--cmap", "nope", *RANDOM], "Any matplotlib colormap name works"),
        (["heatmap", "MODEL", "PHOTO", "--layer", "fc6", *RANDOM], "needs a layer with a spatial output"),
    ],
)
def test_exporter_errors(cli, photo, args, message):
    result = cli(*[str(photo) if a == "PHOTO" else a for a in args])
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output


def test_weights_command(cli, tmp_path):
    path = tmp_path / "k.png"
    result = cli("weights", "MODEL", "conv1_1", "-o", str(path), "--weights", "random")
    assert result.exit_code == 0, result.output
    assert Image.open(path).size[0] > 300
    record = json.loads(path.with_suffix(".json").read_text())
    weight = tiny_vgg().features[0].weight.detach()  # the factory is seeded: the same weights as the command's
    assert record["layer"] == "conv1_1" and record["kernel_shape"] == [8, 3, 3, 3]
    assert record["scale"] == pytest.approx(float(weight.abs().max()))
    assert record["filter_norms"] == pytest.approx(weight.flatten(1).norm(dim=1).tolist())
    assert record["model"] == "tests.nets:tiny_vgg" and "versions" in record


def test_heatmap_friction(cli, tmp_path, photo):
    negative = cli("heatmap", "MODEL", str(photo), "-t", "-1", *RANDOM)
    assert negative.exit_code == 1 and "target class -1 is out of range" in negative.output
    Image.fromarray(np.zeros((10, 10, 3), dtype=np.uint8)).save(tmp_path / "tiny.png")
    small = cli("heatmap", "MODEL", str(tmp_path / "tiny.png"), "-o", "hm", *RANDOM)
    assert small.exit_code == 0 and "tiny.png is 10x10 px, upscaled to 32 px" in small.output


def test_integrated_gradients_completeness_warning():
    from types import SimpleNamespace

    from kernelviz.jobs.inspect import _warn_ig
    from kernelviz.jobs.outputs import Log

    said: list[str] = []
    log = Log(warn=said.append)
    maps = torch.full((1, 2, 2), 0.375)  # attributions add up to 1.5
    _warn_ig(SimpleNamespace(delta=torch.tensor([0.5]), maps=maps), 0, "a.png", log)  # score changed by 1.0
    _warn_ig(SimpleNamespace(delta=torch.tensor([0.01]), maps=maps), 0, "b.png", log)  # 0.7%: fine
    assert said == [
        "warning: integrated gradients of a.png miss completeness by 50% (the map does not add up to the score's "
        "change): raise --ig-steps"
    ]


def test_methods_sheet_is_titled_and_colorbars_are_opaque():
    from kernelviz.plot.heatmaps import plot_heatmap

    fig = plot_heatmap(torch.rand(1, 3, 8, 8), [torch.rand(1, 8, 8)], titles=["gradcam @ layer4"], title="net: cat")
    assert fig._suptitle.get_text() == "net: cat"
    colorbars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert colorbars and all(ax.collections[0].get_alpha() in (None, 1.0) for ax in colorbars if ax.collections)


def test_heatmap_score_and_sanity(cli, photo, tmp_path):
    """--score prints and records deletion/insertion next to the reference maps; --sanity the randomization."""
    out = tmp_path / "hm"
    result = cli(
        "heatmap", "MODEL", str(photo), "-m", "gradcam", "-m", "integrated_gradients", "-t", "3", "--score",
        "--sanity", "--baseline", "blur", "--ig-steps", "8", "-o", str(out), "--scale", "shared", *RANDOM,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "deletion (lower is better) / insertion (higher) / ROAD MoRF (lower) / LeRF (higher)" in result.output
    for line in ("  gradcam ", "  integrated_gradients ", "  random map ", "  blob map "):
        assert line in result.output
    assert "coffee.png gradcam sanity, rank correlation by layers randomized (1: " in result.output
    sanity = [ln for ln in result.output.splitlines() if " sanity, rank correlation " in ln]
    assert len(sanity) == 2 and all(
        ln.endswith(
            (
                "ok: the map changes as the network is randomized",
                "FLAGGED: the map survives randomizing half the network",
            )
        )
        for ln in sanity
    )
    record = json.loads((out / "coffee_gradcam.json").read_text())["faithfulness"]
    verdict = next(ln for ln in result.output.splitlines() if ln.startswith("  gradcam: "))
    losses = set(re.findall(r"(deletion|insertion|ROAD MoRF|ROAD LeRF) \([\d.]+ vs the (random|blob) map's", verdict))
    labels = {
        "deletion_auc": "deletion",
        "insertion_auc": "insertion",
        "road_morf_auc": "ROAD MoRF",
        "road_lerf_auc": "ROAD LeRF",
    }
    for key, lower in (
        ("deletion_auc", True),
        ("insertion_auc", False),
        ("road_morf_auc", True),
        ("road_lerf_auc", False),
    ):
        for ref in ("random_map", "blob_map"):
            mine, theirs = record[key], record[ref][key]
            if abs(mine - theirs) > 0.002:  # clear of the table's rounding: the verdict must follow the numbers
                said = (labels[key], ref.removesuffix("_map")) in losses
                assert ((mine > theirs) == lower) == said, (key, ref, verdict)
    assert verdict.endswith((": do not trust it here", "beats the random and the blob map on every score"))
    record = json.loads((out / "coffee_integrated_gradients.json").read_text())
    assert 0 <= record["faithfulness"]["deletion_auc"] <= 1 and "random_map" in record["faithfulness"]
    assert 0 <= record["faithfulness"]["road_morf_auc"] <= 1 and "road_lerf_auc" in record["faithfulness"]["blob_map"]
    assert record["sanity"]["steps"][0]["top_layer"] == "fc8"  # tiny_vgg's logits
    assert "blurred" in record["settings"]["baseline"] and record["settings"]["steps"] == 8
    gradcam = json.loads((out / "coffee_gradcam.json").read_text())
    assert "baseline" not in gradcam["settings"]  # Grad-CAM takes none
    assert record["overlay"]["display_blur_px"] == pytest.approx(32 / 112, abs=0.01)


def test_heatmap_option_warnings(cli, photo):
    said = cli("heatmap", "MODEL", str(photo), "-m", "saliency", "--baseline", "noise", "--aug-smooth", *RANDOM)
    assert said.exit_code == 0, said.output
    assert "--baseline applies to scorecam, integrated_gradients, deeplift, gradient_shap, occlusion" in said.output
    assert "--eigen-smooth and --aug-smooth apply to the CAM methods" in said.output
    plus = cli("heatmap", "MODEL", str(photo), "-m", "gradcam++", "--aug-smooth", *RANDOM)  # a CAM of its own family
    assert plus.exit_code == 0 and "apply to the CAM methods" not in plus.output, plus.output
    record = json.loads(next(Path().glob("*_gradcam++.json")).read_text())
    assert record["settings"]["aug_smooth"] is True
    bad = cli("heatmap", "MODEL", str(photo), "--baseline", "white", *RANDOM)
    assert bad.exit_code == 2 and "'white' is not one of" in bad.output


def test_shared_scale_is_per_family():
    from kernelviz.explain.heatmaps import method_family
    from kernelviz.plot.heatmaps import plot_heatmap

    assert [method_family(m) for m in ("gradcam", "hirescam", "eigencam", "saliency", "deeplift", "occlusion")] == [
        "cam", "cam", "eigencam", "gradient", "attribution", "perturbation",
    ]  # fmt: skip
    maps = [torch.rand(1, 8, 8), 100 * torch.rand(1, 8, 8), torch.rand(1, 8, 8) - 0.5]
    fig = plot_heatmap(torch.rand(1, 3, 8, 8), maps, scale="shared", groups=["cam", "cam", "attribution"])
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(bars) == 2  # one per family
    assert bars[0].get_ylim()[1] > 50 and bars[1].get_ylim()[0] < 0  # the two CAMs share the larger range


def test_ctrl_c_anywhere_is_a_clean_stop(cli, monkeypatch):
    """Ctrl-C outside an optimization (loading, writing, drawing) is a one-line note and status 130, not
    click's "Aborted!" with status 1."""
    import kernelviz.jobs.inspect as jobs

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(jobs, "layer_table", interrupted)
    result = cli("layers", "MODEL", *RANDOM)
    assert result.exit_code == 130
    assert "interrupted: every file already written is whole" in result.output
