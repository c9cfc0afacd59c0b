"""Escaping what reaches HTML: one helper per context, used by the static site and the live explorer alike.

Layer and module names come from the user's model and may hold any character (``"><img onerror=...>``, ``/``,
``#``): :func:`text` for element content, :func:`attr` for attribute values, :func:`url` for a relative link to a
file (each segment percent-encoded, then attribute-escaped). The explorer's absolute paths come from
:mod:`kernelviz.serve.urls`.
"""

from __future__ import annotations

import html
import urllib.parse

__all__ = ["attr", "text", "url"]


def text(value: object) -> str:
    """``value`` as HTML element content (``<``, ``>`` and ``&`` escaped)."""
    return html.escape(str(value), quote=False)


def attr(value: object) -> str:
    """``value`` as the inside of a double- or single-quoted attribute value (quotes escaped too)."""
    return html.escape(str(value), quote=True)


def url(path: str) -> str:
    """A relative file path as an attribute-safe URL: each segment percent-encoded (so ``#``, ``?``,
    ``:`` and quotes in a name cannot change what the link means), then attribute-escaped."""
    return attr(urllib.parse.quote(path, safe="/"))
