"""Heatmaps at a vision transformer's token layers: Grad-CAM equals pytorch-grad-cam's ViT recipe, and the prefix
tokens the model declares (class, distillation) are the ones dropped."""

from __future__ import annotations

import pytest
import torch

import kernelviz
from kernelviz import zoo

timm = pytest.importorskip("timm")
pytest.importorskip("pytorch_grad_cam")

TARGETS = [1, 7, 42, 300]


def peer_gradcam(model: torch.nn.Module, images: torch.Tensor, prefix: int) -> torch.Tensor:
    """pytorch-grad-cam's ViT recipe: Grad-CAM at the last block's first norm, the tokens reshaped to 14x14 after
    dropping ``prefix`` of them (the recipe drops 1)."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    def reshape(t: torch.Tensor) -> torch.Tensor:
        return t[:, prefix:, :].reshape(t.shape[0], 14, 14, t.shape[2]).permute(0, 3, 1, 2)

    with GradCAM(model=model, target_layers=[model.blocks[-1].norm1], reshape_transform=reshape) as peer:
        x = kernelviz.model_meta(model).normalize(images)
        return torch.from_numpy(peer(input_tensor=x, targets=[ClassifierOutputTarget(c) for c in TARGETS]))


def correlations(ours: torch.Tensor, peer: torch.Tensor) -> list[float]:
    """Pearson r of each image's two maps; the maps the peer finds flat (all zero after its ReLU) must be flat in
    ours too and are left out."""
    out = []
    for a, b in zip(ours, peer, strict=True):
        if float(b.std()) == 0:
            assert float(a.abs().max()) == 0
            continue
        out.append(float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1]))
    return out


@pytest.fixture(scope="module")
def photos() -> torch.Tensor:
    return torch.stack([zoo.photo(name, 224) for name in zoo.COLOR_PHOTOS[: len(TARGETS)]])


@pytest.mark.parametrize(("name", "prefix"), [("vit_base_patch16_224", 1), ("deit_tiny_distilled_patch16_224", 2)])
def test_gradcam_matches_pytorch_grad_cam(name, prefix, photos):
    """At the default layer (the last block's first norm) kernelviz's Grad-CAM equals the peer's, r >= 0.99 per
    image. On the distilled DeiT kernelviz drops both the class and the distillation token; the peer's recipe,
    which drops one, cannot reshape the 195 tokens left and fails, so it is given 2 here."""
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False).eval()
    ours = kernelviz.attribute(model, photos, "gradcam", target=TARGETS)
    assert ours.layer == "blocks.11.norm1"
    peer = peer_gradcam(model, photos, prefix)
    r = correlations(ours.maps, peer)
    assert len(r) >= 2 and min(r) >= 0.99, r
    if prefix == 2:
        with pytest.raises(RuntimeError):
            peer_gradcam(model, photos, 1)


def test_every_cam_runs_at_a_token_layer(photos):
    """The other CAMs read the same maps (Ablation-CAM edits them and sends them on as tokens)."""
    torch.manual_seed(0)
    model = timm.models.vision_transformer.VisionTransformer(
        img_size=224, patch_size=32, embed_dim=48, depth=2, num_heads=2, num_classes=10
    ).eval()
    for method in ("gradcam++", "layercam", "eigencam", "ablationcam", "scorecam"):
        out = kernelviz.attribute(model, photos[:1], method, target=3, layer="blocks.1.norm1")
        assert out.maps.shape == (1, 224, 224) and torch.isfinite(out.maps).all(), method


def test_ablation_cam_at_a_token_layer_zeroes_the_patch_tokens_only(photos):
    """Known answer for the edit path (maps changed, sent back as tokens): Ablation-CAM's weight of channel k is the
    relative drop of the score when channel k of the 49 patch tokens is zeroed by a plain hook (the class token
    kept), and the map is relu(sum_k w_k A_k) upsampled."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    model = timm.models.vision_transformer.VisionTransformer(
        img_size=224, patch_size=32, embed_dim=16, depth=2, num_heads=2, num_classes=10
    ).eval()
    x = kernelviz.model_meta(model).normalize(photos[:1])
    layer = model.blocks[1].norm1
    acts: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda m, i, o: acts.append(o.detach()))
    with torch.no_grad():
        full = float(model(x)[0, 3])
    handle.remove()
    tokens = acts[0]  # (1, 50, 16)
    weights = []
    for k in range(16):

        def zero(m, i, o, k=k):
            o = o.clone()
            o[:, 1:, k] = 0
            return o

        handle = layer.register_forward_hook(zero)
        with torch.no_grad():
            weights.append((full - float(model(x)[0, 3])) / abs(full))
        handle.remove()
    maps = tokens[0, 1:].T.reshape(16, 7, 7)
    cam = torch.relu((torch.tensor(weights)[:, None, None] * maps).sum(0))
    expected = F.interpolate(cam[None, None], size=(224, 224), mode="bilinear", align_corners=False)[0]
    got = kernelviz.attribute(model, photos[:1], "ablationcam", target=3, layer="blocks.1.norm1").maps
    assert float(expected.abs().max()) > 0
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6 * float(expected.abs().max()))


def test_aug_smooth_on_a_fixed_size_transformer_is_refused_in_one_line(photos):
    """aug_smooth rescales the image; a timm ViT takes only its own size: a one-line refusal, not timm's assert."""
    model = timm.models.vision_transformer.VisionTransformer(
        img_size=224, patch_size=32, embed_dim=48, depth=1, num_heads=2, num_classes=10
    ).eval()
    with pytest.raises(kernelviz.KernelvizError, match="aug_smooth rescales the image to 196x196 px"):
        kernelviz.attribute(model, photos[:1], "gradcam", target=3, aug_smooth=True)
