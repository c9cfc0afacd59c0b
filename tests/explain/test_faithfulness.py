"""Deletion/insertion scores and the cascading randomization check."""

from __future__ import annotations

import pytest
import torch

from kernelviz.errors import KernelvizError
from kernelviz.explain.faithfulness import _spearman, faithfulness, reference_map, sanity_check
from kernelviz.explain.heatmaps import attribute

from ..conftest import TEST_SEED, assert_unchanged, snapshot


@pytest.fixture(scope="module")
def toy_batch(toy_model):
    from ..toy import NOTHING, make_data

    model, _ = toy_model
    data = make_data(3, seed=557)
    keep = data.labels != NOTHING
    return model, data.images[keep][:12], data.labels[keep][:12].tolist(), data.boxes[keep][:12]


@pytest.mark.calibrated
def test_gradcam_and_the_true_box_beat_a_random_map(toy_batch, measured):
    """On the CNN trained in the session: deleting the pixels Grad-CAM ranks first hurts the class more than
    deleting random ones, and inserting them helps more; so does a map that is the object's true box."""
    model, images, labels, boxes = toy_batch
    before = snapshot(model)
    cam = attribute(model, images, "gradcam", target=labels, layer="relu3_1").maps
    truth = torch.zeros_like(cam)
    for i, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
        truth[i, y0:y1, x0:x1] = 1.0
    scores = {
        name: faithfulness(model, images, maps, targets=labels)
        for name, maps in {"gradcam": cam, "truth": truth, "random": reference_map(cam.shape, "random")}.items()
    }
    assert_unchanged(model, before)
    random = scores["random"]
    # spread of the four margins (seeds 0-4 x native AVX-512, AVX2-only, one thread): 0.323-0.363
    for name in ("gradcam", "truth"):
        deletion = measured(
            f"{name}: deletion below random", float(random.deletion.mean() - scores[name].deletion.mean())
        )
        insertion = measured(
            f"{name}: insertion above random", float(scores[name].insertion.mean() - random.insertion.mean())
        )
        assert deletion > 0.05 and insertion > 0.05, (name, deletion, insertion)
    truth_road, random_road = scores["truth"], scores["random"]
    assert float(truth_road.road_morf.mean()) < float(random_road.road_morf.mean())  # ROAD agrees
    assert float(truth_road.road_lerf.mean()) > float(random_road.road_lerf.mean())
    curves = scores["gradcam"].curves["deletion"]
    assert curves.shape == (12, 21)
    full = model(images).softmax(1)[torch.arange(12), labels]
    torch.testing.assert_close(curves[:, 0], full.detach())  # nothing deleted yet: the image's own probability
    record = scores["gradcam"].record(0)
    assert set(record) >= {"deletion_auc", "insertion_auc", "road_morf_auc", "road_lerf_auc", "score", "steps"}


def test_road_imputation_fills_holes_from_their_neighbours():
    """The harmonic fill of a linear ramp is the ramp: a hole in it is filled back within the noise; kept
    pixels are untouched."""
    from kernelviz.explain.faithfulness import _impute

    ramp = torch.linspace(0, 1, 64).expand(3, 64, 64).clone()
    removed = torch.zeros(2, 1, 64, 64, dtype=torch.bool)
    removed[0, :, 20:40, 10:30] = True
    removed[1, :, ::3, ::2] = True  # scattered pixels
    out = _impute(ramp, removed, torch.Generator().manual_seed(0))
    assert torch.equal(out[:, :, ~removed[0, 0]][0], ramp[:, ~removed[0, 0]])
    hole = removed[0, 0]
    assert float((out[0][:, hole] - ramp[:, hole]).abs().mean()) < 0.03
    assert float((out[1][:, removed[1, 0]] - ramp[:, removed[1, 0]]).abs().mean()) < 0.02


def test_filter_scores_are_relative_to_the_image(toy_batch):
    model, images, _, _ = toy_batch
    result = attribute(model, images[:2], "gradcam", filter="relu3_1:3")
    scores = faithfulness(model, images[:2], result.maps, filter="relu3_1:3")
    torch.testing.assert_close(scores.curves["deletion"][:, 0], torch.ones(2))
    assert "filter" in scores.score


def test_faithfulness_errors(toy_batch):
    model, images, labels, _ = toy_batch
    with pytest.raises(KernelvizError, match="do not match"):
        faithfulness(model, images[:2], torch.rand(3, 32, 32), targets=labels[:2])
    with pytest.raises(KernelvizError, match="unknown reference map"):
        reference_map((1, 4, 4), "stripes")


def test_spearman_known_answers():
    a = torch.arange(16.0).view(1, 4, 4)
    assert float(_spearman(a, a * 3 + 1)) == pytest.approx(1.0)
    assert float(_spearman(a, 15 - a)) == pytest.approx(-1.0)
    assert float(_spearman(a, torch.zeros(1, 4, 4))) == 0.0  # a flat map has no ranking


@pytest.mark.calibrated
def test_cascading_randomization_on_a_copy(toy_batch, measured):
    """Grad-CAM on the trained toy network depends on its weights: the map decorrelates as layers are
    randomized, and the user's model is left as it was.

    Over all 12 images (a random network's Grad-CAM can still follow a bright object, so some images keep a
    high correlation: counting flags on 4 images was at the mercy of which 4). Thresholds: mean correlation
    below 0.5 with the top half random and with every layer random, at most half the images flagged.
    Spread (seeds 0-4 x native AVX-512, AVX2-only, one thread): top half random -0.04 to 0.24, all random 0.11-0.30,
    flagged 0-33%. (On 4 images, at most 1 flagged failed on AVX-512 with the toy network of before.)
    """
    model, images, labels, _ = toy_batch
    result = attribute(model, images, "gradcam", target=labels, layer="relu3_1")
    before = snapshot(model)
    sanity = sanity_check(model, images, result, seed=TEST_SEED)
    assert_unchanged(model, before)
    assert sanity.layers == ["fc6", "conv3_1", "conv2_1", "conv1_1"]
    depths = [d for d, _ in sanity.correlations]
    assert depths[0] == 1 and depths[-1] == 4
    assert sanity.half == 3 and sanity.correlations[1][0] == 3
    assert measured("mean correlation, top half random", float(sanity.correlations[1][1].mean())) < 0.5
    assert measured("mean |correlation|, all random", float(sanity.correlations[-1][1].abs().mean())) < 0.5
    assert measured("share of images flagged", float(sanity.flagged.float().mean())) <= 0.5
    record = sanity.record(0)
    assert record["steps"][0]["top_layer"] == "fc6" and record["insensitive"] == bool(sanity.flagged[0])
