"""Every URL path of the explorer, in one table: the routes (:mod:`~kernelviz.serve.app`), the links of the pages
(:mod:`~kernelviz.serve.pages`) and the requests of ``static/app.js`` (which reads the API's paths from the page's
``data-api`` attribute) all take them from here.

A path is a Starlette route pattern; :func:`path` fills its ``{name}`` parts, each percent-encoded (a layer name
may hold ``/``, ``#`` or quotes).
"""

from __future__ import annotations

import json
import re
import urllib.parse

__all__ = ["API", "PAGES", "api_json", "path"]

#: The pages a browser opens.
PAGES = {
    "model": "/",
    "layer": "/layer/{layer:path}",
    "filter": "/filter/{layer:path}/{n:str}",
    "image": "/image",
    "concepts": "/concepts/{layer:path}",
    "units": "/units",
    "files": "/files/{path:path}",
    "static": "/static",
}
#: What the pages' script asks for (POST for compute, variant, examples and concepts).
API = {
    "compute": "/api/compute",
    "variant": "/api/variant",
    "examples": "/api/examples",
    "trust": "/api/trust",
    "ablate": "/api/ablate",
    "importance": "/api/importance",
    "kernel": "/api/kernel/{layer:path}/{n:str}.png",
    "events": "/api/events",
    "status": "/api/status/{layer:path}",
    "image": "/api/image.png",
    "heatmap": "/api/heatmap.png",
    "maps": "/api/maps.png",
    "photo": "/api/photo.png",
    "concepts": "/api/concepts",
    "concept_maps": "/api/concept_maps.png",
}

_PART = re.compile(r"\{(\w+)(?::\w+)?\}")


def path(pattern: str, **parts: object) -> str:
    """``pattern`` with each ``{name}`` replaced by ``parts[name]``, percent-encoded (``/`` too; a tuple is
    several segments joined by ``/``): ``path(PAGES["filter"], layer="a/b", n=3)`` → ``"/filter/a%2Fb/3"``.
    Not attribute-escaped."""

    def part(value: object) -> str:
        if isinstance(value, tuple):
            return "/".join(urllib.parse.quote(str(v), safe="") for v in value)
        return urllib.parse.quote(str(value), safe="")

    return _PART.sub(lambda m: part(parts[m.group(1)]), pattern)


def api_json() -> str:
    """The API paths without parameters, as JSON for the page's ``data-api`` attribute (the script's table)."""
    return json.dumps({name: p for name, p in API.items() if "{" not in p})
