"""Feature maps, kernel pictures, image input, and the maps/heatmap/weights commands."""

from __future__ import annotations

import torch

import kernelviz
from kernelviz.explain.maps import feature_maps

from ..nets import sobel_net


def test_feature_maps_match_direct_computation(vgg16):
    images = torch.rand(2, 3, 32, 32)
    maps = feature_maps(vgg16, images, "pool1")
    with torch.no_grad():
        expected = vgg16.features[:5](kernelviz.model_meta(vgg16).normalize(images))
    torch.testing.assert_close(maps, expected)
    assert maps.shape == (2, 64, 16, 16)


def test_sobel_feature_map_lights_up_vertical_edges():
    """The article: a vertical Sobel kernel's feature map is strong on vertical edges only."""
    img = torch.zeros(3, 16, 16)
    img[:, :, 8:] = 1.0  # a vertical edge at x = 8
    img[:, 12:, :] = 0.5  # and a horizontal one at y = 12
    maps = feature_maps(sobel_net(padding=1), img, "1")[0, 0]
    assert maps[:10, 7:9].min() > 1.0  # on the vertical edge
    # flat regions and the horizontal edge give nothing (column 0 sees the zero padding: a real edge)
    assert maps[:, 1:6].abs().max() == 0 and maps[13:, 10:14].abs().max() == 0


def test_max_pooling_keeps_the_strongest_response(vgg16):
    images = torch.rand(1, 3, 32, 32)
    relu = feature_maps(vgg16, images, "relu1_2")
    pool = feature_maps(vgg16, images, "pool1")
    torch.testing.assert_close(pool, relu.unflatten(2, (16, 2)).unflatten(4, (16, 2)).amax((3, 5)))
