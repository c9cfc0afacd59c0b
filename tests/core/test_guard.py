"""Never change the user's model: weights, buffers, flags and hooks are as before, after success or error."""

from __future__ import annotations

import pytest
import torch
import torchvision

import kernelviz
from kernelviz.core.progress import Progress
from kernelviz.errors import KernelvizError

from ..conftest import assert_unchanged, snapshot


@pytest.fixture
def bn_model_in_train_mode():
    model = torchvision.models.vgg11_bn(weights=None)
    model.train()  # the user left it in train mode: batch norm would update its statistics
    model.features[0].weight.requires_grad_(False)  # a user's mix of frozen and trainable weights
    model.features[2].inplace = False  # a user's mix of in-place flags
    return model


def test_visualize_leaves_model_unchanged(bn_model_in_train_mode):
    model = bn_model_in_train_mode
    before = snapshot(model)
    kernelviz.visualize(model, "relu3_1:2", steps=3, size=32)
    kernelviz.visualize(model, kernelviz.class_logit(7), steps=2, size=32)
    kernelviz.list_layers(model, 32)
    kernelviz.activations(model, torch.rand(1, 3, 32, 32), ["conv2_1", "fc8"])
    assert_unchanged(model, before)
    assert all(p.grad is None for p in model.parameters())


def test_model_unchanged_after_error(bn_model_in_train_mode):
    model = bn_model_in_train_mode
    before = snapshot(model)

    def explode(p: Progress) -> None:
        raise RuntimeError("user callback failed")

    with pytest.raises(RuntimeError, match="user callback"):
        kernelviz.visualize(model, "conv2_1:1", steps=20, size=32, progress=explode)
    with pytest.raises(kernelviz.KernelvizError):
        kernelviz.visualize(model, "conv2_1:9999", steps=2, size=32)
    assert_unchanged(model, before)


def test_works_under_frozen_weights_and_no_grad_context(vgg16):
    for p in vgg16.parameters():
        p.requires_grad_(False)
    try:
        with torch.no_grad():  # a caller's no_grad must not break the optimizer
            result = kernelviz.visualize(vgg16, "conv1_2:0", steps=4, size=32)
    finally:
        for p in vgg16.parameters():
            p.requires_grad_(True)
    assert result.history[-1] > result.history[0]


def test_a_model_that_cannot_take_the_input_is_one_clear_error():
    gray_only = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3))  # expects 1-channel images
    with pytest.raises(KernelvizError, match=r"could not run on this input \(.*1 channels.*3-channel RGB"):
        kernelviz.visualize(gray_only, "0:1", steps=1, size=16)
    too_small = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.MaxPool2d(8), torch.nn.Conv2d(4, 4, 3))
    with pytest.raises(KernelvizError, match=r"larger image size.*--size"):
        kernelviz.feature_maps(too_small, torch.rand(1, 3, 16, 16), "2")


def test_meta_device_weights_are_refused():
    with torch.device("meta"):
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))
    with pytest.raises(KernelvizError, match="meta device"):
        kernelviz.visualize(net, "0:1", steps=1, size=16)


def test_a_size_assertion_inside_the_model_is_one_clear_error():
    class Fixed(torch.nn.Module):  # torchvision's ViT checks its input size with an assert
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            torch._assert(x.shape[-1] == 32, f"Wrong image height! Expected 32 but got {x.shape[-1]}!")
            return self.conv(x)

    with pytest.raises(KernelvizError, match=r"could not run on this input \(Wrong image height"):
        kernelviz.feature_maps(Fixed(), torch.rand(1, 3, 40, 40), "conv")
