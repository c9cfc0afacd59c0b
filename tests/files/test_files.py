"""Files: image input in every format, atomic writes with the usual permissions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kernelviz.errors import KernelvizError
from kernelviz.files.images import load_image


def test_load_image_formats(tmp_path):
    rgba = np.zeros((10, 20, 4), dtype=np.uint8)
    rgba[..., 0] = 255
    rgba[:, :10, 3] = 255  # left half opaque red, right half transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    img = load_image(tmp_path / "a.png")
    assert img.shape == (3, 10, 20)
    assert torch.allclose(img[:, 5, 2], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.allclose(img[:, 5, 15], torch.ones(3))  # transparent over white
    Image.fromarray(np.full((40, 30), 128, dtype=np.uint8), "L").save(tmp_path / "g.jpg")
    gray = load_image(tmp_path / "g.jpg", 16)
    assert gray.shape == (3, 16, 16) and abs(float(gray.mean()) - 128 / 255) < 0.02
    (tmp_path / "bad.png").write_text("not an image")
    with pytest.raises(KernelvizError, match="cannot read image"):
        load_image(tmp_path / "bad.png")
    with pytest.raises(KernelvizError, match="not found"):
        load_image(tmp_path / "missing.png")


def test_written_files_have_usual_permissions(tmp_path):
    import os
    import stat

    from kernelviz.files.write import save_json

    path = save_json({"a": 1}, tmp_path / "x.json")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask


def test_wide_and_unusual_image_modes(tmp_path):
    """16-bit, 32-bit and float gray keep their range; CMYK, palette and EXIF-rotated photos come out right."""
    Image.fromarray(np.full((20, 30), 128 * 257, dtype=np.uint16)).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    assert abs(float(load_image(tmp_path / "g16.png").mean()) - 128 / 255) < 1e-3  # was 1.0: clipped to white
    ramp = np.linspace(0, 1, 30, dtype=np.float32)[None].repeat(20, 0)
    Image.fromarray(ramp, "F").save(tmp_path / "f.tif")
    got = load_image(tmp_path / "f.tif")
    torch.testing.assert_close(got[0], torch.from_numpy(ramp))
    torch.testing.assert_close(got[1], got[0])
    Image.fromarray((ramp * 1000).astype(np.int32), "I").save(tmp_path / "i.tif")
    assert abs(float(load_image(tmp_path / "i.tif").mean()) - 1000 * 0.5 / 65535) < 1e-3  # 16-bit range
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "c.jpg")  # no cyan, full magenta and yellow: red
    red = load_image(tmp_path / "c.jpg")[:, 4, 4]
    assert red[0] > 0.9 and red[1] < 0.1 and red[2] < 0.1
    wide = np.zeros((10, 20, 3), dtype=np.uint8)
    wide[:, :10] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to view"
    Image.fromarray(wide).save(tmp_path / "rot.jpg", exif=exif)
    upright = load_image(tmp_path / "rot.jpg")
    assert upright.shape == (3, 20, 10)  # portrait once the orientation is applied
    assert float(upright[:, :8].mean()) > 0.9 and float(upright[:, 12:].mean()) < 0.1  # white on top
    pal = Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).convert("P")
    pal.save(tmp_path / "p.png")
    assert load_image(tmp_path / "p.png").shape == (3, 8, 8)


def test_a_failed_write_keeps_the_result_elsewhere(tmp_path, monkeypatch):
    from kernelviz.files.write import save_json

    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    blocked = tmp_path / "file"
    blocked.write_text("x")  # a file where the output folder should be
    with pytest.raises(
        KernelvizError, match=r"could not write .*file/a.json \(.*\); the result is kept at (.*)"
    ) as info:
        save_json({"a": 1}, blocked / "a.json")
    kept = Path(str(info.value).rsplit("kept at ", 1)[1])
    assert (
        kept.parent.parent.parent == tmp_path / "tmp"
        and kept.parent.name == "file"
        and json.loads(kept.read_text()) == {"a": 1}
    )
