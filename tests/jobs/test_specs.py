"""Reading what users type: filter lists, shards, atlas filter choices, the torchrun device."""

from __future__ import annotations

import pytest

from kernelviz.errors import KernelvizError
from kernelviz.jobs.specs import parse_filter_choice, parse_filters, parse_shard, runtime_device


def test_parse_filters():
    assert parse_filters(("0-3", "17", "5,6", "2")) == [0, 1, 2, 3, 17, 5, 6]
    assert parse_filters("4") == [4]
    for bad, message in (("3-1", "end is before"), ("-2", ">= 0"), ("a", "cannot read"), ("--lr", "no such option")):
        with pytest.raises(KernelvizError, match=message):
            parse_filters(bad)


def test_parse_filter_choice_and_shard():
    assert parse_filter_choice("all") is None
    assert parse_filter_choice("16") == 16
    assert parse_filter_choice("0-2,9") == [0, 1, 2, 9]
    with pytest.raises(KernelvizError, match="asks for no filters"):
        parse_filter_choice("0")
    assert parse_shard(None) is None and parse_shard("3/8") == (3, 8)
    for bad in ("8/8", "a/b", "1"):
        with pytest.raises(KernelvizError, match="shard"):
            parse_shard(bad)


def test_runtime_device_under_torchrun(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    assert runtime_device("auto") == "cuda:3" and runtime_device("cpu") == "cpu"
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert runtime_device("auto") == "auto"
