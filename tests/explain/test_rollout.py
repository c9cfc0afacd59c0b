"""Attention rollout and its gradient-weighted form: the probabilities read equal a hand computation, a known
answer for uniform attention, class-specific gradients, the model left as it was, window attention refused."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import kernelviz
from kernelviz.explain.rollout import attention_probabilities

from ..conftest import assert_unchanged, snapshot

timm = pytest.importorskip("timm")


def small_vit(**kwargs) -> nn.Module:
    torch.manual_seed(0)
    model = timm.models.vision_transformer.VisionTransformer(
        img_size=64, patch_size=16, embed_dim=32, depth=3, num_heads=2, num_classes=6, **kwargs
    ).eval()
    return kernelviz.set_model_meta(model, input_size=64, mean=(0.5,) * 3, std=(0.25,) * 3)


def by_hand(attn: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """timm Attention's probabilities ``(B, heads, N, N)`` from its weights: softmax(q k^T / sqrt(d))."""
    b, n, c = tokens.shape
    qkv = attn.qkv(tokens).reshape(b, n, 3, attn.num_heads, c // attn.num_heads).permute(2, 0, 3, 1, 4)
    q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])
    return (q @ k.transpose(-2, -1) * attn.scale).softmax(-1)


def test_probabilities_read_equal_the_hand_computation():
    model = small_vit()
    x = torch.rand(2, 3, 64, 64)
    inputs = []
    fused = [block.attn.fused_attn for block in model.blocks]
    handle = model.blocks[1].attn.register_forward_hook(lambda m, i, o: inputs.append(i[0].detach()))
    with torch.no_grad(), attention_probabilities(model) as maps:
        model(x)
    handle.remove()
    assert len(maps) == 3 and maps[1].shape == (2, 2, 17, 17)
    torch.testing.assert_close(maps[1], by_hand(model.blocks[1].attn, inputs[0]))
    assert [block.attn.fused_attn for block in model.blocks] == fused  # the fused kernel switched back


def test_torchvision_multihead_attention_weights_per_head():
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(64, 16, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64).eval()
    mha = model.encoder.layers[0].self_attention
    x = torch.rand(1, 3, 64, 64)
    inputs = []
    handle = mha.register_forward_hook(lambda m, i, o: inputs.append(i[0].detach()))
    with torch.no_grad(), attention_probabilities(model) as maps:
        out = model(x)
    handle.remove()
    _, expected = mha(inputs[0], inputs[0], inputs[0], need_weights=True, average_attn_weights=False)
    torch.testing.assert_close(maps[0].view(1, 2, 17, 17), expected)
    with torch.no_grad():  # the model's own call (need_weights=False: another attention kernel) is back
        torch.testing.assert_close(model(x), out, rtol=1e-5, atol=1e-6)
    assert not mha._forward_pre_hooks and not mha._forward_hooks


def test_uniform_attention_rolls_out_to_the_closed_form():
    """With q = k = 0 every attention is uniform, U; (0.5 U + 0.5 I)^L = 0.5^L I + (1 - 0.5^L) U, so the class token
    gives each of the 16 patches (1 - 0.5^L) / 17, whatever the image."""
    model = small_vit()
    with torch.no_grad():
        for block in model.blocks:
            block.attn.qkv.weight[: 2 * 32] = 0
            block.attn.qkv.bias[: 2 * 32] = 0
    out = kernelviz.attribute(model, torch.rand(2, 3, 64, 64), "rollout")
    torch.testing.assert_close(out.maps, torch.full((2, 64, 64), (1 - 0.5**3) / 17))


def test_attention_gradient_depends_on_the_class_rollout_does_not():
    model = small_vit()
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    before = snapshot(model)
    fused = [block.attn.fused_attn for block in model.blocks]
    grad = [kernelviz.attribute(model, x, "attention_gradient", target=t).maps for t in (0, 3)]
    roll = [kernelviz.attribute(model, x, "rollout", target=t).maps for t in (0, 3)]
    assert not torch.allclose(grad[0], grad[1]) and float(grad[0].max()) > 0
    assert torch.equal(roll[0], roll[1])
    assert_unchanged(model, before)  # weights, hooks, flags, gradients
    assert [block.attn.fused_attn for block in model.blocks] == fused


def test_window_attention_is_refused():
    swin = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False).eval()
    with pytest.raises(kernelviz.KernelvizError, match="within windows"):
        kernelviz.attribute(swin, torch.rand(1, 3, 224, 224), "rollout")
