"""Small networks with known answers, shared by the tests and usable from the shell as MODEL.

``tests.nets:tiny_vgg`` is a VGG-shaped network (conv1_1 ... conv3_2, pool1-3, fc6-fc8, in-place ReLUs
as in torchvision) small enough that a CLI test builds it in milliseconds; ``sobel_net`` is the
article's vertical-edge detector.
"""

from __future__ import annotations

import torch
from torch import nn

from kernelviz.core.models import IMAGENET_MEAN, IMAGENET_STD, set_model_meta

#: Responds to vertical edges (intensity rising to the right).
SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])

#: The tiny VGG from the shell.
TINY_MODEL = "tests.nets:tiny_vgg"


def sobel_net(relu: bool = True, padding: int = 0) -> nn.Sequential:
    """One 3x3 convolution holding the vertical Sobel kernel on the gray level, then a ReLU."""
    conv = nn.Conv2d(3, 1, 3, padding=padding, bias=False)
    with torch.no_grad():
        conv.weight.copy_(SOBEL_X.expand(1, 3, 3, 3) / 3)
    return nn.Sequential(conv, nn.ReLU()) if relu else nn.Sequential(conv)


class TinyVGG(nn.Module):
    """Three VGG blocks of two 3x3 convolutions (8, 16, 32 filters) and a three-layer classifier."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for cout in (8, 16, 32):
            for _ in range(2):
                layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True)]
                cin = cout
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(2)
        self.classifier = nn.Sequential(
            nn.Linear(32 * 2 * 2, 64),
            nn.ReLU(inplace=True),
            nn.Dropout(),
            nn.Linear(64, 64),
            nn.ReLU(inplace=True),
            nn.Dropout(),
            nn.Linear(64, classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def tiny_vgg() -> nn.Module:
    """A seeded :class:`TinyVGG` with ImageNet normalization and a 32-px input size attached."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = TinyVGG().eval()
    return set_model_meta(model, name="tiny_vgg", weights="seeded", mean=IMAGENET_MEAN, std=IMAGENET_STD, input_size=32)


#: ``planted_net``'s concepts: 3 non-negative directions in a 16-channel layer, each strongest on its own 5 or 6
#: channels and spilling onto the others (so that no direction is a channel).
PLANTED = torch.rand(3, 16, generator=torch.Generator().manual_seed(0)) ** 3
PLANTED[0, :5] += 1
PLANTED[1, 5:10] += 1
PLANTED[2, 10:] += 1
#: ``planted_net``'s head: class 0 grows with concept 0 and shrinks with concept 2; class 1 the other way.
PLANTED_HEAD = torch.tensor([[1.0] * 5 + [0.2] * 5 + [-0.8] * 6, [-0.5] * 5 + [0.1] * 5 + [1.0] * 6])


class Planted(nn.Module):
    """A layer ``act`` whose activation at each pixel is ``sum_k x_k PLANTED[k]`` (``x_k`` the pixel's channel
    ``k``): non-negative combinations of three planted directions; then global average pooling and a linear head,
    so each concept's part of a logit is known exactly."""

    def __init__(self) -> None:
        super().__init__()
        self.mix = nn.Conv2d(3, 16, 1, bias=False)
        self.act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 2)
        with torch.no_grad():
            self.mix.weight.copy_(PLANTED.T.reshape(16, 3, 1, 1))
            self.fc.weight.copy_(PLANTED_HEAD)
            self.fc.bias.copy_(torch.tensor([0.5, -0.5]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.act(self.mix(x))).flatten(1))


def planted_net() -> nn.Module:
    """:class:`Planted` at 32 x 32 pixels, no input normalization (the pixels are the codes)."""
    return set_model_meta(Planted().eval(), name="planted", weights="hand-set", input_size=32, mean=None, std=None)
