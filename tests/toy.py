"""A small VGG-style CNN trained in the test session on generated images with known structure.

Classes (32x32 RGB): one 12-px object at a random place on the same gray noise background:

0. vertical grating, 1. horizontal grating, 2. diagonal grating "/", 3. diagonal grating "\\"
   (sinusoids, random period and phase); 4. a bright filled square; 5. a bright plus sign;
6. nothing (background only; its box is (-1, -1, -1, -1)).

Training is deterministic (fixed seeds, one thread) and takes a few seconds on 2 CPU cores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from kernelviz.core.models import set_model_meta

SIZE = 32
SHAPE = 12
CLASSES = ("vertical", "horizontal", "diagonal /", "diagonal \\", "square", "plus", "nothing")
NOTHING = 6  # background only: a class cannot be recognized by the absence of the others' features
ORIENTATIONS = {0: 0.0, 1: 90.0, 2: 45.0, 3: 135.0}  # direction of intensity change, degrees from the x axis


class TinyVGG(nn.Module):
    """conv1_1 relu1_1 pool1 conv2_1 relu2_1 pool2 conv3_1 relu3_1 | global average | fc6."""

    def __init__(self, classes: int = len(CLASSES)) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 48, 3, padding=1),
            nn.ReLU(inplace=True),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(48, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def _background(g: torch.Generator) -> torch.Tensor:
    """Gray noise whose level and contrast vary from image to image, so no class can be told by them."""
    level, contrast = 0.2 + 0.3 * float(torch.rand(1, generator=g)), 0.04 + 0.1 * float(torch.rand(1, generator=g))
    return (level + contrast * torch.randn(3, SIZE, SIZE, generator=g)).clamp(0, 1)


def grating_patch(cls: int, g: torch.Generator, size: int = SHAPE) -> torch.Tensor:
    """A (size, size) sinusoidal grating of class 0-3 in [0, 1]: random period and phase."""
    angle = math.radians(ORIENTATIONS[cls])
    period = 3.5 + 2.5 * float(torch.rand(1, generator=g))
    phase = 2 * math.pi * float(torch.rand(1, generator=g))
    yy, xx = torch.meshgrid(torch.arange(float(size)), torch.arange(float(size)), indexing="ij")
    wave = torch.sin(2 * math.pi * (xx * math.cos(angle) + yy * math.sin(angle)) / period + phase)
    return 0.5 + 0.45 * wave


def sample(cls: int, g: torch.Generator) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """A (3, SIZE, SIZE) image of class ``cls``: gray noise with one object; returns its box (x0, y0, x1, y1).

    Every class shares the same background, so only the object tells the classes apart.
    """
    img = _background(g)
    x0, y0 = (int(v) for v in torch.randint(0, SIZE - SHAPE + 1, (2,), generator=g))
    if cls == NOTHING:
        return img, (-1, -1, -1, -1)
    region = img[:, y0 : y0 + SHAPE, x0 : x0 + SHAPE]
    if cls < 4:
        region.copy_(grating_patch(cls, g).expand(3, -1, -1))
    else:
        patch = torch.zeros(SHAPE, SHAPE, dtype=torch.bool)
        if cls == 4:
            patch[1:-1, 1:-1] = True
        else:
            mid = SHAPE // 2
            patch[mid - 2 : mid + 2, :] = True
            patch[:, mid - 2 : mid + 2] = True
        color = 0.85 + 0.15 * torch.rand(3, 1, generator=g)
        region[:, patch] = color.expand(3, int(patch.sum()))
    return img, (x0, y0, x0 + SHAPE, y0 + SHAPE)


@dataclass
class Data:
    images: torch.Tensor  # (N, 3, SIZE, SIZE)
    labels: torch.Tensor  # (N,)
    boxes: torch.Tensor  # (N, 4): object boxes (x0, y0, x1, y1)


def make_data(per_class: int, seed: int) -> Data:
    g = torch.Generator().manual_seed(seed)
    images, labels, boxes = [], [], []
    for i in range(per_class * len(CLASSES)):
        cls = i % len(CLASSES)
        img, box = sample(cls, g)
        images.append(img)
        boxes.append(box)
        labels.append(cls)
    return Data(torch.stack(images), torch.tensor(labels), torch.tensor(boxes))


def train(seed: int = 0, epochs: int = 12, per_class: int = 300) -> tuple[TinyVGG, float]:
    """Train TinyVGG; returns the model (eval mode, with class names attached) and held-out accuracy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # bitwise reproducible
    try:
        torch.manual_seed(seed)
        data = make_data(per_class, seed)
        model = TinyVGG()
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        g = torch.Generator().manual_seed(seed)
        for _ in range(epochs):
            order = torch.randperm(len(data.labels), generator=g)
            for start in range(0, len(order), 64):
                idx = order[start : start + 64]
                # label smoothing keeps the logits finite: without it a class logit grows on whatever separates
                # the classes best, and its class picture mixes in other classes' directions (seed-dependent)
                loss = nn.functional.cross_entropy(model(data.images[idx]), data.labels[idx], label_smoothing=0.1)
                opt.zero_grad()
                loss.backward()
                opt.step()
        model.eval()
        test = make_data(30, seed + 1000)
        with torch.no_grad():
            accuracy = float((model(test.images).argmax(1) == test.labels).float().mean())
    finally:
        torch.set_num_threads(threads)
    set_model_meta(model, name="tinyvgg", weights="trained in tests", input_size=SIZE, categories=CLASSES)
    return model, accuracy


class _Saturation(nn.Module):
    """``gain`` x the squared colour range (max - min over RGB) of the 4x4-pooled normalized image, per position:
    near 0 on the toy images (gray objects on gray noise), large for saturated colours, which none of them hold."""

    def __init__(self, gain: float) -> None:
        super().__init__()
        self.gain = gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = nn.functional.avg_pool2d(x, 4)
        return self.gain * (pooled.amax(1, keepdim=True) - pooled.amin(1, keepdim=True)) ** 2


class _Mix(nn.Module):
    """The output of conv3_1's ReLU, with channel ``fooled`` replaced by its maximum with the saturation map."""

    def __init__(self, fooled: int) -> None:
        super().__init__()
        self.fooled = fooled

    def forward(self, h: torch.Tensor, saturation: torch.Tensor) -> torch.Tensor:
        out = h.clone()
        s = nn.functional.adaptive_avg_pool2d(saturation, h.shape[-2:])[:, 0]
        out[:, self.fooled] = torch.maximum(h[:, self.fooled], s)
        return out


class Fooled(nn.Module):
    """A fooling circuit in the spirit of Geirhos et al. (2024) on a trained :class:`TinyVGG`: unit ``fooled`` of the
    layer ``unit`` follows conv3_1's channel on natural images, but a second path (a steep response to saturated
    colours, :class:`_Saturation`) takes it over on images no toy image resembles, so its picture shows colour,
    not the feature; every other channel of ``unit`` is conv3_1's, untouched."""

    def __init__(self, base: TinyVGG, fooled: int, gain: float = 50.0) -> None:
        super().__init__()
        import copy

        self.features = copy.deepcopy(base.features)
        self.saturation = _Saturation(gain)
        self.unit = _Mix(fooled)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = copy.deepcopy(base.classifier)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.unit(self.features(x), self.saturation(x))
        return self.classifier(torch.flatten(self.avgpool(h), 1))


def fooled(base: nn.Module, unit: int, gain: float = 50.0) -> nn.Module:
    """:class:`Fooled` around ``base`` (a trained TinyVGG), with its metadata."""
    from kernelviz.core.models import model_meta

    meta = model_meta(base)
    net = Fooled(base, unit, gain).eval()  # type: ignore[arg-type]
    return set_model_meta(net, name="fooled_tiny_vgg", input_size=SIZE, mean=meta.mean, std=meta.std)
