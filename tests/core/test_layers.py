"""Layer names, the layer table, receptive fields and depth."""

from __future__ import annotations

import pytest
import torch
import torchvision

import kernelviz
from kernelviz.core.layers import list_layers
from kernelviz.core.names import layer_names, resolve_layer
from kernelviz.errors import KernelvizError

# From the VGG-16 facts table: name -> (features index, channels, output side at 224, receptive field)
VGG16 = {
    "conv1_1": (0, 64, 224, 3),
    "conv1_2": (2, 64, 224, 5),
    "conv2_1": (5, 128, 112, 10),
    "conv2_2": (7, 128, 112, 14),
    "conv3_1": (10, 256, 56, 24),
    "conv3_2": (12, 256, 56, 32),
    "conv3_3": (14, 256, 56, 40),
    "conv4_1": (17, 512, 28, 60),
    "conv4_2": (19, 512, 28, 76),
    "conv4_3": (21, 512, 28, 92),
    "conv5_1": (24, 512, 14, 132),
    "conv5_2": (26, 512, 14, 164),
    "conv5_3": (28, 512, 14, 196),
}


def test_vgg16_table_matches_known_facts(vgg16):
    rows = {r.name: r for r in list_layers(vgg16, 224)}
    for name, (idx, channels, side, rf) in VGG16.items():
        row = rows[name]
        assert row.path == f"features.{idx}"
        assert row.shape == (channels, side, side)
        assert row.receptive_field == rf, name
        relu = rows[name.replace("conv", "relu")]
        assert relu.path == f"features.{idx + 1}"
    for block, idx in zip(range(1, 6), (4, 9, 16, 23, 30), strict=True):
        assert rows[f"pool{block}"].path == f"features.{idx}"
    assert [rows[n].path for n in ("fc6", "relu6", "fc7", "relu7", "fc8")] == [
        "classifier.0",
        "classifier.1",
        "classifier.3",
        "classifier.4",
        "classifier.6",
    ]
    assert rows["fc8"].shape == (1000,)
    assert kernelviz.count_depth(vgg16) == 16


def test_table_shapes_equal_real_outputs(vgg16):
    x = torch.rand(1, 3, 64, 64)
    rows = list_layers(vgg16, 64)
    convs = [r for r in rows if r.path.startswith("features")]
    acts = kernelviz.activations(vgg16, x, [r.path for r in convs])
    for r in convs:
        assert tuple(acts[r.path].shape[1:]) == r.shape


@pytest.mark.parametrize(
    ("name", "depth", "convs"),
    [("vgg11", 11, 8), ("vgg13", 13, 10), ("vgg19", 19, 16), ("vgg11_bn", 11, 8), ("vgg19_bn", 19, 16)],
)
def test_vgg_variants_names_and_depth(name, depth, convs):
    model = torchvision.models.get_model(name, weights=None)
    names = layer_names(model)
    assert sum(n.startswith("conv") for n in names) == convs
    assert kernelviz.count_depth(model) == depth
    if name.endswith("_bn"):
        # conv, bn, relu of one block are consecutive modules
        assert names["conv1_1"] == "features.0"
        assert names["bn1_1"] == "features.1"
        assert names["relu1_1"] == "features.2"
    last_block = 5
    assert f"pool{last_block}" in names and "fc8" in names


def test_non_vgg_models_use_module_paths():
    model = torchvision.models.resnet18(weights=None)
    rows = list_layers(model, 64)
    by_path = {r.path: r for r in rows}
    assert by_path["layer4.1.conv2"].shape == (512, 2, 2)
    assert by_path["conv1"].receptive_field == 7
    # the shortcut's 1x1 conv sees what its block input saw, not the main branch's field
    assert by_path["layer2.0.downsample.0"].receptive_field < by_path["layer2.0.conv2"].receptive_field
    assert kernelviz.count_depth(model) == 18 + 3  # 17 conv + fc, plus 3 shortcut 1x1 convs
    assert resolve_layer(model, "layer3.0.conv1") == "layer3.0.conv1"


def test_unknown_layer_suggests_names(vgg16):
    with pytest.raises(KernelvizError, match=r"conv3_2.*kernelviz layers"):
        resolve_layer(vgg16, "conv3_22")


class PadConv(torch.nn.Conv2d):
    """A conv that pads with its own child module first (as TF-"same" ports such as EfficientNet do)."""

    def __init__(self, cin: int, cout: int, k: int, stride: int) -> None:
        super().__init__(cin, cout, k, stride=[stride, stride], padding=0)  # a list, as such ports store it
        self.static_padding = torch.nn.ZeroPad2d(k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.static_padding(x))


def test_self_padding_convs_and_blocks_have_true_fields():
    """Receptive field, stride and offset equal those of plain padded convs; a block can be listed."""
    padded = torch.nn.Sequential(torch.nn.Sequential(PadConv(3, 4, 3, 2), torch.nn.ReLU()), PadConv(4, 4, 5, 2))
    plain = torch.nn.Sequential(
        torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, 2, padding=1), torch.nn.ReLU()), torch.nn.Conv2d(4, 4, 5, 2, 2)
    )
    a = {r.path: r for r in list_layers(padded, 32, include=["0"])}
    b = {r.path: r for r in list_layers(plain, 32, include=["0"])}
    for path in ("0.0", "0", "1"):
        assert (a[path].receptive_field, a[path].stride, a[path].offset) == (
            b[path].receptive_field,
            b[path].stride,
            b[path].offset,
        ), path
    assert (b["1"].receptive_field, b["1"].stride, b["1"].offset) == (11, 4, 0.5)
    assert a["0"].shape == (4, 16, 16) and kernelviz.count_depth(padded) == 2


def test_convnext_channels_last_rows_and_pointwise_fields():
    """Inside a ConvNeXt block the map is (H, W, C): the row reads it as (C, H, W) maps and keeps the module's own
    shape, and the pointwise Linear layers mix channels only, so the receptive field does not grow to the whole
    image."""
    model = torchvision.models.convnext_tiny(weights=None).eval()
    rows = {r.path: r for r in list_layers(model, 64)}
    permute, linear, back = rows["features.1.0.block.1"], rows["features.1.0.block.3"], rows["features.1.0.block.6"]
    assert permute.shape == (96, 16, 16) and permute.channels == 96 and permute.layout == "channels_last"
    assert permute.output == (16, 16, 96)
    assert linear.shape == (384, 16, 16) and linear.channels == 384 and linear.output == (16, 16, 384)
    assert linear.receptive_field == rows["features.1.0.block.0"].receptive_field == 4 + 6 * 4
    assert back.shape == back.output == (96, 16, 16) and back.channels == 96 and back.layout == "map"


def test_fields_survive_squeeze_and_excitation():
    """torchvision's EfficientNet scales each map by its squeeze-and-excitation gates in the forward's own code
    (``x * scale``): the product keeps the field of the map scaled, not the gates' whole-image one."""
    rows = {r.path: r for r in list_layers(torchvision.models.efficientnet_b0(weights=None).eval(), 224)}
    assert rows["features.1.0.block.2.0"].receptive_field == 3 + 2 * 2  # stem 3x3 /2, then a depthwise 3x3
    assert rows["features.8.0"].receptive_field is not None and rows["features.8.0"].stride == 32


def test_fields_are_not_capped_and_depth_counts_what_runs():
    from kernelviz.jobs.inspect import layer_table

    resnet = layer_table(torchvision.models.resnet50(weights=None), 224, grep=r"^layer4\.2\.conv3$")
    assert [r.path for r in resnet.rows] == ["layer4.2.conv3"] and resnet.total > 150
    assert resnet.rows[0].receptive_field == 427  # larger than the 224-px input: border units see padding
    assert "427 (> input)" in resnet.lines()[1] and "(1 of" in resnet.lines()[2]
    googlenet = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=False)
    assert kernelviz.count_depth(googlenet) == 64  # every conv and linear module, auxiliary heads included
    assert layer_table(googlenet, 224).depth == 58  # what runs in eval mode: the heads do not
    convs = layer_table(googlenet, 224, types=["conv"])
    assert convs.rows and all(r.type == "Conv2d" for r in convs.rows)
