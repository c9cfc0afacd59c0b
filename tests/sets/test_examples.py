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
        assert len(set(crops)) == len(crops) == units * 4 * 3
        with Image.open(crops[0]) as im:  # a receptive-field crop of the top image, as a JPEG
            x0, y0, x1, y1 = page["filters"]["0"][0]["box"]
            assert im.format == "JPEG" and im.size == (x1 - x0, y1 - y0)
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
    assert sorted(data["filters"]) == ["0", "1"]  # the atlas's filters only


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
