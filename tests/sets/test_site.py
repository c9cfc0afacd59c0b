"""The atlas's pages escape every name from the user's model in every context (text, attribute, URL)."""

from __future__ import annotations

import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

from torch import nn

from kernelviz.cli import main

EVIL = '"><img src=x onerror=alert(1)>'


class _Walk(HTMLParser):
    """Collects every tag and attribute of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))


def evil_net() -> nn.Module:
    """A model whose first block is named like a script injection."""
    net = nn.Sequential()
    net.add_module(EVIL, nn.Conv2d(3, 4, 3, padding=1))
    net.add_module("relu", nn.ReLU())
    return net


def test_no_name_escapes_its_context(tmp_path, monkeypatch):
    (tmp_path / "evilmod.py").write_text(Path(__file__).read_text())
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    from click.testing import CliRunner

    result = CliRunner().invoke(
        main,
        ["atlas", "evilmod:evil_net", "-o", "at", "--filters", "2", "--size", "32", "--steps", "2", "--quiet"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    pages = list((tmp_path / "at").rglob("*.html"))
    assert len(pages) == 2  # the index and the evil layer's page
    for page in pages:
        walk = _Walk()
        walk.feed(page.read_text())
        assert {tag for tag, _ in walk.tags} <= {
            "html",
            "head",
            "meta",
            "title",
            "style",
            "body",
            "script",
            "p",
            "a",
            "h1",
            "code",
            "div",
            "img",
            "br",
            "b",
            "span",
            "table",
            "tr",
            "th",
            "td",
        }
        for tag, attrs in walk.tags:
            names = {name for name, _ in attrs}
            assert not any(name.startswith("on") for name in names), (page, tag, attrs)
            for name, value in attrs:
                if name in ("href", "src") and value:
                    assert not value.lower().startswith(("javascript:", "x")), value
                    assert (page.parent / unquote(value)).exists(), value  # the link reaches its file
        assert EVIL not in page.read_text()  # only ever in escaped form
    sys.modules.pop("evilmod", None)
