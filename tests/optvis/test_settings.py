"""One settings object for every front-end: defaults, validation, JSON form, and the CLI reading them."""

from __future__ import annotations

import click
import pytest

from kernelviz.cli import main
from kernelviz.errors import KernelvizError
from kernelviz.optvis.settings import DEFAULTS, OptimSettings


def test_defaults_and_json_round_trip():
    assert OptimSettings() == DEFAULTS
    assert (DEFAULTS.steps, DEFAULTS.lr, DEFAULTS.param, DEFAULTS.precision) == (256, 0.05, "fourier", "auto")
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
