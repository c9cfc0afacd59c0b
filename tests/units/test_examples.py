"""Dataset examples: the natural images that excite a filter most, cropped where it fires."""

from __future__ import annotations

import numpy as np
from PIL import Image
from torch import nn

import kernelviz
from kernelviz.units.examples import find_examples

from ..nets import sobel_net


def test_examples_with_a_hand_set_filter(tmp_path):
    """A rectified vertical-Sobel filter: the strongest images are the highest-contrast vertical edges.

    Image i has one vertical edge of contrast c_i at column x_i on a flat background; the top-k must be
    the k highest contrasts in order, and each crop must contain its edge.
    """
    model = nn.Sequential(*sobel_net(padding=1), nn.MaxPool2d(2), nn.Conv2d(1, 1, 3, padding=1))
    kernelviz.set_model_meta(model, input_size=32)
    rng = np.random.default_rng(0)
    contrasts = rng.permutation(np.linspace(0.1, 0.9, 12))
    edges = {}
    for i, c in enumerate(contrasts):
        x = int(rng.integers(6, 26))
        img = np.full((32, 32, 3), 0.05)
        img[:, x:] += c
        Image.fromarray((img * 255).round().astype(np.uint8)).save(tmp_path / f"img{i:02d}.png")
        edges[f"img{i:02d}.png"] = x
    (tmp_path / "broken.png").write_bytes(b"not a png")
    scan = find_examples(model, "1", [0], tmp_path, k=4, batch_size=5)
    assert scan.scanned == 12 and [p.name for p, _ in scan.skipped] == ["broken.png"]
    found = scan.examples[0]
    expected = [f"img{i:02d}.png" for i in np.argsort(-contrasts)[:4]]
    assert [e.path.name for e in found] == expected
    assert [e.value for e in found] == sorted((e.value for e in found), reverse=True)
    for e in found:
        x0, _, x1, _ = e.box
        assert x0 <= edges[e.path.name] <= x1 and e.crop.shape[1:] == (e.box[3] - e.box[1], x1 - x0)


class _SharedReLU(nn.Module):
    """One ReLU module run twice, after a 3x3 convolution and after a stride-2 5x5 one (EfficientNet's layout)."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Conv2d(3, 4, 3, padding=1)
        self.second = nn.Conv2d(4, 4, 5, stride=2, padding=2)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.second(self.act(self.first(x))))


def test_receptive_box_of_a_shared_module_is_the_runs():
    """A module run twice has a receptive field per run: act#2 sees 3 + 4 = 7 pixels at stride 2, act#1 3 pixels."""
    from kernelviz.units.examples import receptive_box

    net = kernelviz.set_model_meta(_SharedReLU(), input_size=32)
    assert receptive_box(net, "act#1", 32)(5, 5) == (4, 4, 7, 7)  # 3 pixels around (5, 5)
    x0, y0, x1, y1 = receptive_box(net, "act#2", 32)(5, 5)
    assert (x1 - x0, y1 - y0) == (7, 7) and (x0 + x1) / 2 == 10.5  # 7 pixels around input pixel 10
