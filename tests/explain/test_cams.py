"""The CAM family: known answers on a global-pooling head, hook-free references, and the options."""

from __future__ import annotations

import captum.attr as ca
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import kernelviz
from kernelviz.core.models import model_meta
from kernelviz.core.names import get_module, resolve_layer
from kernelviz.errors import KernelvizError
from kernelviz.explain.cams import CAM_METHODS
from kernelviz.explain.heatmaps import attribute
from kernelviz.explain.methods import ScoredModel

from ..conftest import assert_unchanged, snapshot


class _GapNet(nn.Module):
    """conv -> ReLU -> global average pooling -> linear: the network of the original CAM paper."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.act = nn.ReLU()
        self.fc = nn.Linear(6, 4)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean((2, 3)))


@pytest.fixture
def gapnet() -> _GapNet:
    torch.manual_seed(0)
    net = _GapNet().eval()
    kernelviz.set_model_meta(net, mean=None, std=None, input_size=12)
    return net


def _cam_of(weights: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
    """``relu(sum_k w_k A_k)`` for ``(B, K)`` weights and ``(B, K, h, w)`` activations."""
    return torch.relu((weights[..., None, None] * acts).sum(1))


def test_gradient_cams_on_a_pooling_head_are_the_class_activation_map(gapnet):
    """With global average pooling and a linear layer on top, the gradient is ``w_ck / hw`` everywhere:
    Grad-CAM, XGrad-CAM and HiResCAM all equal Zhou et al.'s CAM ``relu(sum_k w_ck A_k) / hw``; LayerCAM
    keeps only the positive weights; Grad-CAM++ has the closed form of its alpha."""
    x = torch.rand(3, 3, 12, 12)
    targets = [0, 2, 3]
    acts = gapnet.features(x).detach()  # (3, 6, 12, 12), no hooks
    w = gapnet.fc.weight.detach()[targets] / 144  # (3, 6): the constant gradient
    expected = {
        "gradcam": _cam_of(w, acts),
        "xgradcam": _cam_of(w, acts),
        "hirescam": _cam_of(w, acts),
        "layercam": _cam_of(w.clamp(min=0), acts),
    }
    g = w[..., None, None].expand_as(acts)
    alpha = g**2 / (2 * g**2 + acts.sum((2, 3), keepdim=True) * g**3)
    expected["gradcam++"] = _cam_of((alpha * g.clamp(min=0)).sum((2, 3)), acts)
    for method, cam in expected.items():
        got = attribute(gapnet, x, method, target=targets, layer="act").maps
        assert cam.abs().max() > 0
        torch.testing.assert_close(got, cam, rtol=1e-4, atol=1e-6, msg=method)


def test_ablationcam_and_scorecam_against_references(gapnet):
    """Ablation-CAM: zeroing channel k removes ``w_ck mean(A_k)`` from the logit. Score-CAM: each channel,
    scaled to [0, 1], masks the image; the masked logits, softmaxed over channels, weight the channels."""
    x = torch.rand(2, 3, 12, 12)
    targets = [1, 3]
    acts = gapnet.features(x).detach()
    w = gapnet.fc.weight.detach()[targets]
    logits = gapnet(x).detach()[torch.arange(2), targets]
    drop = w * acts.mean((2, 3)) / logits.abs()[:, None]
    got = attribute(gapnet, x, "ablationcam", target=targets, layer="act").maps
    torch.testing.assert_close(got, _cam_of(drop, acts), rtol=1e-4, atol=1e-6)

    weights = torch.empty(2, 6)
    for i in range(2):
        for k in range(6):
            m = acts[i, k]
            m = (m - m.min()) / (m.max() - m.min())
            weights[i, k] = gapnet(x[i : i + 1] * m)[0, targets[i]]  # the baseline is black
    got = attribute(gapnet, x, "scorecam", target=targets, layer="act").maps
    torch.testing.assert_close(got, _cam_of(weights.softmax(1), acts), rtol=1e-4, atol=1e-6)


def test_ablation_widened_batch_equals_full_copies():
    """Ablation-CAM runs the layers before the ablated one once and widens the batch there; a network that
    concatenates an earlier tensor cannot take that and runs full copies: both give the same map."""

    class Joined(nn.Module):
        def __init__(self, concat: bool) -> None:
            super().__init__()
            self.concat = concat
            self.stem = nn.Conv2d(3, 4, 3, padding=1)
            self.body = nn.Conv2d(4, 5, 3, padding=1)
            self.fc = nn.Linear(9 if concat else 5, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            s = torch.relu(self.stem(x))
            b = torch.relu(self.body(s))
            out = torch.cat([s, b], 1) if self.concat else b
            return self.fc(out.mean((2, 3)))

    torch.manual_seed(0)
    x = torch.rand(2, 3, 10, 10)
    plain, joined = Joined(False), Joined(True)
    joined.stem.load_state_dict(plain.stem.state_dict())
    joined.body.load_state_dict(plain.body.state_dict())
    with torch.no_grad():
        joined.fc.weight.zero_()
        joined.fc.weight[:, 4:] = plain.fc.weight  # the concatenated stem channels do not count
        joined.fc.bias.copy_(plain.fc.bias)
    a = attribute(plain, x, "ablationcam", target=[0, 1], layer="body").maps
    b = attribute(joined, x, "ablationcam", target=[0, 1], layer="body").maps
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


class _RankOne(nn.Module):
    """A 1x1 convolution that reads only the red channel: ``A_k = a_k * red + b_k``, activations of rank one."""

    def __init__(self) -> None:
        super().__init__()
        self.mix = nn.Conv2d(3, 5, 1)
        with torch.no_grad():
            self.mix.weight.zero_()
            self.mix.weight[:, 0, 0, 0] = torch.tensor([1.0, 2.0, -0.5, 0.7, 1.5])
            self.mix.bias.copy_(torch.tensor([0.1, -0.3, 0.2, 0.0, 0.5]))
        self.fc = nn.Linear(5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.mix(x).mean((2, 3)))


def test_eigencam_is_the_principal_component():
    """For activations of rank one around their mean, the first principal component is the red channel:
    EigenCAM = ``relu(|a| (red - mean(red)))``, its sign chosen to agree with the channel sum."""
    torch.manual_seed(0)
    net = _RankOne()
    x = torch.rand(2, 3, 9, 9)
    a = net.mix.weight.detach()[:, 0, 0, 0]
    red = x[:, 0]
    expected = torch.relu(a.norm() * (red - red.mean((1, 2), keepdim=True)))  # sum(a) > 0: the sign of red
    got = attribute(net, x, "eigencam", target=0, layer="mix").maps
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    # eigen_smooth of Grad-CAM: the weighted activations g_k A_k are of rank one too
    g = net.fc.weight.detach()[1] / 81
    expected = torch.relu((g * a).norm() * (red - red.mean((1, 2), keepdim=True)) * torch.sign((g * a).sum()))
    got = attribute(net, x, "gradcam", target=1, layer="mix", eigen_smooth=True).maps
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_gradcam_equals_captum(tiny):
    x = torch.rand(2, 3, 32, 32)
    mine = attribute(tiny, x, "gradcam", target=[1, 3], layer="conv2_1").maps
    scored = ScoredModel(tiny, model_meta(tiny), None, 0)
    with kernelviz.guarded(tiny), torch.enable_grad():
        cam = ca.LayerGradCam(scored, get_module(tiny, resolve_layer(tiny, "conv2_1"))).attribute(
            x.clone().requires_grad_(True), target=[1, 3], relu_attributions=True
        )
    torch.testing.assert_close(mine, F.interpolate(cam, size=(32, 32), mode="bilinear")[:, 0].detach())


def test_aug_smooth_averages_flips_and_rescales(gapnet):
    """aug_smooth = the mean over the image flipped or not and rescaled by 0.875, 1, 1.125 of each map,
    mapped back onto the image."""
    x = torch.rand(1, 3, 16, 16)
    maps = []
    for flip in (False, True):
        for side in (16, 14, 18):
            y = F.interpolate(x, size=(side, side), mode="bilinear", antialias=True)
            y = y.flip(-1) if flip else y
            m = attribute(gapnet, y, "gradcam", target=2, layer="act").maps
            m = m.flip(-1) if flip else m
            maps.append(F.interpolate(m[:, None], size=(16, 16), mode="bilinear")[:, 0])
    got = attribute(gapnet, x, "gradcam", target=2, layer="act", aug_smooth=True)
    torch.testing.assert_close(got.maps, torch.stack(maps).mean(0), rtol=1e-4, atol=1e-6)
    assert got.settings["aug_smooth"] is True
    with pytest.raises(KernelvizError, match="eigen_smooth and aug_smooth apply to the CAM methods"):
        attribute(gapnet, x, "saliency", target=2, aug_smooth=True)


@pytest.mark.calibrated
@pytest.mark.parametrize("method", CAM_METHODS)
def test_every_cam_on_the_toy_network_points_at_the_object(toy_model, method, measured):
    """On the CNN trained in the session, every CAM puts more heat in the object's box than outside.

    Threshold: median density ratio above 1.5. Spread (seeds 0-4 x native AVX-512, AVX2-only, one thread): 4.67
    (Score-CAM) to 13.9 (EigenCAM); Grad-CAM 7.45-10.4.
    """
    from ..toy import NOTHING, make_data

    model, _ = toy_model
    data = make_data(3, seed=556)
    keep = data.labels != NOTHING
    images, labels, boxes = data.images[keep][:8], data.labels[keep][:8], data.boxes[keep][:8]
    before = snapshot(model)
    maps = attribute(model, images, method, target=labels.tolist(), layer="relu3_1").maps
    assert_unchanged(model, before)
    ratios = []
    for heat, (x0, y0, x1, y1) in zip(maps, boxes.tolist(), strict=True):
        inside = heat[y0:y1, x0:x1].mean()
        outside = (heat.sum() - heat[y0:y1, x0:x1].sum()) / (heat.numel() - (y1 - y0) * (x1 - x0))
        ratios.append(float(inside / outside.clamp(min=1e-12)))
    assert measured("median inside/outside density", sorted(ratios)[len(ratios) // 2]) > 1.5, ratios
