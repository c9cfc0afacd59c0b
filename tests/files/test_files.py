"""Files: image input in every format, atomic writes with the usual permissions."""

from __future__ import annotations

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
