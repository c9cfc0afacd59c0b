"""Dataset scans, examples and pictures of a vision transformer's units: each unit is a channel on the patch grid
(the class token left out), its default layers are the blocks' MLP activations, and an example is cropped at its
strongest patch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import kernelviz

timm = pytest.importorskip("timm")

SIZE, PATCH = 64, 16


@pytest.fixture(scope="module")
def vit() -> nn.Module:
    torch.manual_seed(0)
    model = timm.models.vision_transformer.VisionTransformer(
        img_size=SIZE, patch_size=PATCH, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0, num_classes=5
    ).eval()
    return kernelviz.set_model_meta(model, input_size=SIZE, mean=(0.5,) * 3, std=(0.25,) * 3)


def photos(root: Path, count: int) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = root / f"img{i:02d}.png"
        Image.fromarray((rng.random((SIZE, SIZE, 3)) * 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def patch_tokens(model: nn.Module, files: list[Path], layer: str) -> torch.Tensor:
    """``(N, C, patches)``: the layer's patch tokens (the class token dropped), from a plain forward hook."""
    out = []
    handle = model.get_submodule(layer).register_forward_hook(lambda m, i, o: out.append(o.detach()[:, 1:]))
    try:
        with torch.no_grad():
            for f in files:
                model(kernelviz.model_meta(model).normalize(kernelviz.load_image(f, SIZE)[None]))
    finally:
        handle.remove()
    return torch.cat(out).transpose(1, 2)


def test_scan_ranks_the_patch_tokens_of_every_mlp_unit(vit, tmp_path):
    files = photos(tmp_path, 12)
    scan = kernelviz.scan_units(vit, tmp_path, k=3, workers=0)
    assert list(scan.layers) == ["blocks.0.mlp.act", "blocks.1.mlp.act"]  # the default units of a transformer
    for layer in scan.layers:
        acts = patch_tokens(vit, files, layer)  # (12, 64, 16)
        assert scan.layers[layer].grid == (4, 4)
        top = acts.amax(2)  # (N, C)
        ranking = scan.layers[layer].ranking("top")
        # float weights: batched and one-image forwards may differ in the last bits (kernels vary by CPU)
        torch.testing.assert_close(ranking.values, top.topk(3, dim=0).values.T, rtol=1e-5, atol=1e-6)
        best = ranking.images[:, 0]  # (C,)
        picked = acts[best, torch.arange(acts.shape[1])]  # (C, patches): each unit's best image
        two = picked.topk(2, dim=1).values
        clear = (two[:, 0] - two[:, 1]) > 1e-4  # positions compared where the strongest patch is not a near-tie
        assert clear.float().mean() > 0.9
        assert torch.equal(ranking.positions[clear, 0], picked.argmax(1)[clear])


def test_an_example_is_cropped_at_its_strongest_patch(vit, tmp_path):
    photos(tmp_path, 6)
    found = kernelviz.find_examples(vit, "blocks.1.mlp.act", [3, 40], tmp_path, k=2, workers=0)
    for examples in found.examples.values():
        for ex in examples:
            r, c = ex.position
            assert ex.box == (c * PATCH, r * PATCH, (c + 1) * PATCH, (r + 1) * PATCH)
            assert ex.crop.shape == (3, PATCH, PATCH)


def test_a_units_picture_raises_its_patch_token_mean(vit):
    """The picture of unit 7 of block 1's MLP (the mean over the patch tokens) beats the start noise; the fixed
    input size is kept through the transforms (a timm ViT refuses any other size)."""
    result = kernelviz.visualize(vit, kernelviz.channel("blocks.1.mlp.act", 7), steps=24, seed=0)
    assert result.images.shape == (1, 3, SIZE, SIZE)
    assert float(result.final[0]) > float(result.history[0, 0])
