"""The live explorer's façade over the library, for one model and one atlas folder: no HTTP here, no tensor.

Three sides, each a small class: the model's layers and the pictures of their units
(:class:`~kernelviz.serve.pictures.Pictures`, which this class is), the photos and what is made from them
(``explorer.photos``: :class:`~kernelviz.serve.photos.Photos`) and the layers' concepts (``explorer.concepts``:
:class:`~kernelviz.serve.concepts.ConceptsDesk`). Every computation is a library call run by the one
:class:`~kernelviz.serve.worker.Worker`, which owns the model. Another front-end (a notebook widget) uses the same
calls without Starlette::

    ex = Explorer(model, Path("atlas") / "vgg16", images=Path("photos"))
    previews, batches = ex.request_page("conv3_2", list(range(16)))   # futures; events on ex.worker
    ex.photos.heatmap_png(ex.photos.path(pick="cat.jpg"), "gradcam", None, None).result()   # PNG bytes
"""

from __future__ import annotations

from dataclasses import dataclass

from .concepts import ConceptsDesk
from .photos import Photos
from .pictures import VARIANTS, Pictures

__all__ = ["VARIANTS", "Explorer"]


@dataclass
class Explorer(Pictures):
    """One model, its atlas folder and its worker (the arguments of :class:`~kernelviz.serve.pictures.Pictures`),
    with its photos (``photos``) and its layers' concepts (``concepts``)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.photos = Photos(self)
        self.concepts = ConceptsDesk(self)
