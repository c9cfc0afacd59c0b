"""Exceptions raised by kernelviz.

Every error a user can cause (a bad name, a bad index, a bad file) is a
:class:`KernelvizError`; the CLI prints its message on one line and exits
non-zero instead of showing a traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["KernelvizError", "close_matches"]


class KernelvizError(ValueError):
    """A problem with the user's input that the user can fix."""


def close_matches(name: str, candidates: Iterable[str], n: int = 3) -> str:
    """Return ``" Did you mean: a, b?"`` for the candidates closest to ``name``, or ``""``."""
    found = difflib.get_close_matches(name, list(candidates), n=n, cutoff=0.5)
    return f" Did you mean: {', '.join(found)}?" if found else ""
