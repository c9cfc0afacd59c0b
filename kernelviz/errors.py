"""Every exception kernelviz raises, and the helpers that word their messages.

Every error a user can cause (a bad name, a bad index, a bad file, a setting out of range) is a
:class:`KernelvizError`; front-ends print its message on one line (the CLI exits with status 1)
instead of showing a traceback. Messages say what was wrong and what to do instead.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "KernelvizError",
    "KernelvizTypeError",
    "NoClassesError",
    "NonFiniteObjectiveError",
    "NotFoundError",
    "close_matches",
    "out_of_range",
    "unknown_choice",
]


class KernelvizError(ValueError):
    """A problem with the user's input that the user can fix."""


class KernelvizTypeError(KernelvizError, TypeError):
    """An argument of the wrong type given to the Python API (a name where a model goes, a path where a tensor
    goes): both a :class:`KernelvizError` (front-ends print it on one line) and a ``TypeError``."""


class NotFoundError(KernelvizError):
    """A name that does not exist: a model, layer, class, variant, file or image (a 404 in the explorer)."""


class NoClassesError(KernelvizError):
    """The model's output is not ``(batch, classes)``: what needs class scores (a target, an importance, an
    ablation's accuracy) cannot be had from it."""


class NonFiniteObjectiveError(KernelvizError):
    """The objective became NaN or infinite during optimization."""


def close_matches(name: str, candidates: Iterable[str], n: int = 3) -> str:
    """Return ``" Did you mean: a, b?"`` for the candidates closest to ``name``, or ``""``."""
    found = difflib.get_close_matches(name, list(candidates), n=n, cutoff=0.5)
    return f" Did you mean: {', '.join(found)}?" if found else ""


def out_of_range(what: str, index: int, count: int, owner: str, unit: str | None = None) -> KernelvizError:
    """The error for an index outside ``0..count-1``.

    ``out_of_range("filter", 256, 256, "layer 'conv3_2'")`` reads
    "filter 256 is out of range: layer 'conv3_2' has 256 filters (0-255)".

    Args:
        what: the kind of index (``"filter"``, ``"channel"``, ``"target class"``).
        index: the index given.
        count: how many there are.
        owner: what has them (``"layer 'conv3_2'"``, ``"the model"``).
        unit: the plural noun for the count; default: ``what + "s"``.
    """
    unit = unit or f"{what.split()[-1]}s"
    valid = f" (0-{count - 1})" if count > 0 else ""
    return KernelvizError(f"{what} {index} is out of range: {owner} has {count} {unit}{valid}")


def unknown_choice(what: str, value: object, choices: Iterable[str]) -> NotFoundError:
    """The error for a value that is not one of ``choices``: close names first, then every choice."""
    options = list(choices)
    hint = close_matches(str(value), options)
    return NotFoundError(f"unknown {what} {value!r}.{hint} Choose from: {', '.join(options)}")
