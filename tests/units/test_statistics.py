"""What each unit is: statistics and labels from a scan, against known answers and plain numpy/sklearn references."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import mannwhitneyu
from sklearn.metrics import roc_auc_score
from torch import nn

import kernelviz
from kernelviz.data.collection import collection
from kernelviz.data.labels import collection_labels
from kernelviz.sets.examples import scan_to_atlas
from kernelviz.units.scan import load_scan, merge_scans, scan_units
from kernelviz.units.statistics import ALPHA, LABEL_FLOOR, unit_statistics

from ..nets import tiny_vgg

CLASSES = ("red", "green", "blue")


def planted_net() -> nn.Module:
    """Units 0-2 fire (max above 0) exactly on the images of one class each (a red, green or blue square), unit 3 is
    a constant 0.3 (above 0 everywhere), unit 4 a constant -1 (dead)."""
    conv = nn.Conv2d(3, 5, 1)
    with torch.no_grad():
        conv.weight.zero_()
        for c in range(3):
            conv.weight[c, c] = 1.0
        conv.bias.copy_(torch.tensor([-0.5, -0.5, -0.5, 0.3, -1.0]))
    return kernelviz.set_model_meta(nn.Sequential(conv), input_size=16, mean=(0, 0, 0), std=(1, 1, 1))


def planted_images(root: Path, per_class: int = 4) -> Path:
    rng = np.random.default_rng(0)
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = np.zeros((16, 16, 3), dtype=np.uint8)
            r, col = rng.integers(0, 10, 2)
            pixels[r : r + 5, col : col + 5, c] = 255
            Image.fromarray(pixels).save(root / name / f"{name}{i}.png")
    return root


def test_planted_units_are_labelled_by_their_class_and_the_constant_and_dead_ones_by_nothing(tmp_path):
    images = planted_images(tmp_path / "images")
    scan = scan_units(planted_net(), images, ["0"], k=3, workers=0)
    found = unit_statistics(scan, "0", collection_labels(collection(images)))
    assert found.images == 12 and len(found.units) == 5
    for c, name in enumerate(CLASSES):
        unit = found.units[c]
        assert unit.label is not None and unit.label.name == name and unit.label.auc == 1.0
        assert unit.label.kind == "class" and unit.label.images == 4
        assert unit.frequency == pytest.approx(1 / 3) and not unit.dead and not unit.dense
        assert unit.max == pytest.approx(0.5) and unit.histogram[1][0] == 8 and unit.histogram[1][-1] == 4
    constant, dead = found.units[3], found.units[4]
    assert constant.labels == [] and constant.frequency == 1.0 and constant.dense and not constant.dead
    assert dead.labels == [] and dead.frequency == 0.0 and dead.dead and not dead.dense
    assert constant.histogram == ([pytest.approx(0.3)] * 2, [12])  # one bar: every image the same
    q99 = dict(found.units[0].quantiles)[0.99]
    assert {Path(str(scan.files[i])).parent.name for i, _ in q99} == {"red"}  # its top images: its class's


def test_aucs_frequencies_and_histograms_equal_plain_references_on_a_real_layer(tmp_path):
    """tiny_vgg's conv2_1 (signed) and relu2_1 (flat below 0: ranked by its input) over 3 classes of noise images:
    the AUC of each unit for each class equals sklearn's roc_auc_score of the per-image maxima (a hook-free
    forward), the frequency the share of maxima above 0, the histogram numpy's."""
    rng = np.random.default_rng(1)
    root = tmp_path / "images"
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(7):
            pixels = (rng.random((32, 32, 3)) * (0.4 + 0.3 * c) * 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    net = tiny_vgg()
    scan = scan_units(net, root, ["conv2_1", "relu2_1"], k=3, workers=0, batch_size=4)
    labels = collection_labels(collection(root))
    x = torch.stack([kernelviz.load_image(f, 32) for f in scan.files])
    with torch.no_grad():
        maps = kernelviz.activations(net, kernelviz.model_meta(net).normalize(x), ["conv2_1", "relu2_1"])
    classes = scan.labels.numpy()
    labelled = 0
    for layer, ranks_by in (("conv2_1", "conv2_1"), ("relu2_1", "conv2_1")):
        found = unit_statistics(scan, layer, labels, label_images=1)
        scores = maps[ranks_by].flatten(2).amax(2).numpy()  # (N, C): what ranks (relu2_1's input: conv2_1)
        shown = maps[layer].flatten(2).amax(2).numpy()
        for u in found.units:
            s = scores[:, u.unit]
            assert u.frequency == pytest.approx(float((shown[:, u.unit] > 0).mean()))
            assert u.max == pytest.approx(float(shown[:, u.unit].max()), abs=1e-5)
            counts, edges = np.histogram(s, bins=20, range=(s.min(), s.max()))
            assert u.histogram[1] == counts.tolist() and np.allclose(u.histogram[0], edges, atol=1e-5)
            named = {label.id: label for label in u.labels}
            assert scan.classes is not None and found.tested == 3
            for c, name in enumerate(scan.classes):  # sorted folder names: classes == c is folder name's images
                reference = roc_auc_score(classes == c, s)
                chance = mannwhitneyu(s[classes == c], s[classes != c], alternative="greater", method="asymptotic",
                                      use_continuity=False).pvalue  # fmt: skip
                if reference >= LABEL_FLOOR and chance < ALPHA / 3:
                    assert named[name].auc == pytest.approx(reference, abs=1e-6), (layer, u.unit, name)
                    assert named[name].p == pytest.approx(chance, rel=1e-2)  # kept to 3 digits
                    labelled += 1
                else:
                    assert name not in named
    assert labelled > 0  # the brightness classes: some units tell them apart


def test_shards_and_a_resumed_scan_give_the_same_units_json(tmp_path):
    images = planted_images(tmp_path / "images", per_class=6)
    one = scan_to_atlas(tiny_vgg(), tmp_path / "one" / "tiny_vgg", images, ["conv1_1", "relu2_1"], k=3, workers=0,
                        batch_size=4)  # fmt: skip
    for shard in ((1, 2), (0, 2)):
        two = scan_to_atlas(tiny_vgg(), tmp_path / "two" / "tiny_vgg", images, ["conv1_1", "relu2_1"], k=3,
                            workers=0, batch_size=4, shard=shard)  # fmt: skip
    assert one.layers_written and two.layers_written == one.layers_written
    for layer in ("conv1_1", "relu2_1"):
        a = json.loads((tmp_path / "one" / "tiny_vgg" / layer / "units.json").read_text())
        b = json.loads((tmp_path / "two" / "tiny_vgg" / layer / "units.json").read_text())
        assert a == b, layer
    # shards, one on disk and one in memory, merged; a scan killed and resumed from its checkpoint: the same numbers
    checkpoint = tmp_path / "state.pt"
    whole = scan_units(tiny_vgg(), images, ["conv1_1"], k=3, workers=0, batch_size=4)
    first = scan_units(tiny_vgg(), images, ["conv1_1"], k=3, workers=0, batch_size=4, shard=(0, 2),
                       checkpoint=checkpoint)  # fmt: skip
    second = scan_units(tiny_vgg(), images, ["conv1_1"], k=3, workers=0, batch_size=4, shard=(1, 2))
    merged = merge_scans([load_scan(checkpoint), second])
    assert first.complete is False and merged.complete

    def stop_after_two_batches(p):
        if p.done >= 8:
            raise StopScanError

    resumable = tmp_path / "resumed.pt"
    with pytest.raises(StopScanError):
        scan_units(tiny_vgg(), images, ["conv1_1"], k=3, workers=0, batch_size=4, checkpoint=resumable, every=4,
                   progress=stop_after_two_batches)  # fmt: skip
    assert len(load_scan(resumable).done) == 2
    resumed = scan_units(tiny_vgg(), images, ["conv1_1"], k=3, workers=0, batch_size=4, checkpoint=resumable)

    def numbers(scan):
        found = unit_statistics(scan, "conv1_1")
        return [(u.frequency, u.mean, u.max, u.histogram, u.quantiles) for u in found.units]

    assert numbers(whole) == numbers(merged) == numbers(resumed)


class StopScanError(Exception):
    pass


def test_a_scan_without_scores_or_with_its_scores_lost_says_so(tmp_path):
    images = planted_images(tmp_path / "images")
    light = scan_units(planted_net(), images, ["0"], k=3, workers=0, scores=False)
    assert light.scores is None and int(light.layers["0"].fires[0]) == 4  # the running sums are still there
    with pytest.raises(kernelviz.KernelvizError, match="no per-image scores"):
        unit_statistics(light, "0")
    state = tmp_path / "state.pt"
    scan_units(planted_net(), images, ["0"], k=3, workers=0, checkpoint=state)
    for folder in tmp_path.glob("*-scores"):
        for file in folder.iterdir():
            file.unlink()
        folder.rmdir()
    assert load_scan(state).scores is None
    with pytest.raises(kernelviz.KernelvizError, match=r"per-image scores of .* are missing"):
        scan_units(planted_net(), images, ["0"], k=3, workers=0, checkpoint=state)


def test_label_files_and_wordnet_groups_are_labels(tmp_path):
    """A CSV of several labels per image, and the WordNet groups above ImageNet classes (folders named by WordNet
    id): a group with two or more images is a label, with its name."""
    root = tmp_path / "images"
    for folder in ("n02085620_Chihuahua", "n02099601", "n01440764_tench"):  # two dogs and a fish
        (root / folder).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((16, 16, 3), 40 * i, dtype=np.uint8)).save(root / folder / f"{i}.png")
    (tmp_path / "labels.csv").write_text(
        "image,labels\nimages/n02085620_Chihuahua/0.png,small,indoor\nn02099601/1.png,indoor\n"
    )
    labels = collection_labels(collection(root), tmp_path / "labels.csv")
    named = dict(zip(labels.ids, zip(labels.names, labels.kinds, labels.members, strict=True), strict=True))
    assert named["n02085620_Chihuahua"][:2] == ("Chihuahua", "class")
    assert named["n02099601"][:2] == ("golden retriever", "class")
    assert named["n02084071"][:2] == ("dog", "group") and len(named["n02084071"][2]) == 4
    assert "n02512053" not in named or len(named["n02512053"][2]) >= 2  # fish: one class, two images
    assert named["indoor"][1] == "label" and len(named["indoor"][2]) == 2 and len(named["small"][2]) == 1
    (tmp_path / "bad.csv").write_text("nowhere.png,small\n")
    with pytest.raises(kernelviz.KernelvizError, match="names 1 image"):
        collection_labels(collection(root), tmp_path / "bad.csv")


def test_the_units_command_lists_sorts_and_finds_by_label(cli, tmp_path):
    images = planted_images(tmp_path / "images")
    net = "tests.units.test_statistics:planted_net"
    scanned = cli("examples", net, "--images", str(images), "-o", "out", "--layers", "0", "--workers", "0", "--quiet")
    assert scanned.exit_code == 0, scanned.output
    table = cli("units", "out", "--sort", "frequency")
    assert table.exit_code == 0, table.output
    lines = table.output.splitlines()
    assert lines[0].startswith("0: 5 units over 12 images")
    assert lines[2].split()[:2] == ["3", "100.0%"] and "dense" in lines[2]  # the constant unit fires most
    assert "dead" in lines[-1]
    found = cli("units", "out/planted_net", "--label", "green")
    assert found.exit_code == 0 and "0:1  green (class, AUC 1.000, 4 images)" in found.output
    near = cli("units", "out", "--label", "gren")
    assert near.exit_code == 0 and "no unit is labelled like 'gren'" in near.output and "green" in near.output
    # the same scan with a label file added later: units.json is written again with its labels (no new scan)
    (tmp_path / "labels.csv").write_text("".join(f"images/blue/blue{i}.png,bright blue\n" for i in range(4)))
    again = cli("examples", net, "--images", str(images), "-o", "out", "--layers", "0", "--workers", "0", "--quiet",
                "--labels", "labels.csv")  # fmt: skip
    assert again.exit_code == 0 and "12 images scanned before (that scan reused)" in again.output, again.output
    relabelled = cli("units", "out", "--label", "bright blue")
    assert "0:2  bright blue (label, AUC 1.000, 4 images)" in relabelled.output
    missing = cli("units", "out", "--layer", "nope")
    assert missing.exit_code == 1 and "no units.json for nope" in missing.output
