"""Activation capture against hook-free references; hooks never outlive the block."""

from __future__ import annotations

import pytest
import torch
import torchvision

import kernelviz
from kernelviz.core.capture import capture, output_tensor
from kernelviz.errors import KernelvizError

from ..conftest import assert_unchanged, snapshot


def test_capture_equals_reference_pre_and_post_relu(vgg16):
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref_conv = vgg16.features[:13](x.clone())  # ends at conv3_2: nothing in-place after it
        ref_relu = torch.relu(ref_conv)
        with capture(vgg16, ["conv3_2", "relu3_2", "features.12"]) as acts:
            vgg16(x)
    torch.testing.assert_close(acts["conv3_2"], ref_conv)
    torch.testing.assert_close(acts["relu3_2"], ref_relu)
    assert (acts["conv3_2"] < 0).any(), "pre-ReLU values must keep their negative part"
    assert acts["features.12"] is acts["conv3_2"]


def test_capture_stop_skips_the_rest(vgg16):
    later = []
    handle = vgg16.features[14].register_forward_hook(lambda *a: later.append(1))
    try:
        acts = kernelviz.activations(vgg16, torch.randn(1, 3, 32, 32), "conv3_2")
    finally:
        handle.remove()
    assert later == []
    assert acts["conv3_2"].shape == (1, 256, 8, 8)


def test_hooks_removed_even_when_block_raises(vgg16):
    before = snapshot(vgg16)
    with pytest.raises(RuntimeError, match="boom"), capture(vgg16, ["conv3_2", "fc8"]):
        vgg16(torch.randn(1, 3, 32, 32))
        raise RuntimeError("boom")
    assert_unchanged(vgg16, before)
    assert all(m.inplace for m in vgg16.modules() if isinstance(m, torch.nn.ReLU))


def test_capture_gradients_flow(vgg16):
    x = torch.randn(1, 3, 32, 32, requires_grad=True)
    with capture(vgg16, "relu3_2", stop=True) as acts:
        vgg16(x)
    acts["relu3_2"][:, 5].mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for p in vgg16.parameters():
        p.grad = None


def test_output_tensor_reads_tuples_and_dicts():
    x = torch.ones(2, 3)
    assert output_tensor(x) is x
    assert output_tensor((x, x * 2)) is x and output_tensor([None, x]) is x
    assert output_tensor({"logits": x, "aux": x * 2}) is x and output_tensor({"out": x}) is x
    assert output_tensor({"only": x}) is x
    with pytest.raises(KernelvizError, match=r"dict with tensors \['a', 'b'\]"):
        output_tensor({"a": x, "b": x})
    with pytest.raises(KernelvizError, match="returns str, not a tensor"):
        output_tensor("nope")


def test_a_module_that_runs_several_times_is_named_by_run():
    """ResNet's BasicBlock applies one ReLU module twice: after bn1, and after the residual addition."""
    model = torchvision.models.resnet18(weights=None).eval()
    x = torch.rand(2, 3, 64, 64)
    with pytest.raises(KernelvizError, match=r"runs 2 times .* layer1\.0\.relu#1, layer1\.0\.relu#2"):
        kernelviz.activations(model, x, "layer1.0.relu")
    acts = kernelviz.activations(model, x, ["layer1.0.relu#1", "layer1.0.relu#2"])
    with torch.no_grad():  # the hook-free reference
        stem = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        block = model.layer1[0]
        first = torch.relu(block.bn1(block.conv1(stem)))
        second = torch.relu(block.bn2(block.conv2(first)) + stem)
    torch.testing.assert_close(acts["layer1.0.relu#1"], first)
    torch.testing.assert_close(acts["layer1.0.relu#2"], second)
    names = [r.name for r in kernelviz.list_layers(model, 64) if r.path == "layer1.0.relu"]
    assert names == ["layer1.0.relu#1", "layer1.0.relu#2"]
    with pytest.raises(KernelvizError, match=r"runs 2 time.*not 3"):
        kernelviz.activations(model, x, "layer1.0.relu#3")
    with pytest.raises(KernelvizError, match="cannot explain one run"):
        kernelviz.attribute(model, x, "gradcam", target=1, layer="layer1.0.relu")
    result = kernelviz.visualize(model, "layer1.0.relu#2:3", steps=2, size=32)
    assert result.steps_done == 2
