"""What an image collection is: its files, and their classes when the folder says them.

A collection is read from a folder (searched recursively; torchvision's ``ImageFolder`` layout, one subfolder per
class, gives classes), a text file listing images, or a sequence of paths. Its files are sorted, and everything
that reads it (scans, examples, concepts, the explorer's picker) refers to an image by its index in that list.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import KernelvizError, NotFoundError, close_matches
from ..files.images import IMAGE_SUFFIXES, image_files
from .imagenet import class_names

__all__ = ["Collection", "ImagesArg", "collection"]


@dataclass(frozen=True)
class Collection:
    """The files of an image collection, and their classes when the folder is class-labeled.

    Attributes:
        files: the image files, sorted; image indices point into this list.
        labels: ``(N,)`` class index of each file, or ``None``.
        classes: the classes (subfolder names, sorted: what identifies a class), or ``None``.
        source: the folder or list file the collection was read from, as given.
    """

    files: list[Path]
    labels: torch.Tensor | None = None
    classes: list[str] | None = None
    source: str = ""

    @property
    def names(self) -> list[str] | None:
        """The name to show for each class: an ImageNet-1k class's name for a folder named by its WordNet id
        (``n02087046`` or ``n02087046_toy_terrier`` → ``toy terrier``), else the folder's name."""
        return None if self.classes is None else class_names(self.classes)

    def of_class(self, name: str) -> Collection:
        """The images of class ``name`` only (a collection without classes).

        Raises:
            KernelvizError: the collection has no classes.
            NotFoundError: no class of that name (with close names, or the classes there are).
        """
        if self.classes is None or self.labels is None:
            raise KernelvizError(
                f"--class {name!r} needs a collection with classes (a folder with one subfolder of images per class)"
            )
        if name not in self.classes:
            close = close_matches(name, self.classes)
            listed = f" Its classes: {', '.join(self.classes[:12])}{' ...' if len(self.classes) > 12 else ''}"
            raise NotFoundError(f"no class {name!r} in {self.source}.{close or listed}")
        index = self.classes.index(name)
        files = [f for f, label in zip(self.files, self.labels.tolist(), strict=True) if label == index]
        return Collection(files, source=f"{self.source} (class {name})")


#: What every function that reads a collection accepts: a folder, a list file, paths, or a :class:`Collection`.
ImagesArg = str | os.PathLike | Sequence[str | os.PathLike] | Collection


def collection(images: ImagesArg) -> Collection:
    """The image collection ``images`` names.

    Args:
        images: a folder (searched recursively; when it holds only subfolders, each with images, it is read as
            torchvision's ``ImageFolder`` layout, the subfolder names being the classes), a text file listing one
            image path per line (relative paths are relative to the list's folder; blank lines and lines
            starting with ``#`` are skipped), a sequence of image paths, or a :class:`Collection` (returned as is).

    Raises:
        NotFoundError: no such folder or list file.
        KernelvizError: no image file in it.
    """
    if isinstance(images, Collection):
        return images
    if not isinstance(images, str | os.PathLike):
        files = [Path(p) for p in images]
        source = f"the {len(files)} files given"
    elif Path(images).is_file() and Path(images).suffix.lower() not in IMAGE_SUFFIXES:
        listing = Path(images)
        try:
            lines = listing.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise KernelvizError(f"cannot read the file list {listing}: {err}") from err
        named = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        files = [p if p.is_absolute() else listing.parent / p for p in map(Path, named)]
        source = str(listing)
    else:
        root = Path(images)
        if not root.is_dir():
            raise NotFoundError(f"image folder not found: {root} (give a folder of images or a text file listing them)")
        files, source = image_files(root), str(root)
        labeled = _image_folder(root, files)
        if labeled is not None:
            return Collection(files, *labeled, source=source)
    if not files:
        raise KernelvizError(f"no image files found in {source}")
    return Collection(files, source=source)


def _image_folder(root: Path, files: list[Path]) -> tuple[torch.Tensor, list[str]] | None:
    """``(labels, classes)`` when ``root`` has torchvision's ``ImageFolder`` layout: every image in a subfolder,
    at least two subfolders with images."""
    from torchvision.datasets.folder import find_classes

    if not files or any(f.parent == root for f in files):
        return None
    try:
        found, _ = find_classes(str(root))
    except FileNotFoundError:
        return None
    first = [f.relative_to(root).parts[0] for f in files]
    classes = [c for c in found if c in set(first)]  # subfolders without images are no class of this collection
    if len(classes) < 2 or len(set(first) - set(classes)):
        return None
    to_index = {c: i for i, c in enumerate(classes)}
    return torch.tensor([to_index[c] for c in first], dtype=torch.int64), classes
