"""What a collection's images are labelled with: their class (an ``ImageFolder`` collection), the WordNet groups
above an ImageNet class (dog, bird, wheeled vehicle...), and the labels of a label file (attributes, parts: several
per image).

A label file is a CSV: an image path (as the collection names it, or relative to the file's folder), then one or more
labels, one per column::

    cats/001.jpg,striped,indoor
    cats/002.jpg,striped

Lines starting with ``#`` and a first line ``image,...`` are skipped.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import KernelvizError, NotFoundError
from .collection import Collection
from .imagenet import imagenet, wnid_of

__all__ = ["KINDS", "LabelSet", "collection_labels"]

#: The kinds of label: a class of the collection, a WordNet group above ImageNet classes, a label file's label.
KINDS = ("class", "group", "label")


@dataclass(frozen=True)
class LabelSet:
    """Labels of a collection's images.

    Attributes:
        ids: what identifies each label: the class folder's name, the group's WordNet id, the label itself.
        names: how each is shown (an ImageNet class's or group's name).
        kinds: each label's kind (:data:`KINDS`).
        members: per label, the indices (into the collection's files) of its images, sorted.
    """

    ids: list[str]
    names: list[str]
    kinds: list[str]
    members: list[list[int]]

    def __len__(self) -> int:
        return len(self.ids)

    def kept(self, least: int) -> LabelSet:
        """The labels with at least ``least`` images."""
        keep = [j for j, m in enumerate(self.members) if len(m) >= least]
        return LabelSet([self.ids[j] for j in keep], [self.names[j] for j in keep], [self.kinds[j] for j in keep],
                        [self.members[j] for j in keep])  # fmt: skip


def collection_labels(found: Collection, label_file: str | os.PathLike | None = None) -> LabelSet:
    """The labels of ``found``'s images: its classes (an ``ImageFolder`` collection), the WordNet groups with at least
    two images above its ImageNet classes (folders named by WordNet id), and the labels of ``label_file``.

    Raises:
        NotFoundError: no such label file.
        KernelvizError: the file cannot be read, or names images that are not in the collection.
    """
    ids: list[str] = []
    names: list[str] = []
    kinds: list[str] = []
    members: list[list[int]] = []
    if found.classes is not None and found.labels is not None:
        shown = found.names or found.classes
        of_class: list[list[int]] = [[] for _ in found.classes]
        for i, c in enumerate(found.labels.tolist()):
            of_class[c].append(i)
        ids += found.classes
        names += shown
        kinds += ["class"] * len(found.classes)
        members += of_class
        table = imagenet()
        groups: dict[int, list[int]] = {}
        for c, folder in enumerate(found.classes):
            wnid = wnid_of(folder)
            index = table.index(wnid) if wnid is not None else None
            if index is None:
                continue
            for g in table.above[index]:
                groups.setdefault(g, []).extend(of_class[c])
        for g, images in sorted(groups.items(), key=lambda item: table.groups[item[0]][0]):
            if len(images) >= 2:
                ids.append(table.groups[g][0])
                names.append(table.groups[g][1])
                kinds.append("group")
                members.append(sorted(images))
    if label_file is not None:
        for label, images in _read_label_file(Path(label_file), found).items():
            ids.append(label)
            names.append(label)
            kinds.append("label")
            members.append(images)
    return LabelSet(ids, names, kinds, members)


def _read_label_file(path: Path, found: Collection) -> dict[str, list[int]]:
    """``{label: image indices}`` from a label file (see the module's description)."""
    if not path.is_file():
        raise NotFoundError(f"label file not found: {path} (a CSV of image path, then its labels)")
    index = {str(f): i for i, f in enumerate(found.files)}
    index.update({os.path.abspath(f): i for i, f in enumerate(found.files)})  # absolute and normalized
    roots = [path.parent, Path(found.source)] if found.source else [path.parent]
    labels: dict[str, set[int]] = {}
    unknown: list[str] = []
    try:
        with path.open(newline="", encoding="utf-8") as f:
            for number, row in enumerate(csv.reader(f), 1):
                if not row or row[0].lstrip().startswith("#") or (number == 1 and row[0].strip().lower() == "image"):
                    continue
                name = row[0].strip()
                where = next(
                    (index[key] for key in [name, *(os.path.abspath(r / name) for r in roots)] if key in index),
                    None,
                )
                if where is None:
                    unknown.append(name)
                    continue
                for label in (cell.strip() for cell in row[1:]):
                    if label:
                        labels.setdefault(label, set()).add(where)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise KernelvizError(f"cannot read the label file {path}: {err}") from err
    if unknown:
        more = f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""
        raise KernelvizError(
            f"{path} names {len(unknown)} image(s) that are not in {found.source}: {', '.join(unknown[:3])}{more} "
            "(give paths as the collection holds them, or relative to the label file)"
        )
    if not labels:
        raise KernelvizError(f"{path} gives no label: write one line per image, its path then its labels")
    return {label: sorted(images) for label, images in sorted(labels.items())}
