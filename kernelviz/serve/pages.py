"""The explorer's HTML: each page a template (``serve/templates/``) filled with the plain data of its view
(:mod:`~kernelviz.serve.views`). Templates escape every value by default (:mod:`kernelviz.files.html`): nothing
that comes from the model, the disk or the request reaches a page raw."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..files.html import render
from .events import events_json
from .urls import PAGES, api_json

__all__ = ["page"]

#: The pages there are (each a template of the same name).
PAGES_SHOWN = ("model", "layer", "filter", "concepts", "image", "units", "message")


def page(name: str, view: Mapping[str, Any], token: str = "") -> str:
    """The HTML of page ``name`` (one of :data:`PAGES_SHOWN`) showing ``view`` (plain data), for a browser holding
    ``token``."""
    if name not in PAGES_SHOWN:
        raise ValueError(f"no page {name!r}")
    return render(
        "kernelviz.serve",
        f"{name}.html",
        **view,
        token=token,
        api=api_json(),
        events=events_json(),
        static=PAGES["static"],
        home=PAGES["model"],
        image_page=PAGES["image"],
    )
