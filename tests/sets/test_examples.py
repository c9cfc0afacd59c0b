"""Dataset examples in the atlas layout: ``kernelviz examples MODEL --images DIR -o OUT`` end to end, sharded and
rerun, and what the atlas site shows of them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import kernelviz
from kernelviz.sets.examples import scan_to_atlas
from kernelviz.units.scan import scan_units

from ..nets import TINY_MODEL, tiny_vgg

REPO = Path(__file__).resolve().parents[2]

LAYERS = "conv1_1,conv2_2,conv3_2"


def labeled_folder(root: Path, per_class: int = 6) -> Path:
    """Three classes of 40 x 30 images: bright, dark and striped, so classes differ on every unit."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(("bright", "dark", "striped")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            base = rng.random((30, 40, 3)) * 0.3
            if c == 0:
                base += 0.6
            elif c == 2:
                base[:, ::4] += 0.7
            Image.fromarray((base.clip(0, 1) * 255).astype(np.uint8)).save(root / name / f"{name}{i}.png")
    (root / "dark" / "broken.png").write_bytes(b"no image")
    return root


def examples_of(root: Path) -> dict[str, dict]:
    return {layer: json.loads((root / "tiny_vgg" / layer / "examples.json").read_text()) for layer in LAYERS.split(",")}


def scan_args(model: str, images: Path, batch: int) -> list[str]:
    """``kernelviz examples`` arguments for a quiet scan of LAYERS, k 3, decoding in the process."""
    return [
        "examples",
        model,
        "--images",
        str(images),
        "--layers",
        LAYERS,
        "-k",
        "3",
        "--workers",
        "0",
        "--batch-size",
        str(batch),
        "--quiet",
    ]


def test_one_scan_writes_every_unit_of_every_layer(cli, tmp_path):
    images = labeled_folder(tmp_path / "images")
    args = ["examples", "MODEL", "--images", str(images), "--layers", LAYERS, "-k", "4", "--workers", "0"]
    result = cli(*args, "-o", "out", "--quiet")
    assert result.exit_code == 0, result.output
    assert "18 images scanned, 1 unreadable skipped" in result.output
    pages = examples_of(tmp_path / "out")
    scan = scan_units(tiny_vgg(), images, LAYERS.split(","), k=4, workers=0)
    for layer, page in pages.items():
        units = scan.layers[layer].units
        assert page["scanned"] == 18 and [Path(p).name for p in page["skipped"]] == ["broken.png"]
        for key in ("filters", "mean", "bottom", "classes"):
            assert sorted(page[key], key=int) == [str(n) for n in range(units)], (layer, key)
        for n in range(units):
            top, mean, bottom = page["filters"][str(n)], page["mean"][str(n)], page["bottom"][str(n)]
            assert [e["value"] for e in top] == scan.layers[layer].top.values[n].tolist()
            assert [e["value"] for e in bottom] == sorted(e["value"] for e in bottom)  # most negative first
            assert [e["value"] for e in mean] == sorted((e["value"] for e in mean), reverse=True)
            assert all(e["class"] == Path(e["image"]).parent.name for e in top + mean + bottom)
            counts = dict(page["classes"][str(n)]["top"])
            assert sum(counts.values()) == 4 and counts == {
                c: sum(Path(e["image"]).parent.name == c for e in top) for c in counts
            }
            assert len(page["classes"][str(n)]["mean"]) == 3
        crops = [
            tmp_path / "out" / "tiny_vgg" / layer / e["crop"]
            for r in ("filters", "mean", "bottom")
            for found in page[r].values()
            for e in found
        ]
        assert len(crops) == units * 4 * 3 and all(c.is_file() for c in crops)
        shown = {e["image"] for r in ("filters", "mean", "bottom") for found in page[r].values() for e in found}
        assert len({c.resolve() for c in crops}) == len(shown)  # each image shown is written once, not per entry
        assert all(c.parent.name == "examples-images" for c in crops)
        with Image.open(crops[0]) as im:  # the whole image at the model's input size, as a JPEG
            assert im.format == "JPEG" and im.size == (page["size"], page["size"])
        field = page["field"]
        assert 0 < field["effective"] <= min(field["theoretical"], page["size"]) and field["mass"] == 0.5
        for e in (e for found in page["filters"].values() for e in found):  # the square shown: the effective field
            x0, y0, x1, y1 = e["box"]
            assert 0 <= x0 < x1 <= page["size"] and 0 <= y0 < y1 <= page["size"]
            assert max(x1 - x0, y1 - y0) <= field["effective"] + 1
    again = cli(*args, "-o", "out", "--quiet")
    assert "already written" in again.output and examples_of(tmp_path / "out") == pages


def test_shards_give_the_examples_of_one_process(cli, tmp_path):
    images = labeled_folder(tmp_path / "images")
    args = scan_args("MODEL", images, batch=4)
    assert cli(*args, "-o", "one").exit_code == 0
    first = cli(*args, "-o", "two", "--shard", "1/2")
    assert first.exit_code == 0 and "1 shard(s) of the scan still to finish" in first.output
    assert not (tmp_path / "two" / "tiny_vgg" / "conv1_1" / "examples.json").exists()
    last = cli(*args, "-o", "two", "--shard", "0/2")
    assert last.exit_code == 0 and "wrote" in last.output
    assert examples_of(tmp_path / "one") == examples_of(tmp_path / "two")


def test_the_atlas_site_shows_top_mean_bottom_and_classes(tmp_path):
    images = labeled_folder(tmp_path / "images", per_class=3)
    report = kernelviz.atlas(
        tiny_vgg(),
        tmp_path / "atlas",
        layers=["conv2_1"],
        filters=2,
        images=images,
        k=2,
        steps=2,
        size=32,
    )
    page = (report.root / "conv2_1" / "index.html").read_text()
    assert page.count('alt="example"') == 2 * 2 * 3  # 2 filters x 2 images x top, mean, bottom
    assert "highest mean activation" in page and "most negative" in page
    assert "classes of highest mean activation: " in page and "(striped)" in page
    data = json.loads((report.root / "conv2_1" / "examples.json").read_text())
    units = len(kernelviz.list_layers(tiny_vgg(), include=["conv2_1"])[0].shape and data["filters"])
    assert sorted(data["filters"], key=int) == [str(n) for n in range(units)] and units > 2  # every unit: none lost


@pytest.mark.parametrize("form", [["conv1_1"], ["conv1_1", "0", "extra"]])
def test_the_two_forms_are_told_apart(cli, tmp_path, form):
    images = labeled_folder(tmp_path / "images", per_class=1)
    result = cli("examples", "MODEL", *form, "--images", str(images), "-o", "out")
    assert result.exit_code == 2 and "give LAYER FILTER" in result.output


def test_the_scan_needs_an_output_folder(cli, tmp_path):
    images = labeled_folder(tmp_path / "images", per_class=1)
    result = cli("examples", "MODEL", "--images", str(images))
    assert result.exit_code == 2 and "-o OUT is required" in result.output


class StopScanError(Exception):
    pass


def test_a_killed_scan_resumes_to_the_same_examples(tmp_path):
    """Killed after its first checkpoint, rerun: the examples of an uninterrupted scan, and only the rest is
    scanned again."""
    images = labeled_folder(tmp_path / "images", per_class=8)
    layers = LAYERS.split(",")
    one = scan_to_atlas(tiny_vgg(), tmp_path / "one" / "tiny_vgg", images, layers, k=3, batch_size=2, workers=0)

    def stop(p):
        if p.done >= 12:
            raise StopScanError

    root = tmp_path / "two" / "tiny_vgg"
    with pytest.raises(StopScanError):
        scan_to_atlas(tiny_vgg(), root, images, layers, k=3, batch_size=2, workers=0, every=8, progress=stop)
    assert not (root / "conv1_1" / "examples.json").exists()
    started = []
    two = scan_to_atlas(
        tiny_vgg(),
        root,
        images,
        layers,
        k=3,
        batch_size=2,
        workers=0,
        every=8,
        progress=lambda p: started.append(p.done),
    )
    assert started[0] == 8 and two.layers_written == layers == one.layers_written
    assert examples_of(tmp_path / "one") == examples_of(tmp_path / "two")


def test_torchrun_ranks_write_the_examples_of_one_process(tmp_path):
    """``torchrun --nproc-per-node 2 kernelviz examples ...`` on the CPU: each rank scans its share, the shares are
    merged by torch.distributed, rank 0 writes: the files of one process."""
    images = labeled_folder(tmp_path / "images")
    args = scan_args(TINY_MODEL, images, batch=2)
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    script = shutil.which("kernelviz") or str(Path(sys.executable).parent / "kernelviz")
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    # the one process on one thread too, as torchrun's ranks: the comparison is of the sharding alone
    one = subprocess.run([script, *args, "-o", "one"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert one.returncode == 0, one.stderr[-3000:]
    proc = subprocess.run(
        [torchrun, "--nproc-per-node", "2", "--no-python", "--master-port", "29547", script, *args, "-o", "two"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rank 1: the ranks' scans are merged" in proc.stdout
    assert examples_of(tmp_path / "one") == examples_of(tmp_path / "two")


def test_the_atlas_reuses_an_examples_scan_scans_at_the_models_size_and_keeps_every_unit(tmp_path):
    """`kernelviz examples` then `kernelviz atlas --images` on the same images: the atlas reuses the scan (no scan
    stage, no new checkpoint), keeps every unit's examples (none orphaned), and an atlas that scans on its own does
    so at the model's input size (32 here), not its pictures' (16)."""
    images = labeled_folder(tmp_path / "images", per_class=3)
    root = tmp_path / "out" / "tiny_vgg"
    first = scan_to_atlas(tiny_vgg(), root, images, ["conv1_1", "conv2_1"], k=3, workers=0)
    before = json.loads((root / "conv2_1" / "examples.json").read_text())
    checkpoints = sorted((root / "examples-scan").iterdir())
    stages: list[str] = []
    kernelviz.atlas(tiny_vgg(), tmp_path / "out", layers=["conv2_1"], filters=2, images=images, k=2, steps=2,
                    size=16, progress=lambda p: stages.append(p.stage))  # fmt: skip
    assert "scan" not in stages and sorted((root / "examples-scan").iterdir()) == checkpoints  # reused
    after = json.loads((root / "conv2_1" / "examples.json").read_text())
    assert after == before and len(after["filters"]) == first.scan.layers["conv2_1"].units  # every unit kept
    alone = kernelviz.atlas(tiny_vgg(), tmp_path / "alone", layers=["conv2_1"], filters=2, images=images, k=2,
                            steps=2, size=16)  # fmt: skip
    scanned = json.loads((alone.root / "conv2_1" / "examples.json").read_text())
    assert scanned["size"] == 32 and len(scanned["filters"]) > 2  # the model's size; every unit


def test_classes_are_named_not_numbered(tmp_path):
    """Class folders named by WordNet id (as ImageNet's, with or without the name) are shown by the class's name;
    other folders by their own name."""
    from kernelviz.data.collection import collection

    root = tmp_path / "images"
    for folder in ("n01440764_tench", "n02087046", "my_own_class"):
        (root / folder).mkdir(parents=True)
        Image.fromarray(np.full((32, 32, 3), 100, dtype=np.uint8)).save(root / folder / "a.png")
    found = collection(root)
    assert found.classes == ["my_own_class", "n01440764_tench", "n02087046"]
    assert found.names == ["my_own_class", "tench", "toy terrier"]
    report = scan_to_atlas(tiny_vgg(), tmp_path / "out" / "tiny_vgg", root, ["conv1_1"], k=3, workers=0)
    page = json.loads((report.root / "conv1_1" / "examples.json").read_text())
    shown = {e["class"] for found_ in page["filters"].values() for e in found_}
    assert shown == {"my_own_class", "tench", "toy terrier"}
    assert {name for name, _ in page["classes"]["0"]["mean"]} == shown
