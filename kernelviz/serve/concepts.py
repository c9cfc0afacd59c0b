"""The explorer's concepts side: which layers can have concepts, the concepts folders found so far (kept in the atlas
folder, :meth:`~kernelviz.sets.folder.AtlasFolder.concepts_dir`), and the jobs that find them and locate them in a
photo, each a library call run by the worker."""

from __future__ import annotations

import os
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.activations import non_negative
from ..core.layers import LayerInfo
from ..core.names import get_module
from ..data.collection import collection
from ..data.imagenet import class_names
from ..errors import KernelvizError, NotFoundError
from ..files.images import load_image
from ..files.write import figure_png
from ..jobs.concepts import SavedConcepts, concept_maps_figure, export_concepts
from .events import event
from .worker import Emit

if TYPE_CHECKING:
    from .pictures import Pictures

__all__ = ["ConceptsDesk"]


class ConceptsDesk:
    """The concepts of one explorer's layers over its ``--images``."""

    def __init__(self, explorer: Pictures) -> None:
        self.ex = explorer
        self._classes: list[str] | None = None
        self._layers: list[LayerInfo] | None = None

    def layers(self) -> list[LayerInfo]:
        """The layers whose concepts can be found: activations with a spatial map whose outputs are never negative
        (ReLU, ReLU6, Hardtanh from 0, sigmoids: :func:`~kernelviz.core.activations.non_negative`)."""
        if self._layers is None:
            self._layers = [
                r
                for r in self.ex.table.rows
                if len(r.shape) == 3 and r.kind == "activation" and non_negative(get_module(self.ex.model, r.path))
            ]
        return self._layers

    def row(self, layer: str) -> LayerInfo:
        """The row of a layer that can have concepts.

        Raises:
            NotFoundError: an unknown layer.
            KernelvizError: a layer whose outputs can be negative, or without a spatial map.
        """
        self.ex.row(layer)  # an unknown layer: a 404 with close names
        found = next((r for r in self.layers() if r.name == layer), None)
        if found is None:
            raise KernelvizError(
                f"layer {layer!r} is not an activation with non-negative outputs and a spatial map: concepts are found "
                "in the output of a ReLU-like layer"
            )
        return found

    def after(self, layer: str) -> str | None:
        """The activation that follows ``layer`` with the same output shape (the place of its concepts), if any:
        ``relu3_2`` after VGG's ``conv3_2``; ``layer`` itself when it is one."""
        rows = self.ex.table.rows
        i = next((j for j, r in enumerate(rows) if r.name == layer), None)
        if i is None:
            return None
        for r in rows[i : i + 4]:  # a batch norm may come between
            if r.shape != rows[i].shape:
                return None
            if r in self.layers():
                return r.name
        return None

    def classes(self) -> list[str]:
        """The classes of ``--images`` (its subfolders, in the ``ImageFolder`` layout), or none; read once."""
        if self.ex.images is None:
            return []
        if self._classes is None:
            self._classes = collection(self.ex.images).classes or []
        return self._classes

    def names(self) -> list[str]:
        """The name shown for each class of :meth:`classes` (an ImageNet class's name for a WordNet-id folder)."""
        return class_names(self.classes())

    def class_index(self, class_name: str | None) -> int | None:
        """The index of ``class_name`` among the classes (``None`` for all images)."""
        if class_name is None:
            return None
        if class_name not in self.classes():
            raise NotFoundError(f"no class {class_name!r} in --images")
        return self.classes().index(class_name)

    def found(self, layer: str, class_name: str | None = None) -> dict[str, Any] | None:
        """The layer's ``concepts.json`` when written, every field checked (a damaged one is refused)."""
        self.row(layer)
        return self.ex.folder.concepts(layer, self.class_index(class_name))

    def folder(self, layer: str, class_name: str | None = None) -> Path:
        return self.ex.folder.concepts_dir(layer, self.class_index(class_name))

    def everything(self) -> list[tuple[str, str | None]]:
        """``(layer, class or None)`` of every concepts folder written, in layer order (damaged ones left out)."""
        found: list[tuple[str, str | None]] = []
        for r in self.layers():
            for c in [None, *self.classes()]:
                try:
                    if self.ex.folder.concepts(r.name, self.class_index(c)) is not None:
                        found.append((r.name, c))
                except KernelvizError:  # a damaged file: not offered (its page says what is wrong)
                    continue
        return found

    def request(self, layer: str, k: int, class_name: str | None = None) -> Future:
        """Find ``k`` concepts of ``layer`` over ``--images`` (or one class of it) and write their folder."""
        self.row(layer)
        if self.ex.images is None:
            raise KernelvizError("no --images folder was given to the server: concepts are found over images")
        if not 1 <= k <= 64:
            raise KernelvizError(f"k must be 1 to 64, got {k}")
        folder, images, ex = self.folder(layer, class_name), self.ex.images, self.ex

        def run(emit: Emit) -> str:
            def progress(p: Any) -> None:
                emit(event("progress", task="concepts", layer=layer, stage=p.stage, step=p.done, steps=p.total,
                           value=p.value))  # fmt: skip

            export_concepts(ex.model, layer, images, k, folder, ex.optim.with_(batch_size=None),
                            class_name=class_name, progress=progress)  # fmt: skip
            emit(event("concepts", layer=layer, **{"class": class_name}))
            return str(folder)

        return self.ex.worker.submit(("concepts", layer, class_name, k), run)

    def maps_png(self, path: Path, layer: str, class_name: str | None = None) -> Future:
        """Where each of the layer's concepts is in the image (one overlay per concept, one scale), as PNG bytes."""
        data = self.found(layer, class_name)
        if data is None:
            raise NotFoundError(f"no concepts of {layer!r} found yet: open its concepts page to find them")
        saved = SavedConcepts.from_record(data, self.folder(layer, class_name))

        def run(emit: Emit) -> bytes:
            image = load_image(path, self.ex.meta.input_size)
            return figure_png(concept_maps_figure(self.ex.model, saved, image, path.name)[0])

        return self.ex.worker.submit(("concept-maps", str(path), layer, class_name, os.path.getmtime(path)), run)
