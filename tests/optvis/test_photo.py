"""Pictures seeded by a photo: the objectives' known values, caricature and accentuation behaviour, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import kernelviz
from kernelviz.errors import KernelvizError
from kernelviz.optvis.objectives import caricature, deepdream, proximity
from kernelviz.optvis.photo import accentuate, caricature_of, photo_activation

from ..conftest import TEST_SEED, assert_unchanged, snapshot
from ..nets import tiny_vgg


def _correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(np.corrcoef(a.flatten().numpy(), b.flatten().numpy())[0, 1])


def _coffee(side: int = 32) -> torch.Tensor:
    data = pytest.importorskip("skimage.data")
    image = Image.fromarray(data.coffee()).resize((side, side))
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255


def test_the_photo_objectives_known_values():
    """deepdream is the mean square of the activation; proximity 0 at the photo and -1 at an all-zero activation;
    caricature is <a, t>/|t| x cos^p, so the photo's own activation scores |t| and a negated one is floored."""
    a = torch.randn(2, 4, 3, 3)
    assert torch.allclose(deepdream("l")({"l": a}), (a**2).flatten(1).mean(1))
    t = torch.rand(4, 3, 3) + 0.1
    near = proximity("l", t)
    assert torch.allclose(near({"l": t[None]}), torch.zeros(1), atol=1e-7)
    assert torch.allclose(near({"l": torch.zeros(1, 4, 3, 3)}), -torch.ones(1))
    assert float(near({"l": t[None] * 2})) == pytest.approx(-1.0, rel=1e-5)  # as far off as zero, the other way
    for power in (0, 1, 2):
        score = caricature("l", t, power)
        assert float(score({"l": t[None]})) == pytest.approx(float(t.norm()), rel=1e-5)
        scaled = float(score({"l": 3 * t[None]}))
        assert scaled == pytest.approx(3 * float(t.norm()), rel=1e-5)  # cos = 1 whatever the scale
    half = torch.cat([t[:2], torch.zeros(2, 3, 3)])[None]  # cos < 1: power 2 scores less than power 0
    assert float(caricature("l", t, 2)({"l": half})) < float(caricature("l", t, 0)({"l": half}))
    small = torch.nn.functional.interpolate(t[None], size=(2, 2), mode="bilinear")  # another map size: resized
    assert float(caricature("l", t, 0)({"l": small})) == pytest.approx(float(small.norm()), rel=1e-5)
    for bad in (torch.zeros(4, 3, 3), torch.full((4, 3, 3), float("nan"))):
        with pytest.raises(KernelvizError, match="not all zero"):
            caricature("l", bad)
        with pytest.raises(KernelvizError, match="not all zero"):
            proximity("l", bad)
    with pytest.raises(KernelvizError, match="channels"):
        caricature("l", torch.rand(5, 3, 3))({"l": a})


@pytest.mark.calibrated
def test_a_caricature_is_processed_like_its_photo_and_noise_is_not(measured):
    """The caricature's activation at its layer correlates with the photo's far more than a noise image's does
    (tiny seeded network, conv1_2; measured: caricature 0.81, noise 0.33; deeper layers of this untrained network
    correlate with anything: tests/test_real.py checks a trained one), and the model is left as it was. Spread (seeds
    0-3 native AVX-512, seeds 0-1 AVX2-only and one thread): caricature 0.81-0.85."""
    net, photo = tiny_vgg(), _coffee()
    before = snapshot(net)
    target = photo_activation(net, "conv1_2", photo)
    result = caricature_of(net, "conv1_2", photo, settings=kernelviz.DEFAULTS.with_(steps=128, seed=TEST_SEED))
    picture = _correlation(photo_activation(net, "conv1_2", result.images[0]), target)
    noise = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    unrelated = _correlation(photo_activation(net, "conv1_2", noise), target)
    measured("caricature correlation", picture)
    measured("noise correlation", unrelated)
    assert picture > 0.7 and picture > unrelated + 0.3, (picture, unrelated)
    assert result.objective == "caricature(conv1_2, cos^1)"
    assert_unchanged(net, before)


@pytest.mark.calibrated
def test_accentuation_raises_the_unit_and_stays_near_the_photo(measured):
    """Accentuation starts at the photo: every filter's activation grows, the pictures stay nearer the photo than
    with no proximity term, and each picture is its own filter's (batch = one per filter). Spread (seeds 0-3 native,
    0-1 AVX2-only and one thread): activation x1.11-1.28 (threshold 1.05), RMS with weight 4 / weight 0: 0.62-0.63."""
    net, photo = tiny_vgg(), _coffee()
    on_photo = photo_activation(net, "conv3_1", photo).flatten(1).mean(1)
    filters = [int(i) for i in on_photo.argsort(descending=True)[:3]]
    fast = kernelviz.DEFAULTS.with_(steps=64, lr=0.05, seed=TEST_SEED)
    near = accentuate(net, "conv3_1", filters, photo, weight=4.0, settings=fast)
    free = accentuate(net, "conv3_1", filters, photo, weight=0.0, settings=fast)
    for i, n in enumerate(filters):  # measured: x1.12-1.28 (weight 4), x1.24-1.44 (weight 0)
        reached = photo_activation(net, "conv3_1", near.images[i]).flatten(1).mean(1)[n]
        ratio = measured(f"filter {n} activation over the photo's", float(reached / on_photo[n]))
        assert ratio > 1.05, (n, float(reached), float(on_photo[n]))
    rms = [float(((r.images - photo) ** 2).mean().sqrt()) for r in (near, free)]
    measured("RMS from the photo, weight 4 over weight 0", rms[0] / rms[1])
    assert rms[0] < rms[1], rms
    assert near.extra["filters"] == filters and near.extra["reg_layer"] == "conv3_1"
    with pytest.raises(KernelvizError, match="filter"):
        accentuate(net, "conv3_1", [999], photo)


def test_the_photo_commands_write_pictures_and_records(cli, tmp_path):
    photo = tmp_path / "coffee.png"
    Image.fromarray((_coffee(48).permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(photo)
    fast = ["--weights", "random", "--steps", "8"]
    for kind in ("caricature", "dream"):
        out = tmp_path / f"{kind}.png"
        result = cli(kind, "MODEL", "conv2_1", str(photo), "-o", str(out), *fast)
        assert result.exit_code == 0, result.output
        record = json.loads(out.with_suffix(".json").read_text())
        assert record["kind"] == kind and record["photo"] == str(photo) and 0 <= record["rms_from_photo"] <= 1
        assert -1 <= record["cosine_to_photo"] <= 1 and record["settings"]["steps"] == 8
    dreamed = json.loads((tmp_path / "dream.json").read_text())
    assert dreamed["settings"]["lr"] == 0.02 and dreamed["settings"]["init"] == "image"  # dream's own default lr
    folder = tmp_path / "acc"
    result = cli("accentuate", "MODEL", "conv2_1", "1", "3", "--image", str(photo), "-o", str(folder), *fast)
    assert result.exit_code == 0, result.output
    written = sorted(folder.glob("*.png"))
    assert [p.name[-9:] for p in written] == ["_0001.png", "_0003.png"]
    record = json.loads(written[1].with_suffix(".json").read_text())
    assert record["filter"] == 3 and record["weight"] == 1.0 and "photo_activation" in record
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    bad = cli("caricature", "MODEL", "conv2_1", str(broken), *fast)
    assert bad.exit_code == 1 and "Traceback" not in bad.output and "broken.png" in bad.output
    out_of_range = cli("accentuate", "MODEL", "conv2_1", "99", "--image", str(photo), *fast)
    assert out_of_range.exit_code == 1 and "filter 99" in out_of_range.output
