"""One settings object for every front-end: defaults, validation, JSON form, and the CLI reading them."""

from __future__ import annotations

import click
import pytest

from kernelviz.cli import main
from kernelviz.errors import KernelvizError
from kernelviz.optvis.settings import DEFAULTS, OptimSettings


def test_defaults_and_json_round_trip():
    assert OptimSettings() == DEFAULTS
    assert (DEFAULTS.steps, DEFAULTS.lr, DEFAULTS.param, DEFAULTS.precision) == (192, 0.05, "fourier", "auto")
    custom = DEFAULTS.with_(steps=10, size=64, transforms="none", batch_size=4)
    assert custom.transforms is None  # the CLI's "none" means no transforms
    data = custom.to_json()
    assert data["transforms"] == "none" and data["steps"] == 10
    assert OptimSettings.from_json(data) == custom
    assert custom.for_model(224).size == 64 and DEFAULTS.for_model(160).size == 160


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"steps": -1}, "steps must be >= 0"),
        ({"size": 0}, "size must be >= 8"),
        ({"lr": 0.0}, "lr must be a positive number"),
        ({"lr": float("nan")}, "lr must be a positive number"),
        ({"param": "wavelet"}, "unknown parameterization 'wavelet'"),
        ({"transforms": "strong"}, "unknown transforms 'strong'"),
        ({"precision": "fp8"}, "unknown precision 'fp8'"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"steps": 2.5}, "steps must be a whole number"),
        ({"colour": 1}, "unknown optimization settings: colour"),
        ({"detail": 0.05}, "detail must be a number from 0.1 to 1"),
        ({"detail": 1.5}, "detail must be a number from 0.1 to 1"),
    ],
)
def test_bad_settings_are_clear_errors(changes, message):
    with pytest.raises(KernelvizError, match=message):
        DEFAULTS.with_(**changes)


@pytest.mark.parametrize("command", ["filter", "grid", "atlas", "examples"])
def test_cli_defaults_are_the_library_defaults(command):
    """Every optimization option of every command defaults to the field of DEFAULTS it sets."""
    params = {p.name: p for p in main.commands[command].params if isinstance(p, click.Option)}
    for name in OptimSettings.names():
        assert params[name].default == getattr(DEFAULTS, name), name


def test_decay_shapes_the_fourier_spectrum():
    """A steeper ``1/f**decay`` scaling puts less of the image's power into fine detail, from the first
    render on; the setting reaches visualize and its record, and other parameterizations ignore it."""
    import torch

    from kernelviz.optvis.params import image_param

    def high_share(decay: float) -> float:
        param = image_param(
            "fourier", 4, (64, 64), generator=torch.Generator().manual_seed(0), device=torch.device("cpu"), decay=decay
        )
        gray = param.render().mean(1)
        power = torch.fft.rfft2(gray - gray.mean((1, 2), keepdim=True)).abs() ** 2
        f = torch.sqrt(torch.fft.fftfreq(64)[:, None] ** 2 + torch.fft.rfftfreq(64)[None, :] ** 2)
        return float(power[:, f > 0.125].sum() / power[:, f > 0].sum())

    shares = [high_share(d) for d in (0.5, 1.0, 1.5, 2.0)]
    assert shares == sorted(shares, reverse=True) and shares[0] > 2 * shares[-1]
    with pytest.raises(KernelvizError, match="decay must be a number from 0 to 4"):
        DEFAULTS.with_(decay=9)
    assert OptimSettings.from_json(DEFAULTS.with_(decay=1.5).to_json()).decay == 1.5


def test_preview_settings_are_quicker_or_none():
    """Previews keep every setting but steps, size and batch; none when a picture costs under two previews."""
    from kernelviz.optvis.settings import PREVIEW, PREVIEW_BATCH, QUICK, preview_settings

    defaults = DEFAULTS.with_(size=224, seed=3, param="maco")
    quick = preview_settings(defaults)
    assert quick == defaults.with_(steps=PREVIEW.steps, size=PREVIEW.size, batch_size=PREVIEW_BATCH)
    assert preview_settings(QUICK) is None  # 64 steps at 128 px: about one preview's cost
    assert preview_settings(DEFAULTS.with_(size=32, steps=4)) is None
    small = preview_settings(DEFAULTS.with_(size=64, steps=400))  # never larger than the pictures
    assert small is not None and small.size == 64 and small.steps == PREVIEW.steps
