"""Guided backprop and deconvolution follow their rule on every rectifier, not only nn.ReLU."""

from __future__ import annotations

import captum.attr as ca
import pytest
import torch
import torchvision
from torch import nn

import kernelviz
from kernelviz.core.models import model_meta
from kernelviz.errors import KernelvizError
from kernelviz.explain.heatmaps import attribute
from kernelviz.explain.methods import ScoredModel


def _correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten().double(), b.flatten().double()
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])


@pytest.mark.parametrize(
    ("method", "peer"), [("guided_backprop", ca.GuidedBackprop), ("deconvolution", ca.Deconvolution)]
)
def test_equal_to_captum_on_a_relu_network(vgg16, method, peer):
    """On ReLU modules captum's rule and ours are the same: the maps are equal."""
    x = torch.rand(2, 3, 32, 32)
    mine = attribute(vgg16, x, method, target=[1, 2]).maps
    scored = ScoredModel(vgg16, model_meta(vgg16), None, 0)
    with kernelviz.guarded(vgg16), torch.enable_grad():
        theirs = peer(scored).attribute(x.clone().requires_grad_(True), target=[1, 2]).abs().amax(1)
    torch.testing.assert_close(mine, theirs)


@pytest.mark.calibrated
def test_guided_backprop_on_relu6_is_not_the_gradient(real_model, measured):
    """EfficientNet-Lite0 uses ReLU6 only: guided backprop must follow the guided rule there (a reference written
    here with backward hooks on its ReLU6 modules), and so differ from the plain gradient."""
    from kernelviz.zoo import photo

    x = photo("chelsea", 224)[None]
    guided = attribute(real_model, x, "guided_backprop", target=285).maps
    saliency = attribute(real_model, x, "saliency", target=285).maps
    relu6 = [m for m in real_model.modules() if isinstance(m, nn.ReLU6)]
    assert relu6, "the network's rectifiers are ReLU6 modules"
    handles = [m.register_full_backward_hook(lambda mod, gin, gout: (gin[0].clamp(min=0),)) for m in relu6]
    try:
        scored = ScoredModel(real_model, model_meta(real_model), None, 0)
        with kernelviz.guarded(real_model), torch.enable_grad():
            inputs = x.clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(scored(inputs)[:, 285].sum(), inputs)
    finally:
        for handle in handles:
            handle.remove()
    reference = grad.abs().amax(1)
    assert measured("correlation with the ReLU6 reference", _correlation(guided, reference)) > 0.99
    assert (
        measured("correlation with saliency", _correlation(guided, saliency)) < 0.9
    )  # measured 0.18 in the issue: not the plain gradient


def test_hardtanh_leaky_and_functional_rectifiers_are_guided():
    class Mixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.c = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3), nn.Conv2d(4, 4, 3)
            self.fc = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = nn.functional.hardtanh(self.a(x), -0.5, 0.5)
            x = nn.functional.leaky_relu(self.b(x), 0.1)
            x = torch.relu(self.c(x))  # a functional call no module hook sees
            return self.fc(x.mean((2, 3)))

    torch.manual_seed(0)
    net, x = Mixed(), torch.rand(1, 3, 12, 12)
    guided = attribute(net, x, "guided_backprop", target=1).maps
    saliency = attribute(net, x, "saliency", target=1).maps
    assert not torch.allclose(guided, saliency)
    assert float(guided.abs().max()) > 0


def test_smooth_activations_are_refused():
    model = torchvision.models.efficientnet_b0(weights=None).eval()  # SiLU
    with pytest.raises(KernelvizError, match="uses SiLU: its map would be the plain gradient"):
        attribute(model, torch.rand(1, 3, 64, 64), "guided_backprop", target=1)
    linear = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))
    with pytest.raises(KernelvizError, match="has none"):
        attribute(linear, torch.rand(1, 3, 8, 8), "deconvolution", target=1)
