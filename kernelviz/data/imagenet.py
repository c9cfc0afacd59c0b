"""ImageNet-1k's classes and their WordNet groups, offline: the table ``imagenet.json`` beside this module (written by
``tools/imagenet_wordnet.py`` from WordNet 3.0, whose licence the file carries).

A collection whose class folders are named by WordNet id (``n01440764``, or ``n01440764_tench`` as the ImageNet
sample is) gets its classes' names from here, their ImageNet-1k index (a folder of 200 classes still maps to the
1000-class head), and the groups above them (dog, bird, wheeled vehicle...): labels a unit can be named by.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ImageNetTable", "class_names", "imagenet", "wnid_of"]

_WNID = re.compile(r"n\d{8}")


@dataclass(frozen=True)
class ImageNetTable:
    """The ImageNet-1k classes and the WordNet groups above them.

    Attributes:
        wnids: the 1000 WordNet ids, in class-index order.
        names: their names (torchvision's).
        groups: ``(wnid, name)`` of every group above some class.
        above: per class, the indices into ``groups`` of its groups, nearest first.
        licence: WordNet 3.0's licence.
    """

    wnids: list[str]
    names: list[str]
    groups: list[tuple[str, str]]
    above: list[list[int]]
    licence: str

    def index(self, wnid: str) -> int | None:
        """The class index of ``wnid`` (``None``: not an ImageNet-1k class)."""
        return self._index.get(wnid)

    @functools.cached_property
    def _index(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(self.wnids)}


@functools.cache
def imagenet() -> ImageNetTable:
    """The table (read once)."""
    data = json.loads((Path(__file__).parent / "imagenet.json").read_text(encoding="utf-8"))
    return ImageNetTable(
        wnids=[c[0] for c in data["classes"]],
        names=[c[1] for c in data["classes"]],
        groups=[(g[0], g[1]) for g in data["groups"]],
        above=[list(c[2]) for c in data["classes"]],
        licence=data["licence"],
    )


def wnid_of(folder: str) -> str | None:
    """The WordNet id a class folder is named by (``n01440764`` or ``n01440764_tench``), if it is an ImageNet-1k
    class; ``None`` otherwise."""
    match = _WNID.fullmatch(folder.split("_", 1)[0])
    if match is None:
        return None
    return match.group(0) if imagenet().index(match.group(0)) is not None else None


def class_names(folders: list[str]) -> list[str]:
    """The name to show for each class folder: an ImageNet-1k class's name for a folder named by its WordNet id,
    else the folder's own name."""
    table = imagenet()
    shown = []
    for folder in folders:
        wnid = wnid_of(folder)
        index = table.index(wnid) if wnid is not None else None
        shown.append(table.names[index] if index is not None else folder)
    return shown
