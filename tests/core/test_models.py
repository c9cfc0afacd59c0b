"""Model loading: torchvision names, checkpoints, factories, offline errors."""

from __future__ import annotations

import textwrap
import urllib.error

import pytest
import torch
import torchvision
from torch import nn

import kernelviz
from kernelviz.core.models import load_checkpoint
from kernelviz.errors import KernelvizError


def test_random_weights_carry_preprocessing():
    model = kernelviz.load_model("vgg11", weights="random", device="cpu")
    meta = kernelviz.model_meta(model)
    assert meta.weights == "random" and meta.input_size == 224
    assert meta.mean == (0.485, 0.456, 0.406) and meta.std == (0.229, 0.224, 0.225)
    assert not model.training


def test_plain_module_has_neutral_meta():
    meta = kernelviz.model_meta(torch.nn.Conv2d(3, 4, 3))
    assert meta.mean is None and meta.std is None
    x = torch.rand(1, 3, 4, 4)
    assert torch.equal(meta.normalize(x), x)


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "model_state_dict", "ddp"])
def test_checkpoint_round_trip(tmp_path, wrap):
    source = torchvision.models.alexnet(weights=None)
    state = source.state_dict()
    payload = {
        "plain": state,
        "state_dict": {"state_dict": state, "epoch": 3},
        "model_state_dict": {"model_state_dict": state},
        "ddp": {f"module.{k}": v for k, v in state.items()},
    }[wrap]
    path = tmp_path / "ckpt.pth"
    torch.save(payload, path)
    model = kernelviz.load_model("alexnet", weights=str(path), device="cpu")
    for key, value in state.items():
        assert torch.equal(model.state_dict()[key], value)
    assert kernelviz.model_meta(model).weights == str(path)


def test_wrong_checkpoint_names_the_keys(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(KernelvizError, match=r"does not fit.*missing key.*unexpected key"):
        kernelviz.load_model("vgg11", weights=str(path), device="cpu")


def test_corrupt_or_missing_checkpoint(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"this is not a checkpoint")
    with pytest.raises(KernelvizError, match="cannot read weights file"):
        kernelviz.load_model("vgg11", weights=str(bad), device="cpu")
    with pytest.raises(KernelvizError, match="not found"):
        kernelviz.load_model("vgg11", weights=str(tmp_path / "nope.pth"), device="cpu")


def test_offline_default_weights_say_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(KernelvizError) as info:
        kernelviz.load_model("vgg16", device="cpu")
    message = str(info.value)
    assert "IMAGENET1K_V1" in message and str(tmp_path) in message
    assert "--weights PATH" in message and "--weights random" in message


def test_unknown_model_and_weights_names():
    with pytest.raises(KernelvizError, match=r"Did you mean:.*vgg16"):
        kernelviz.load_model("vgg61", device="cpu")
    with pytest.raises(KernelvizError, match=r"IMAGENET1K_V1"):
        kernelviz.load_model("vgg16", weights="IMAGENET9K", device="cpu")


def test_factory_from_current_folder(tmp_path, monkeypatch):
    (tmp_path / "mynets.py").write_text(
        textwrap.dedent(
            """
            import torch.nn as nn

            def tiny():
                return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3))

            NOT_A_MODEL = 3
            def broken():
                return 42
            """
        )
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    model = kernelviz.load_model("mynets:tiny", device="cpu")
    assert isinstance(model, torch.nn.Sequential)
    path = tmp_path / "tiny.pt"
    torch.save(model.state_dict(), path)
    again = kernelviz.load_model("mynets:tiny", weights=str(path), device="cpu")
    assert torch.equal(again[0].weight, model[0].weight)
    with pytest.raises(KernelvizError, match=r"not a torch\.nn\.Module"):
        kernelviz.load_model("mynets:broken", device="cpu")
    with pytest.raises(KernelvizError, match="no callable"):
        kernelviz.load_model("mynets:missing", device="cpu")
    with pytest.raises(KernelvizError, match="cannot import"):
        kernelviz.load_model("no_such_pkg.mod:fn", device="cpu")


def test_random_weights_are_reproducible():
    a = kernelviz.load_model("vgg11", weights="random", device="cpu")
    torch.rand(5)  # the caller's RNG use does not matter, nor is it disturbed
    b = kernelviz.load_model("vgg11", weights="random", device="cpu")
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))


def test_checkpoint_with_the_right_keys_but_wrong_shapes(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3))
    other = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 6, 3))  # 6 classes, not 4
    torch.save(other.state_dict(), tmp_path / "six.pt")
    with pytest.raises(KernelvizError, match=r"2 tensor\(s\) of another shape \(e.g. 2.weight: \(6, 8, 3, 3\)"):
        load_checkpoint(model, tmp_path / "six.pt")


def test_meta_model_gets_real_weights_from_a_checkpoint(tmp_path):
    real = nn.Sequential(nn.Conv2d(3, 4, 3))
    torch.save(real.state_dict(), tmp_path / "w.pt")
    with torch.device("meta"):
        shell = nn.Sequential(nn.Conv2d(3, 4, 3))
    loaded = load_checkpoint(shell, tmp_path / "w.pt")
    assert not any(p.is_meta for p in loaded.parameters())
    assert torch.equal(loaded[0].weight, real[0].weight)


def test_preprocessing_a_model_carries_is_read():
    timm = pytest.importorskip("timm")
    inception = timm.create_model("inception_v3", pretrained=False)
    meta = kernelviz.model_meta(inception)
    assert (meta.input_size, meta.mean, meta.std) == (299, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert meta.preprocessing == "timm pretrained_cfg" and len(meta.categories) == 1000
    plain = nn.Sequential(nn.Conv2d(3, 4, 3))
    assert kernelviz.model_meta(plain).preprocessing == "unknown" and kernelviz.model_meta(plain).mean is None

    class Processor:  # what a Hugging Face image processor says
        image_mean, image_std, crop_size = [0.5, 0.4, 0.3], [0.2, 0.2, 0.2], {"height": 256, "width": 256}

    plain.image_processor = Processor()
    carried = kernelviz.model_meta(plain)
    assert (carried.mean, carried.input_size, carried.preprocessing) == ((0.5, 0.4, 0.3), 256, "image processor")


def test_load_model_takes_the_users_preprocessing():
    model = kernelviz.load_model("resnet18", weights="random", device="cpu", mean=[0.5], std=[0.25], input_size=160)
    meta = kernelviz.model_meta(model)
    assert (meta.mean, meta.std, meta.input_size) == ((0.5,) * 3, (0.25,) * 3, 160)
    assert meta.preprocessing == "set by the user"
    for bad, message in ((dict(std=[0.0]), "std must be positive"), (dict(mean=[1, 2]), "1 or 3 finite numbers")):
        with pytest.raises(KernelvizError, match=message):
            kernelviz.load_model("resnet18", weights="random", device="cpu", **bad)
