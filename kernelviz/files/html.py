"""HTML pages from templates that escape every value by default (Jinja2 with autoescaping, the convention of the
Python web ecosystem and of Starlette's ``Jinja2Templates``).

A page is a template and plain data: every value that reaches the page (a layer name from the user's model, a class
folder's name, a field of a JSON file someone shared) is escaped for HTML where it is put, without its author having
to remember it. A value is put in the page raw only when it is marked safe, which no template here does with data
from outside. URLs are built before they reach a template (each path segment percent-encoded) and escaped there like
any other attribute value.

The static site (:mod:`kernelviz.sets.site`) and the explorer (:mod:`kernelviz.serve.pages`) render through
:func:`render`; the fragments both show (a filter's dataset examples) are macros of this package's
``templates/``.
"""

from __future__ import annotations

import functools
import json
import math
from typing import Any

__all__ = ["render"]


def _number(value: Any, spec: str = ".4g") -> str:
    """``value`` formatted with ``spec`` (``nan`` for a missing or non-numeric value)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "nan"
    return format(value, spec)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@functools.cache
def _environment(package: str) -> Any:
    from jinja2 import ChoiceLoader, Environment, PackageLoader, StrictUndefined

    loaders = [PackageLoader(package, "templates")]
    if package != "kernelviz.files":
        loaders.append(PackageLoader("kernelviz.files", "templates"))
    env = Environment(
        loader=ChoiceLoader(loaders),
        autoescape=True,  # every template here is HTML
        undefined=StrictUndefined,  # a value the page needs and the data lacks is an error, not an empty string
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )
    env.filters["num"] = _number
    env.filters["json"] = lambda value: json.dumps(value)  # a plain string: escaped like any other value
    env.tests["finite"] = _finite
    return env


def render(package: str, template: str, **data: Any) -> str:
    """The page ``template`` of ``package``'s ``templates/`` folder, filled with ``data`` (every value escaped)."""
    return _environment(package).get_template(template).render(**data)
