"""The atlas: complete, resumable, atomic, sharded (processes, torchrun), browsable in a real browser."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from kernelviz.errors import KernelvizError
from kernelviz.sets.atlas import atlas

from ..nets import TINY_MODEL

TINY = dict(steps=3, size=32, seed=0)
CLI_TINY = ["--weights", "random", "--size", "32", "--steps", "3", "--device", "cpu"]
REPO = Path(__file__).resolve().parents[2]


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.targets: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        for name, value in attrs:
            if name in ("href", "src") and value:
                self.targets.append(value)


def check_links(page: Path) -> int:
    """Every href/src of ``page`` names an existing file; returns how many were checked."""
    parser = _Links()
    parser.feed(page.read_text())
    for target in parser.targets:
        assert (page.parent / target.split("#")[0]).is_file(), f"{page}: broken link {target}"
    return len(parser.targets)


def test_atlas_writes_a_complete_browsable_site(vgg16, tmp_path):
    report = atlas(vgg16, tmp_path, layers=["conv1_1", "conv2_1"], filters=3, **TINY)
    root = tmp_path / "vgg16"
    assert report.root == root and report.computed == 6 and report.remaining == 0 and report.index_written
    files = files_under(root)
    for layer in ("conv1_1", "conv2_1"):
        for n in range(3):
            assert {f"{layer}/{n:04d}.png", f"{layer}/{n:04d}.json"} <= files
        assert {f"{layer}/index.html", f"{layer}/sheet.png"} <= files
        record = json.loads((root / layer / "0002.json").read_text())
        assert record["filter"] == 2 and record["settings"]["steps"] == 3 and "max_activation" in record
    manifest = json.loads((root / "manifest.json").read_text())
    assert [layer["name"] for layer in manifest["layers"]] == ["conv1_1", "conv2_1"]
    assert manifest["layers"][1]["shape"] == [128, 16, 16]
    assert check_links(root / "index.html") >= 4
    assert check_links(root / "conv2_1" / "index.html") >= 9
    assert not [p for p in root.rglob(".*") if p.is_file()]  # no temporary files left


def test_atlas_resumes_and_refuses_other_settings(vgg16, tmp_path):
    kwargs = dict(layers=["conv1_1"], filters=4, **TINY)
    atlas(vgg16, tmp_path, **kwargs)
    png = tmp_path / "vgg16" / "conv1_1" / "0001.png"
    before = png.read_bytes()
    again = atlas(vgg16, tmp_path, **kwargs)
    assert again.computed == 0 and again.skipped == 4
    (tmp_path / "vgg16" / "conv1_1" / "0003.json").unlink()  # as if the run died before finishing it
    third = atlas(vgg16, tmp_path, **kwargs)
    assert third.computed == 1 and png.read_bytes() == before
    with pytest.raises(KernelvizError, match=r"other settings \(steps 3 there, 4 now\): .* those settings"):
        atlas(vgg16, tmp_path, **{**kwargs, "steps": 4})


def _default_sigint() -> None:
    """In the child: Ctrl-C as a user's shell delivers it. A test run started in the background (``cmd &``
    in a script) inherits SIGINT *ignored*, and Python then installs no KeyboardInterrupt handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_cli(*args: str, cwd: Path, **popen) -> subprocess.Popen:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(REPO)}  # tests.nets importable
    return subprocess.Popen(
        [sys.executable, "-m", "kernelviz", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
        **popen,
    )


ATLAS_ARGS = [
    "atlas",
    TINY_MODEL,
    "-o",
    "out",
    "--layers",
    "conv1_1,conv2_1",
    "--filters",
    "4",
    "--quiet",
    "--batch-size",
    "2",
    *CLI_TINY,
]


def test_two_shards_make_the_same_files_as_one_process(tmp_path):
    one = run_cli(*ATLAS_ARGS, cwd=tmp_path / "one" if (tmp_path / "one").mkdir() is None else None)
    (tmp_path / "two").mkdir()
    shards = [run_cli(*ATLAS_ARGS, "--shard", f"{i}/2", cwd=tmp_path / "two") for i in range(2)]
    for proc in [one, *shards]:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    a, b = tmp_path / "one" / "out" / "tiny_vgg", tmp_path / "two" / "out" / "tiny_vgg"
    assert files_under(a) == files_under(b)
    assert (b / "index.html").exists()
    for png in a.rglob("0*.png"):
        # the same batches, whoever computes them: the same pictures
        assert png.read_bytes() == (b / png.relative_to(a)).read_bytes(), png


def test_torchrun_two_cpu_processes(tmp_path):
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    script = shutil.which("kernelviz") or str(Path(sys.executable).parent / "kernelviz")  # the console script
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [torchrun, "--nproc-per-node", "2", "--no-python", "--master-port", "29533", script, *ATLAS_ARGS],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    root = tmp_path / "out" / "tiny_vgg"
    assert len(list(root.glob("conv*/0*.json"))) == 8
    assert (root / "index.html").exists() and (root / "manifest.json").exists()
    computed = [int(n) for n in re.findall(r"(\d+) filters computed", proc.stdout)]
    assert sorted(computed) == [4, 4], proc.stdout  # each rank did its disjoint half


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_interrupted_atlas_loses_nothing_and_resumes(tmp_path, sig):
    args = [
        "atlas",
        "vgg16",
        "-o",
        "out",
        "--layers",
        "conv1_1",
        "--filters",
        "24",  # enough work that the run is still going when the signal comes, even on a loaded machine
        "--quiet",
        "--batch-size",
        "1",
        "--weights",
        "random",
        "--size",
        "48",
        "--steps",
        "40",
        "--device",
        "cpu",
    ]
    proc = run_cli(*args, cwd=tmp_path)
    layer = tmp_path / "out" / "vgg16" / "conv1_1"
    deadline = time.time() + 120
    # what the assertion below counts: filter records (NNNN.json), not the atomic writer's hidden temporaries
    while len(list(layer.glob("[0-9][0-9][0-9][0-9].json"))) < 2 and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(sig)
    proc.communicate(timeout=60)
    if sig == signal.SIGINT:
        assert proc.returncode == 130
    done = {p.name: p.read_bytes() for p in layer.glob("[0-9][0-9][0-9][0-9].*")}
    assert 2 <= len([n for n in done if n.endswith(".json")]) < 24
    for name, data in done.items():  # every finished file is whole
        if name.endswith(".json"):
            json.loads(data)
        else:
            Image.open(layer / name).load()
    again = run_cli(*args, cwd=tmp_path)
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert len(list(layer.glob("0*.json"))) == 24
    for name, data in done.items():
        if name.endswith(".json"):  # finished work was kept, not redone
            assert (layer / name).read_bytes() == data
    assert not [p for p in layer.rglob(".*") if p.is_file()]


def test_site_in_headless_browser(vgg16, tmp_path):
    """Each page loads in a real browser, every image resolves, and nothing is logged as an error."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: .ci/run installs it")
        pytest.skip("chromium not installed (apt-get install chromium)")
    atlas(vgg16, tmp_path, layers=["conv1_1"], filters=3, **TINY)
    root = tmp_path / "vgg16"
    for page in (root / "index.html", root / "conv1_1" / "index.html"):
        proc = subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={tmp_path / 'profile'}",
                "--enable-logging=stderr",
                "--v=0",
                "--virtual-time-budget=5000",
                "--dump-dom",
                page.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        ok = re.search(r'data-images-ok="(\d+)/(\d+)"', proc.stdout)
        assert ok, proc.stdout[:500] + proc.stderr[-2000:]
        assert ok[1] == ok[2] and int(ok[2]) >= 1, ok[0]
        console = [ln for ln in proc.stderr.splitlines() if "CONSOLE" in ln]
        assert console == [], console


def test_resume_verifies_what_it_keeps(tiny, tmp_path):
    """A record that does not parse or a PNG that does not decode is redone; whole files are kept as they are."""
    kwargs = dict(layers=["conv1_1"], filters=4, steps=2, size=32)
    atlas(tiny, tmp_path, **kwargs)
    layer = tmp_path / "tiny_vgg" / "conv1_1"
    whole = (layer / "0000.png").read_bytes(), (layer / "0000.json").read_bytes()
    (layer / "0001.json").write_text('{"objective": "chan')  # truncated by a full disk
    (layer / "0002.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")  # does not decode
    report = atlas(tiny, tmp_path, **kwargs)
    assert report.computed == 2 and report.skipped == 2 and report.index_written
    assert ((layer / "0000.png").read_bytes(), (layer / "0000.json").read_bytes()) == whole
    for n in (1, 2):
        assert json.loads((layer / f"{n:04d}.json").read_text())["filter"] == n
        Image.open(layer / f"{n:04d}.png").load()


def test_damaged_settings_refuse_to_resume(tiny, tmp_path):
    kwargs = dict(layers=["conv1_1"], filters=2, steps=2, size=32)
    atlas(tiny, tmp_path, **kwargs)
    (tmp_path / "tiny_vgg" / "settings.json").write_text("{not json")
    with pytest.raises(KernelvizError, match=r"settings.json is damaged .* delete that folder to start over"):
        atlas(tiny, tmp_path, **kwargs)


@pytest.mark.parametrize(("name", "other"), [("decay", 1.5), ("detail", 0.5)])
def test_an_atlas_from_before_a_setting_resumes_with_the_value_it_was_made_with(tmp_path, name, other):
    """decay and detail were added after atlases were first written: those atlases were made with 1 and 1."""
    from kernelviz.errors import KernelvizError
    from kernelviz.optvis.settings import DEFAULTS
    from kernelviz.sets.atlas import check_settings

    made = {**DEFAULTS.with_(decay=1.0, detail=1.0).to_json(), "model": "m", "weights": "w"}
    old = {k: v for k, v in made.items() if k not in ("decay", "detail")}
    (tmp_path / "settings.json").write_text(json.dumps(old))
    check_settings(tmp_path, made)  # the same pictures: resumes
    with pytest.raises(KernelvizError, match=f"{name} 1.0 there, {other} now"):
        check_settings(tmp_path, {**made, name: other})


def test_negative_atlas_keeps_each_filters_negative_picture_beside_its_positive_one(tmp_path):
    """``negative=True``: over the [0, 1] pixel box a linear unit's positive picture is ``w > 0`` and its negative
    one ``w < 0`` (known answers), each with its record; the layer page shows both, a second contact sheet holds the
    negatives, a rerun keeps them and one made without ``negative`` adds only the missing negatives."""
    import torch
    from torch import nn

    import kernelviz
    from kernelviz.sets.folder import AtlasFolder

    torch.manual_seed(4)
    net = kernelviz.set_model_meta(nn.Sequential(nn.Conv2d(3, 3, 16)), name="linear", input_size=16)
    kwargs = dict(layers=["0"], filters=3, steps=60, size=16, param="pixel", transforms=None)
    atlas(net, tmp_path, **kwargs)  # positives only, as before
    folder = AtlasFolder(tmp_path / "linear")
    assert not folder.written("0", 0, "negative") and not folder.sheet("0", "negative").exists()
    report = atlas(net, tmp_path, negative=True, **kwargs)
    assert report.computed == 0 and report.skipped == 3 and report.remaining == 0 and report.index_written
    weight, bias = net[0].weight.detach(), net[0].bias.detach()
    for n in range(3):
        negative = kernelviz.load_image(folder.picture("0", n, "negative"))
        assert torch.equal((negative > 0.5).float(), (weight[n] < 0).float())
        positive = kernelviz.load_image(folder.picture("0", n))
        assert torch.equal((positive > 0.5).float(), (weight[n] > 0).float())
        record = folder.written_record("0", n, "negative")
        assert record["negative"] is True and record["objective"] == f"-channel(0:{n})"
        assert record["final_value"] == pytest.approx(float(weight[n].clamp(max=0).sum() + bias[n]), abs=1e-4)
        assert record["min_activation"] == pytest.approx(record["final_value"], abs=1e-4)  # a 1x1 map
    page = (folder.layer("0") / "index.html").read_text()
    assert page.count('class="card both"') == 3 and "negative contact sheet" in page
    assert 'src="variants/0002_negative.png"' in page
    assert check_links(folder.layer("0") / "index.html") >= 3 * 3 + 2
    Image.open(folder.sheet("0", "negative")).load()
    manifest = json.loads(folder.manifest_file.read_text())
    assert set(manifest["layers"][0]["negative_values"]) == {"0", "1", "2"}
    before = folder.picture("0", 1, "negative").read_bytes()
    folder.record_file("0", 2, "negative").unlink()  # as if the run died before finishing it
    again = atlas(net, tmp_path, negative=True, **kwargs)
    assert again.remaining == 0 and folder.written("0", 2, "negative")
    assert folder.picture("0", 1, "negative").read_bytes() == before
