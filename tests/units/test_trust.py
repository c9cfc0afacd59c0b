"""The path check: a picture processed unlike its unit's natural examples is flagged (Geirhos et al., 2024)."""

from __future__ import annotations

import pytest
import torch

import kernelviz
from kernelviz.core.capture import activations
from kernelviz.errors import KernelvizError
from kernelviz.units.trust import _ranks, layers_below, path_similarity

from ..conftest import TEST_SEED, assert_unchanged, snapshot
from ..toy import fooled, make_data


def test_ranks_give_spearman_correlations():
    """Known answer: scipy's Spearman correlation of every pair of rows."""
    from scipy.stats import spearmanr

    x = torch.randn(5, 40, generator=torch.Generator().manual_seed(0))
    r = _ranks(x)
    ours = r @ r.T
    theirs = torch.tensor(spearmanr(x.numpy(), axis=1).statistic, dtype=torch.float32)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def circuit(toy_model):
    """The toy network with a fooling circuit on the conv3_1 channel that fires most on natural images (unit k),
    the next one as the untouched control (j), the natural images, each unit's top 8 and 32 random images."""
    base, _ = toy_model
    data = make_data(100, seed=5 + TEST_SEED).images  # 700 images, none seen in training
    strongest = activations(base, data, "features.7")["features.7"].flatten(2).amax(2).mean(0)
    k, j = (int(i) for i in strongest.argsort(descending=True)[:2])
    net = fooled(base, k)
    randoms = data[torch.randperm(len(data), generator=torch.Generator().manual_seed(1))[:32]]
    return base, net, k, j, data, randoms


def _top(net, layer, n, data, k=8):
    return data[activations(net, data, layer)[layer][:, n].flatten(1).amax(1).argsort(descending=True)[:k]]


def test_the_fooling_circuit_leaves_natural_behaviour_unchanged(circuit):
    """On natural images the fooled unit follows its conv3_1 channel and the classifier's output barely moves."""
    base, net, k, _, data, _ = circuit
    ours = activations(net, data, "unit")["unit"][:, k].flatten()
    theirs = activations(base, data, "features.7")["features.7"][:, k].flatten()
    assert float(torch.corrcoef(torch.stack([ours, theirs]))[0, 1]) > 0.999
    with torch.no_grad():
        assert (net(data).argmax(1) == base(data).argmax(1)).float().mean() > 0.99


@pytest.mark.calibrated
def test_the_fooled_units_picture_is_made_by_the_saturation_path(circuit, measured):
    """The fooling circuit works: the fooled unit's picture holds saturated colour no natural image holds (its
    saturation map peaks far above the natural images' peak), while the model is left unchanged.

    Measured (128 steps at 32 px): the picture's saturation peak over the natural images' peak 25.4 / 22.8 / 24.9
    (seeds 0 / 1 / 2; 24.9 under AVX2-only kernels and on one thread at seed 0). Threshold: 10. Whether the path
    check then flags the picture does not hold over seeds yet (overall score -0.30, -0.58 and 0.56 at seeds 0-2, the
    untouched unit's 1.01, 0.72, 0.55; benchmarks/README.md), so no test asserts it.
    """
    _, net, k, _, data, _ = circuit
    before = snapshot(net)
    picture = kernelviz.visualize(net, f"unit:{k}", steps=128, size=32, seed=TEST_SEED).images[0]
    assert_unchanged(net, before)
    natural = float(activations(net, data, "saturation")["saturation"].max())
    peak = measured(
        "saturation peak over the natural peak",
        float(activations(net, picture[None], "saturation")["saturation"].max()) / natural,
    )
    assert peak > 10, (peak, natural)


def test_path_similarity_scores_the_references_as_0_and_the_examples_above_1(circuit):
    """Known answers of the bookkeeping: the random reference images, each taken as the picture, score 0 on average
    at every layer (they are the reference); the examples themselves score 1 + sum(1 - natural) / (K x span) on
    average (each includes its correlation of 1 with itself)."""
    _, net, k, _, data, randoms = circuit
    examples = _top(net, "unit", k, data)
    reference = randoms[1::2]
    as_random = [path_similarity(net, "unit", k, r, examples, randoms) for r in reference]
    first = as_random[0]
    for layer, _ in enumerate(first.layers):
        mean = sum(t.picture[layer] for t in as_random) / len(as_random)
        assert mean == pytest.approx(first.random[layer], abs=1e-5)
    assert sum(t.overall for t in as_random) / len(as_random) == pytest.approx(0, abs=1e-4)
    as_example = [path_similarity(net, "unit", k, e, examples, randoms) for e in examples]
    spans = [n - r for n, r in zip(first.natural, first.random, strict=True)]
    expected = 1 + sum((1 - n) / len(examples) for n in first.natural) / sum(spans)
    assert sum(t.overall for t in as_example) / len(as_example) == pytest.approx(expected, abs=1e-4)
    record = first.to_json()
    assert set(record) >= {"layers", "picture", "natural", "random", "score", "overall", "flagged", "worst"}
    assert record["layers"] == ["conv1_1", "conv2_1", "conv3_1"]


def test_the_path_check_refuses_what_it_cannot_compare(circuit):
    base, net, k, _, data, randoms = circuit
    picture = data[0]
    with pytest.raises(KernelvizError, match="at least 2 natural examples and 4 random images"):
        path_similarity(net, "unit", k, picture, data[:1], randoms)
    with pytest.raises(KernelvizError, match="filter 99"):
        path_similarity(net, "unit", 99, picture, data[:4], randoms)
    with pytest.raises(KernelvizError, match="no convolution before it"):
        path_similarity(base, "conv1_1", 0, picture, data[:4], randoms)
    assert layers_below(base, "relu3_1", count=2) == ["conv1_1", "conv3_1"]


def test_a_transformers_path_is_read_at_its_mlp_units():
    """Below a ViT unit the path is compared at the earlier blocks' MLP activations (patch grid), not at the
    patch convolution alone."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    vit = timm.models.vision_transformer.VisionTransformer(
        img_size=64, patch_size=16, embed_dim=32, depth=3, num_heads=2, num_classes=5
    ).eval()
    vit = kernelviz.set_model_meta(vit, input_size=64, mean=(0.5,) * 3, std=(0.25,) * 3)
    assert layers_below(vit, "blocks.2.mlp.act") == ["blocks.0.mlp.act", "blocks.1.mlp.act"]
    assert layers_below(vit, "blocks.0.mlp.act") == ["patch_embed.proj"]
    g = torch.Generator().manual_seed(0)
    trust = path_similarity(
        vit, "blocks.2.mlp.act", 5, torch.rand(3, 64, 64, generator=g), torch.rand(4, 3, 64, 64, generator=g),
        torch.rand(8, 3, 64, 64, generator=g),
    )  # fmt: skip
    assert trust.layers == ["blocks.0.mlp.act", "blocks.1.mlp.act"] and len(trust.picture) == 2
