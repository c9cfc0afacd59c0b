"""Faults a new user runs into, one test per class, each across the places it can occur: the CLI, the Python API,
long runs and the explorer. Each gives a one-line error (never a traceback, a raw library error, silent garbage
or a 500) and leaves the user's model and files as they were."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

import kernelviz
from kernelviz.core.models import load_checkpoint, set_model_meta
from kernelviz.errors import KernelvizError
from kernelviz.files.images import load_image
from kernelviz.sets.atlas import atlas
from kernelviz.units.examples import find_examples

from .conftest import FAST, assert_unchanged, snapshot
from .nets import tiny_vgg

ROOT = Path(__file__).resolve().parents[1]


def one_line(result) -> str:
    """The CLI's message for a refused command: exit status 1, one line, no traceback."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip() and "/s]" not in line]  # no bars
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


def photo(path: Path, side: int = 40) -> Path:
    Image.fromarray((torch.rand(side, side, 3) * 255).byte().numpy()).save(path)
    return path


def bomb(path: Path, side: int = 20000) -> Path:
    """A PNG whose header declares ``side`` x ``side`` pixels (400 million) in a few hundred bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\0" * (side * 3 + 1) * 4)  # a few rows: the header is what Pillow checks
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b""))
    return path


# -- a failed load changes nothing -----------------------------------------------------------------------


def test_a_checkpoint_that_does_not_fit_leaves_every_weight_as_it_was(tmp_path):
    model = tiny_vgg()
    before = snapshot(model)
    other = {k: torch.full_like(v, 7.0) for k, v in model.state_dict().items()}  # fits, but other values
    for broken, name in (
        ({k: v for k, v in other.items() if k != "classifier.6.bias"}, "missing.pt"),
        ({**other, "extra.weight": torch.ones(3)}, "unexpected.pt"),
    ):
        torch.save(broken, tmp_path / name)
        with pytest.raises(KernelvizError, match="does not fit this model"):
            load_checkpoint(model, tmp_path / name)
        assert_unchanged(model, before)


# -- decompression bombs ---------------------------------------------------------------------------------


def test_decompression_bombs_are_refused_wherever_an_image_is_read(tmp_path, cli):
    path = bomb(tmp_path / "bomb.png")
    with pytest.raises(KernelvizError, match="decompression bomb"):
        load_image(path)
    for args in (
        ["maps", "MODEL", "conv1_1", str(path), "--weights", "random"],
        ["heatmap", "MODEL", str(path), "--weights", "random"],
        ["filter", "MODEL", "conv1_1", "0", "--init", str(path), *FAST],
    ):
        assert "decompression bomb" in one_line(cli(*args)), args


# -- resource limits -------------------------------------------------------------------------------------


def test_work_too_large_to_allocate_is_refused_before_allocating(cli):
    message = one_line(cli("filter", "MODEL", "conv1_1", "0-99999999999", *FAST))
    assert "100,000,000,000 filters" in message and "at most" in message
    message = one_line(cli("filter", "MODEL", "conv1_1", "0", *FAST, "--size", "1000000"))
    assert "needs at least" in message and "GiB" in message and "smaller size" in message
    with pytest.raises(KernelvizError, match="needs at least"):
        kernelviz.visualize(tiny_vgg(), "conv1_1:0", size=300_000, steps=1)


_LIMITED = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing us
resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))
from kernelviz.cli import main
sys.argv = ["kernelviz", *sys.argv[1:]]
main()
"""


@pytest.mark.parametrize(
    "args",
    [
        ["heatmap", "tests.nets:tiny_vgg", "IMAGE", "--weights", "random", "-o", "out"],
        ["maps", "tests.nets:tiny_vgg", "conv1_1", "IMAGE", "--weights", "random", "-o", "out"],
        ["grid", "tests.nets:tiny_vgg", "conv1_1", "--filters", "0-3", *FAST, "-o", "out/grid.png"],
        ["atlas", "tests.nets:tiny_vgg", "-o", "out", "--layers", "conv1_1", "--filters", "2", *FAST],
    ],
    ids=["heatmap", "maps", "grid", "atlas"],
)
def test_a_file_size_limit_is_one_line_and_keeps_the_result(tmp_path, args):
    image = photo(tmp_path / "cat.png")
    words = [str(image) if a == "IMAGE" else a for a in args]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp_path), "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, "-c", _LIMITED, *words], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "could not write" in proc.stderr, proc.stderr
    assert len([line for line in proc.stderr.splitlines() if line.startswith("Error:")]) == 1, proc.stderr


# -- bad numbers -----------------------------------------------------------------------------------------


def test_non_finite_images_and_out_of_range_inits_are_refused():
    model = tiny_vgg()
    image = torch.rand(3, 32, 32)
    for bad in (float("nan"), float("inf")):
        broken = image.clone()
        broken[0, 3, 4] = bad
        with pytest.raises(KernelvizError, match="NaN or infinite"):
            kernelviz.heatmap(model, broken, "gradcam", target=0)
        with pytest.raises(KernelvizError, match="NaN or infinite"):
            kernelviz.feature_maps(model, broken, "conv1_1")
        with pytest.raises(KernelvizError, match="NaN or infinite"):
            kernelviz.predict(model, broken[None])
    with pytest.raises(KernelvizError, match=r"in \[0, 1\].*divide by 255"):
        kernelviz.visualize(model, "conv1_1:0", steps=1, init=image * 255)
    with pytest.raises(KernelvizError, match="8-bit"):
        kernelviz.feature_maps(model, (image * 255).byte(), "conv1_1")


def test_bad_normalization_is_refused_where_it_is_set():
    model = nn.Sequential(nn.Conv2d(3, 2, 3))
    with pytest.raises(KernelvizError, match="std must be positive"):
        set_model_meta(model, mean=(0.5, 0.5, 0.5), std=(0.2, 0.0, 0.2))
    with pytest.raises(KernelvizError, match="1 or 3"):
        set_model_meta(model, mean=(0.5, 0.5), std=(0.2, 0.2, 0.2))
    with pytest.raises(KernelvizError, match="std must be positive"):
        kernelviz.feature_maps(tiny_vgg(), torch.rand(3, 32, 32), "conv1_1", std=[0.0])
    set_model_meta(model, mean=[0.5], std=[0.25])  # one value: every channel
    assert kernelviz.model_meta(model).std == (0.25, 0.25, 0.25)


def test_a_device_this_machine_lacks_is_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(KernelvizError, match=r"'cuda:7'.*1 CUDA GPU"):
        kernelviz.visualize(tiny_vgg(), "conv1_1:0", steps=1, device="cuda:7")
    with pytest.raises(KernelvizError, match=r"'cuda:7'"):
        kernelviz.load_model("tests.nets:tiny_vgg", device="cuda:7")


def test_atlas_arguments_are_checked_in_their_own_words(tmp_path):
    model = tiny_vgg()
    with pytest.raises(KernelvizError, match="filters=0 asks for no filters") as info:
        atlas(model, tmp_path, filters=0, steps=2, size=32)
    assert "batch" not in str(info.value)
    with pytest.raises(KernelvizError, match="cannot make the atlas folder"):
        atlas(model, "/proc/kernelviz-atlas", filters=1, steps=2, size=32)


# -- wrong types in the Python API -----------------------------------------------------------------------


def test_wrong_types_are_refused_at_the_boundary(tmp_path):
    model = tiny_vgg()
    image = torch.rand(3, 32, 32)
    calls = {
        "visualize(name)": lambda: kernelviz.visualize("vgg16", "conv3_2:17", steps=1),
        "visualize(None)": lambda: kernelviz.visualize(None, "conv3_2:17", steps=1),
        "layer_grid(name)": lambda: kernelviz.layer_grid("vgg16", "conv3_2", [0]),
        "heatmap(None)": lambda: kernelviz.heatmap(None, image, "gradcam"),
        "heatmap(path)": lambda: kernelviz.heatmap(model, str(tmp_path / "cat.png"), "gradcam"),
        "feature_maps(path)": lambda: kernelviz.feature_maps(model, tmp_path / "cat.png", "conv1_1"),
        "predict(name)": lambda: kernelviz.predict("vgg16", image[None]),
        "list_layers(name)": lambda: kernelviz.list_layers("vgg16"),
        "activations(None)": lambda: kernelviz.activations(None, image[None], "conv1_1"),
        "kernel_weights(name)": lambda: kernelviz.kernel_weights("vgg16", "conv1_1"),
        "atlas(name)": lambda: kernelviz.atlas("vgg16", tmp_path),
        "init(path)": lambda: kernelviz.visualize(model, "conv1_1:0", steps=1, init="cat.png"),
    }
    for what, call in calls.items():
        with pytest.raises(TypeError, match="must be a torch") as info:
            call()
        assert isinstance(info.value, KernelvizError), what  # one line from a front-end


def test_a_factory_that_raises_or_does_not_import_is_one_line(tmp_path, cli):
    (tmp_path / "broken_net.py").write_text(
        textwrap.dedent("""
        def make():
            raise ValueError("no such depth: 7")
        """)
    )
    (tmp_path / "syntax_net.py").write_text("def make(:\n")
    message = one_line(cli("layers", "broken_net:make"))
    assert "broken_net:make() raised ValueError: no such depth: 7" in message
    message = one_line(cli("layers", "syntax_net:make"))
    assert "cannot import 'syntax_net'" in message and "SyntaxError" in message


# -- damaged atlas records -------------------------------------------------------------------------------


def test_damaged_atlas_records_are_redone_and_a_lost_settings_file_is_no_way_around(tmp_path):
    model = tiny_vgg()
    kwargs = dict(layers=["conv1_1"], filters=3, steps=3, size=32)
    report = atlas(model, tmp_path, **kwargs)
    layer = report.root / "conv1_1"
    record = json.loads((layer / "0000.json").read_text())
    (layer / "0000.json").write_text(json.dumps({**record, "final_value": "high"}))  # a text where a number is
    del record["dead_unit"]
    (layer / "0001.json").write_text(json.dumps(record))
    again = atlas(model, tmp_path, **kwargs)
    assert again.computed == 2 and again.skipped == 1 and again.index_written
    assert isinstance(json.loads((layer / "0000.json").read_text())["final_value"], float)
    (report.root / "settings.json").unlink()
    with pytest.raises(KernelvizError, match=r"no settings\.json.*steps 3 there, 4 now"):
        atlas(model, tmp_path, **{**kwargs, "steps": 4})
    assert atlas(model, tmp_path, **kwargs).skipped == 3  # the same settings resume, and the file is back
    assert (report.root / "settings.json").exists()


# -- models ----------------------------------------------------------------------------------------------


class Picky(nn.Module):
    """Raises its own ValueError for an input smaller than it takes, as a user's model may."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] < 64:
            raise ValueError(f"input must be at least 64 px, got {x.shape[-1]}")
        return self.conv(x).mean((2, 3))


def test_models_that_refuse_an_input_or_hold_nan_say_so(tmp_path):
    with pytest.raises(KernelvizError, match=r"could not run on this input.*at least 64 px"):
        kernelviz.visualize(Picky(), "conv:0", steps=1, size=32)
    with pytest.raises(KernelvizError, match=r"could not run on this input.*at least 64 px"):
        kernelviz.heatmap(Picky(), torch.rand(3, 32, 32), "saliency", target=0)
    linear = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
    set_model_meta(linear, input_size=8)
    with pytest.raises(KernelvizError, match="no convolution layer"):
        atlas(linear, tmp_path, steps=2)
    broken = tiny_vgg()
    with torch.no_grad():
        broken.features[2].weight[0, 0, 0, 0] = float("nan")
    before = snapshot(broken)
    for method in ("gradcam", "saliency"):
        with pytest.raises(KernelvizError, match="NaN or infinite"):
            kernelviz.heatmap(broken, torch.rand(3, 32, 32), method, target=0)
    assert_unchanged(broken, before)  # the NaN is still there, exactly


# -- dataset examples ------------------------------------------------------------------------------------


def test_examples_from_a_folder_of_unreadable_files_fail_in_one_line(tmp_path, cli):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("a.png", "b.jpg"):
        (folder / name).write_bytes(b"not an image")
    with pytest.raises(KernelvizError, match=r"none of the 2 image file\(s\).*a\.png.*b\.jpg"):
        find_examples(tiny_vgg(), "conv1_1", [0], folder)
    message = one_line(cli("examples", "MODEL", "conv1_1", "0", "--images", str(folder), *FAST))
    assert "none of the 2 image file(s)" in message
