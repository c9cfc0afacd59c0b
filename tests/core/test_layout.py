"""Token and channels-last layouts read as (B, C, h, w) maps: known answers from plain hooks on random-weight
transformers (timm and torchvision), the layer table, and the layout rules themselves."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import kernelviz
from kernelviz.core.layout import Layout, layout_of, prefix_tokens
from kernelviz.optvis.objectives import channel, neuron

timm = pytest.importorskip("timm")


def raw_output(model: nn.Module, x: torch.Tensor, path: str) -> torch.Tensor:
    """The module's own output, from a plain forward hook (no kernelviz code on the way)."""
    seen: list[torch.Tensor] = []
    handle = model.get_submodule(path).register_forward_hook(lambda m, i, o: seen.append(o.detach()))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    return seen[0]


def patch_maps(tokens: torch.Tensor, prefix: int, h: int, w: int) -> torch.Tensor:
    """``(B, N, C)`` -> ``(B, C, h, w)``: the prefix tokens dropped, the patch tokens row by row."""
    return tokens[:, prefix:, :].reshape(tokens.shape[0], h, w, tokens.shape[2]).permute(0, 3, 1, 2)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def vit_b() -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("vit_base_patch16_224", pretrained=False).eval()


def test_timm_vit_mlp_units_are_patch_maps_exactly(vit_b, images):
    """ViT-B/16's MLP activation, 197 tokens of 3072, is read as (3072, 14, 14): the class token dropped."""
    layer = "blocks.6.mlp.act"
    maps = kernelviz.feature_maps(vit_b, images[:1], layer)
    raw = raw_output(vit_b, kernelviz.model_meta(vit_b).normalize(images[:1]), layer)
    assert raw.shape == (1, 197, 3072) and prefix_tokens(vit_b) == 1
    assert maps.shape == (1, 3072, 14, 14)
    assert torch.equal(maps, patch_maps(raw, 1, 14, 14))


def test_channel_objective_is_the_patch_token_mean_and_neuron_a_patch(vit_b, images):
    """channel(layer, c) averages unit c over the 196 patch tokens (the class token left out, as Ghiasi et al.
    read ViT units); neuron() reads one patch token, row-major."""
    layer = "blocks.6.mlp.act"
    x = kernelviz.model_meta(vit_b).normalize(images)
    raw = raw_output(vit_b, x, layer)  # (2, 197, 3072)
    with torch.no_grad(), kernelviz.capture(vit_b, [layer], detach=True) as acts:
        vit_b(x)
    for c in (0, 17, 3071):
        assert torch.allclose(channel(layer, c)(acts), raw[:, 1:, c].mean(1), rtol=1e-5, atol=1e-6)
        assert not torch.allclose(channel(layer, c)(acts), raw[:, :, c].mean(1), rtol=1e-4, atol=1e-6)
    row, col = 3, 10
    assert torch.equal(neuron(layer, 5, x=col, y=row)(acts), raw[:, 1 + row * 14 + col, 5])


def test_register_tokens_and_distillation_token_are_dropped(images):
    """A ViT with 4 register tokens (5 prefix tokens with the class token) and DeiT's distilled model (class +
    distillation) give 14x14 maps of their patch tokens only."""
    torch.manual_seed(0)
    registers = timm.models.vision_transformer.VisionTransformer(
        img_size=224, patch_size=16, embed_dim=64, depth=2, num_heads=2, reg_tokens=4, num_classes=10
    ).eval()
    deit = timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False).eval()
    for model, layer, prefix in ((registers, "blocks.1.mlp.act", 5), (deit, "blocks.3.norm1", 2)):
        assert prefix_tokens(model) == prefix
        raw = raw_output(model, kernelviz.model_meta(model).normalize(images), layer)
        assert raw.shape[1] == prefix + 196
        maps = kernelviz.feature_maps(model, images, layer)
        assert torch.equal(maps, patch_maps(raw, prefix, 14, 14))


def test_torchvision_vit_class_token_dropped(images):
    torch.manual_seed(0)
    model = torchvision.models.vit_b_16(weights=None).eval()
    layer = "encoder.layers.encoder_layer_6.mlp.1"  # the GELU of block 6's MLP
    maps = kernelviz.feature_maps(model, images[:1], layer)
    raw = raw_output(model, kernelviz.model_meta(model).normalize(images[:1]), layer)
    assert raw.shape == (1, 197, 3072) and maps.shape == (1, 3072, 14, 14)
    assert torch.equal(maps, patch_maps(raw, 1, 14, 14))


@pytest.mark.parametrize("library", ["torchvision", "timm"])
def test_swin_channels_last_stage_is_its_permuted_output(library, images):
    """Swin's stages are channels-last (B, h, w, C): read as (B, C, h, w), exactly the permuted output; its MLP
    units (tokens in timm, channels-last in torchvision) as the same 14x14 grid."""
    torch.manual_seed(0)
    if library == "torchvision":
        model = torchvision.models.swin_t(weights=None).eval()
        stage, mlp = "features.5", "features.5.1.mlp.1"
    else:
        model = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False).eval()
        stage, mlp = "layers.2", "layers.2.blocks.1.mlp.act"
    x = kernelviz.model_meta(model).normalize(images[:1])
    raw = raw_output(model, x, stage)
    assert raw.shape == (1, 14, 14, 384)
    assert torch.equal(kernelviz.feature_maps(model, images[:1], stage), raw.permute(0, 3, 1, 2))
    mlp_maps = kernelviz.feature_maps(model, images[:1], mlp)
    raw_mlp = raw_output(model, x, mlp)
    assert mlp_maps.shape == (1, 1536, 14, 14)
    expected = raw_mlp.permute(0, 3, 1, 2) if raw_mlp.dim() == 4 else patch_maps(raw_mlp, 0, 14, 14)
    assert torch.equal(mlp_maps, expected)


def test_layer_table_lists_units_grid_and_patch_fields(vit_b):
    rows = {r.path: r for r in kernelviz.list_layers(vit_b, 224)}
    act = rows["blocks.6.mlp.act"]
    assert (act.shape, act.output, act.layout, act.prefix, act.channels) == (
        (3072, 14, 14),
        (197, 3072),
        "tokens",
        1,
        3072,
    )
    # the MLP's Linear layers work on each token alone: a position keeps its patch's field (16 px, stride 16)
    assert (act.receptive_field, act.stride, act.offset) == (16, 16, 8.0)
    assert rows["head"].layout == "other" and rows["head"].receptive_field is None
    swin = {r.path: r for r in kernelviz.list_layers(torchvision.models.swin_t(weights=None).eval(), 224)}
    # patch merging (2x2 by the forward's own reshaping) doubles the stride at each stage
    assert [swin[f"features.{k}.1.mlp.1"].stride for k in (1, 3, 5, 7)] == [4, 8, 16, 32]


@pytest.mark.parametrize(
    ("model", "first", "count"),
    [
        (lambda: timm.create_model("vit_small_patch16_224", pretrained=False), "blocks.0.mlp.act", 12),
        (lambda: torchvision.models.vit_b_16(weights=None), "encoder.layers.encoder_layer_0.mlp.1", 12),
        (lambda: torchvision.models.swin_v2_t(weights=None), "features.1.0.mlp.1", 12),  # not the cpb_mlp of attention
        (lambda: torchvision.models.resnet18(weights=None), "conv1", 20),
    ],
)
def test_default_units_are_a_transformers_mlp_activations(model, first, count):
    """The layers an atlas or a scan reads by default: every block's MLP activation of a transformer (Ghiasi et
    al.'s readable units), every convolution of a CNN."""
    from kernelviz.core.layers import default_units

    net = model().eval()
    units = default_units(net, kernelviz.list_layers(net, 224))
    assert units[0].name == first and len(units) == count


def test_non_square_input_grid():
    """An input other than 224 (timm's dynamic_img_size) gives the grid of that input, 14x20 for 224x320."""
    torch.manual_seed(0)
    model = timm.models.vision_transformer.VisionTransformer(
        img_size=224, patch_size=16, embed_dim=32, depth=1, num_heads=2, num_classes=4, dynamic_img_size=True
    ).eval()
    x = torch.rand(1, 3, 224, 320)
    maps = kernelviz.feature_maps(model, x, "blocks.0.mlp.act")
    raw = raw_output(model, kernelviz.model_meta(model).normalize(x), "blocks.0.mlp.act")
    assert maps.shape == (1, 128, 14, 20)
    assert torch.equal(maps, patch_maps(raw, 1, 14, 20))


@pytest.mark.parametrize(
    ("shape", "size", "prefix", "expected"),
    [
        ((1, 197, 768), (224, 224), 1, Layout("tokens", 1, (14, 14))),
        ((1, 196, 768), (224, 224), 1, Layout("tokens", 0, (14, 14))),  # a patch embedding, before the class token
        ((1, 198, 768), (224, 224), None, Layout("tokens", 2, (14, 14))),  # prefix guessed: the smallest that fits
        ((1, 281, 64), (224, 320), 1, Layout("tokens", 1, (14, 20))),
        ((1, 56, 56, 96), (224, 224), None, Layout("channels_last", 0, (56, 56))),
        ((1, 96, 56, 56), (224, 224), None, Layout("map", 0, (56, 56))),
        ((1, 7, 7, 7), (224, 224), None, Layout("map", 0, (7, 7))),  # both fit: a map
        ((64, 49, 96), (224, 224), None, Layout("other")),  # Swin's windows: not the input's batch
        ((1, 1000), (224, 224), None, Layout("other")),
        ((1, 197, 768), (224, 224), 3, Layout("other")),  # 194 tokens are no grid of a square image
    ],
)
def test_layout_rules(shape, size, prefix, expected):
    assert layout_of(shape, size, prefix, batch=1) == expected


def test_from_map_inverts_to_map():
    t = torch.randn(2, 197, 8)
    layout = layout_of(t.shape, (224, 224), 1)
    assert torch.equal(layout.from_map(layout.to_map(t), t), t)
    cl = torch.randn(2, 7, 7, 8)
    layout = layout_of(cl.shape, (224, 224))
    assert torch.equal(layout.from_map(layout.to_map(cl), cl), cl)
