"""DeepLift, GradientShap, InputXGradient, feature ablation, baselines and IG's steps: known answers and peers."""

from __future__ import annotations

import captum.attr as ca
import pytest
import torch
from torch import nn

import kernelviz
from kernelviz.core.models import model_meta
from kernelviz.errors import KernelvizError
from kernelviz.explain.baselines import BASELINES, baseline_image
from kernelviz.explain.heatmaps import IG_TOLERANCE, attribute
from kernelviz.explain.methods import ScoredModel


def _linear() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))
    kernelviz.set_model_meta(net, mean=(0.4, 0.5, 0.6), std=(1.0, 1.0, 1.0), input_size=8)
    return net, net[1].weight[1].detach().view(3, 8, 8)


def test_baselines():
    x = torch.rand(2, 3, 40, 40)
    assert baseline_image(x, "black").abs().max() == 0
    mean = baseline_image(x, "mean", (0.1, 0.2, 0.3))
    assert mean[:, :, 5, 7].tolist() == [[pytest.approx(0.1), pytest.approx(0.2), pytest.approx(0.3)]] * 2
    blur = baseline_image(x, "blur")
    assert blur.std() < 0.3 * x.std()  # the pixel noise is gone
    torch.testing.assert_close(blur.mean((2, 3)), x.mean((2, 3)), atol=0.03, rtol=0)  # colors kept
    torch.testing.assert_close(baseline_image(x, "noise"), baseline_image(x, "noise"))  # seeded
    with pytest.raises(KernelvizError, match="unknown baseline 'white'"):
        baseline_image(x, "white")


@pytest.mark.parametrize("kind", BASELINES)
def test_linear_model_reference_methods_explain_the_change_from_the_baseline(kind):
    """A linear model's integrated gradients, DeepLift and input x gradient are ``(x - x0) * w``."""
    net, w = _linear()
    x = torch.rand(1, 3, 8, 8)
    x0 = baseline_image(x, kind, (0.4, 0.5, 0.6))[0]
    expected = ((x[0] - x0) * w).sum(0)
    for method in ("integrated_gradients", "deeplift"):
        got = attribute(net, x, method, target=1, baseline=kind)
        torch.testing.assert_close(got.maps[0], expected, rtol=1e-4, atol=1e-5, msg=method)
        assert abs(float(got.delta[0])) < 1e-4
        assert kind.split()[0] in got.settings["baseline"] or kind == "mean"
    torch.testing.assert_close(attribute(net, x, "input_x_gradient", target=1).maps[0], (x[0] * w).sum(0))
    with pytest.raises(KernelvizError, match="saliency has no baseline"):
        attribute(net, x, "saliency", target=1, baseline=kind)


class _Mixed(nn.Module):
    """ReLU6 modules, a ReLU module used twice, a functional ReLU and a SiLU: what captum's DeepLift cannot take."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.c3 = nn.Conv2d(8, 8, 3, padding=1)
        self.six = nn.ReLU6()
        self.shared = nn.ReLU()
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.six(self.c1(x) * 4)
        h = self.shared(self.c2(h)) + h
        h = nn.functional.silu(self.shared(self.c3(h)) - 0.1)
        return self.fc(torch.relu(h).mean((2, 3)))


def test_deeplift_sums_to_the_score_change_on_any_activation():
    """DeepLift's Rescale rule makes attributions add up to ``y(x) - y(x0)`` exactly when every nonlinearity
    gets it: true here for ReLU6, a shared ReLU module, functional calls and SiLU."""
    torch.manual_seed(0)
    net = _Mixed()
    x = torch.rand(2, 3, 12, 12)
    result = attribute(net, x, "deeplift", target=[0, 2], baseline="blur")
    logits = (
        net(x)[torch.arange(2), torch.tensor([0, 2])]
        - net(baseline_image(x, "blur"))[torch.arange(2), torch.tensor([0, 2])]
    )
    torch.testing.assert_close(result.maps.sum((1, 2)), logits.detach(), rtol=1e-4, atol=1e-4)
    assert float(result.delta.abs().max()) < 1e-4
    saliency_like = attribute(net, x, "input_x_gradient", target=[0, 2]).maps
    assert not torch.allclose(result.maps, saliency_like, atol=1e-3)  # not silently the gradient


def test_deeplift_equals_captum_on_relu_modules():
    torch.manual_seed(1)
    net = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(6, 6, 3, stride=2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(6 * 5 * 5, 4),
    )
    x = torch.rand(2, 3, 12, 12)
    mine = attribute(net, x, "deeplift", target=[1, 3]).maps
    scored = ScoredModel(net, model_meta(net), None, 0)
    with kernelviz.guarded(net), torch.enable_grad():
        theirs = (
            ca.DeepLift(scored)
            .attribute(x.clone().requires_grad_(True), baselines=torch.zeros_like(x), target=[1, 3])
            .sum(1)
        )
    torch.testing.assert_close(mine, theirs.detach(), rtol=1e-4, atol=1e-6)


def test_gradient_shap_approximates_the_reference_change():
    """For a linear model GradientShap's expectation is ``(x - E[x0]) * w`` up to its input noise."""
    net, w = _linear()
    x = torch.rand(1, 3, 8, 8)
    got = attribute(net, x, "gradient_shap", target=1, baseline="black", shap_samples=64).maps[0]
    expected = (x[0] * w).sum(0)
    corr = torch.corrcoef(torch.stack([got.flatten(), expected.flatten()]))[0, 1]
    assert corr > 0.9
    default = attribute(net, x, "gradient_shap", target=1)
    assert "black" in default.settings["baseline"] and "noise" in default.settings["baseline"]


def test_feature_ablation_removes_superpixels():
    """Score = the sum of the pixels in a window: removing a superpixel (to black) drops the score by the
    sum of its pixels inside the window, and every pixel of the superpixel carries that drop."""
    pytest.importorskip("skimage")
    from skimage.segmentation import slic

    weight = torch.zeros(3, 24, 24)
    weight[:, 4:14, 6:18] = 1.0
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 24 * 24, 1, bias=False))
    with torch.no_grad():
        net[1].weight.copy_(weight.flatten()[None])
    kernelviz.set_model_meta(net, mean=None, std=None, input_size=24)
    torch.manual_seed(0)
    x = torch.rand(1, 3, 24, 24)
    x[:, :, :12] *= 0.3  # two regions SLIC can tell apart
    got = attribute(net, x, "feature_ablation", target=0, baseline="black", segments=16)
    labels = torch.from_numpy(
        slic(x[0].permute(1, 2, 0).double().numpy(), n_segments=16, compactness=10, start_label=0, channel_axis=-1)
    )
    expected = torch.zeros(24, 24)
    for s in labels.unique():
        region = labels == s
        expected[region] = float((x[0] * weight)[:, region].sum())
    torch.testing.assert_close(got.maps[0], expected, rtol=1e-4, atol=1e-5)
    assert "SLIC" in got.settings["superpixels"]


def test_integrated_gradients_chooses_its_steps(tiny):
    """With no steps given, IG doubles them until its completeness error is within the tolerance."""
    torch.manual_seed(3)
    x = torch.rand(2, 3, 32, 32)
    auto = attribute(tiny, x, "integrated_gradients", target=[0, 1])
    change = auto.maps.sum((1, 2)) - auto.delta
    assert auto.settings["steps"] == 256 or float((auto.delta / change).abs().max()) <= IG_TOLERANCE
    assert "doubled" in auto.settings["steps_chosen"]
    fixed = attribute(tiny, x, "integrated_gradients", target=[0, 1], ig_steps=4)
    assert fixed.settings["steps"] == 4 and fixed.settings["steps_chosen"] == "fixed"


@pytest.mark.parametrize("method", ["smoothgrad", "gradient_shap"])
def test_stochastic_methods_are_reproducible_and_leave_the_callers_generators(tiny, method):
    import numpy as np

    x = torch.rand(1, 3, 32, 32)
    torch.manual_seed(5)
    np.random.seed(5)
    first = attribute(tiny, x, method, target=1)
    after = (torch.rand(1), np.random.rand())
    torch.manual_seed(5)
    np.random.seed(5)
    torch.rand(7)  # the caller's generators moved: the map must not
    second = attribute(tiny, x, method, target=1)
    torch.testing.assert_close(first.maps, second.maps, rtol=0, atol=0)
    torch.manual_seed(5)
    np.random.seed(5)
    attribute(tiny, x, method, target=1)
    assert (torch.rand(1), np.random.rand()) == after
    assert first.settings["seed"] == 0
