"""A concepts folder (what ``kernelviz concepts`` writes, standalone or inside an atlas), and the one reader of its
``concepts.json`` that the CLI (``heatmap --concepts``) and the explorer both use.

Layout::

    concepts.json              per concept its direction, share, importance, patches, picture; the fit's settings
    concept_KK.png             the concept's picture beside its strongest patches
    concept_KK_picture.png     the picture alone, with its record (.json), as a filter picture has
    concepts.png               the contact sheet
    patches/KK_P.jpg           the patches

A ``concepts.json`` may come from anywhere (a shared or downloaded atlas): :func:`read_concepts` checks every field
a reader uses (types, ranges, file names that stay inside the folder) before anything is drawn or computed from it,
and refuses a damaged file in one line.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import KernelvizError, NotFoundError

__all__ = ["CONCEPTS_FILE", "MAX_SIZE", "concepts_file", "read_concepts"]

#: The record of a concepts folder.
CONCEPTS_FILE = "concepts.json"
#: The largest input side a concepts file may ask for (a larger one is refused before anything is allocated).
MAX_SIZE = 4096


def concepts_file(path: str | os.PathLike) -> Path:
    """``path`` itself, or the ``concepts.json`` of the folder ``path``."""
    path = Path(path)
    return path / CONCEPTS_FILE if path.is_dir() else path


class _Bad(Exception):  # noqa: N818 (a message carrier, caught in this module)
    """What is wrong with a field (becomes the refusal's message)."""


def _number(value: Any, what: str, *, none: bool = False, finite: bool = True) -> None:
    if value is None and none:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Bad(f"{what} is {type(value).__name__}, not a number")
    if finite and not math.isfinite(value):
        raise _Bad(f"{what} is not finite")


def _whole(value: Any, what: str, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Bad(f"{what} is {type(value).__name__}, not a whole number")
    if value < low or (high is not None and value > high):
        raise _Bad(f"{what} is {value}, not in {low}..{high if high is not None else ''}")


def _text(value: Any, what: str, *, none: bool = False) -> None:
    if value is None and none:
        return
    if not isinstance(value, str):
        raise _Bad(f"{what} is {type(value).__name__}, not text")


def _inside(value: Any, what: str, *, none: bool = False) -> None:
    """A file name relative to the folder that cannot leave it (no absolute path, no ``..``)."""
    if value is None and none:
        return
    _text(value, what)
    path = PurePosixPath(value)
    if path.is_absolute() or "\\" in value or ".." in path.parts or not path.parts or "\0" in value:
        raise _Bad(f"{what} {value!r} is not a file inside the concepts folder")


def _check(data: Any) -> None:
    if not isinstance(data, dict):
        raise _Bad("not a JSON object")
    for key in ("model", "layer", "target", "importance_method"):
        _text(data.get(key), key)
    _whole(data.get("size"), "size", 8, MAX_SIZE)
    _whole(data.get("k"), "k", 1)
    for key in ("samples", "images"):
        _whole(data.get(key), key, 0)
    _number(data.get("reconstruction_error"), "reconstruction_error")
    concepts = data.get("concepts")
    if not isinstance(concepts, list) or not concepts:
        raise _Bad("concepts is not a list of concepts")
    if len(concepts) != data["k"]:
        raise _Bad(f"k is {data['k']} but {len(concepts)} concepts are listed")
    channels = None
    for j, c in enumerate(concepts):
        where = f"concept {j}"
        if not isinstance(c, dict):
            raise _Bad(f"{where} is not an object")
        _whole(c.get("index"), f"{where}: index", 0)
        direction = c.get("direction")
        if not isinstance(direction, list) or not direction:
            raise _Bad(f"{where}: direction is not a list of numbers")
        for v in direction:
            _number(v, f"{where}: direction")
        if channels is not None and len(direction) != channels:
            raise _Bad(f"{where}: direction has {len(direction)} channels, not {channels}")
        channels = len(direction)
        _number(c.get("share"), f"{where}: share")
        _number(c.get("importance"), f"{where}: importance", none=True)
        _number(c.get("picture_to_best_patch", 0.0), f"{where}: picture_to_best_patch", finite=False)
        _inside(c.get("picture"), f"{where}: picture", none=True)
        patches = c.get("patches")
        if not isinstance(patches, list):
            raise _Bad(f"{where}: patches is not a list")
        for p in patches:
            if not isinstance(p, dict):
                raise _Bad(f"{where}: a patch is not an object")
            _text(p.get("image"), f"{where}: a patch's image")
            _number(p.get("code"), f"{where}: a patch's code")
            _inside(p.get("crop"), f"{where}: a patch's crop")
        classes = c.get("classes", [])
        if not isinstance(classes, list):
            raise _Bad(f"{where}: classes is not a list")
        for entry in classes:
            if not (isinstance(entry, list) and len(entry) == 2):
                raise _Bad(f"{where}: a class entry is not [name, value]")
            _text(entry[0], f"{where}: a class name")
            _number(entry[1], f"{where}: a class's mean code", finite=False)


def read_concepts(path: str | os.PathLike, *, shown: str | None = None) -> dict[str, Any]:
    """The content of a ``concepts.json`` (or of a folder's), every field a reader uses checked.

    Args:
        shown: how messages name the file (the explorer names it inside the atlas, not by its absolute path).

    Raises:
        NotFoundError: no such file.
        KernelvizError: the file does not parse or a field is missing, of the wrong type or out of range ("not a
            kernelviz concepts file: ..."): nothing of it is used.
    """
    file = concepts_file(path)
    name = shown or str(file)
    if not file.is_file():
        raise NotFoundError(f"concepts file not found: {name} (write one with kernelviz concepts)")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
        _check(data)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError, _Bad) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else err
        raise KernelvizError(f"{name} is not a kernelviz concepts file: {reason} (write it again with kernelviz "
                             "concepts)") from None  # fmt: skip
    return data
