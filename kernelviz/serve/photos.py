"""The explorer's image side: the photos it can show (uploads, ``--images``) and what it computes from one (top-5,
heatmaps, feature maps, caricatures and DeepDreams, accentuations), each a library call run by the worker."""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from concurrent.futures import Future
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from ..errors import KernelvizError, NotFoundError
from ..explain.heatmaps import available_methods, check_methods
from ..files.images import IMAGE_SUFFIXES, image_files, load_image
from ..files.write import figure_png, save_png
from ..jobs.inspect import heatmap_figure, image_summary, maps_figure
from ..jobs.photo import KINDS, photo_figure
from ..optvis.settings import ACCENTUATE, DREAM
from ..units.ablation import scaling_curve
from .events import event
from .worker import Emit

if TYPE_CHECKING:
    from .pictures import Pictures

__all__ = ["MAX_UPLOAD", "Photos"]

#: Largest upload accepted, in bytes.
MAX_UPLOAD = 20 * 1024 * 1024


class Photos:
    """The photos of one explorer and the pictures made from them."""

    def __init__(self, explorer: Pictures) -> None:
        self.ex = explorer
        self._methods: list[str] | None = None
        self._count: int | None = None

    # --- which photos ----------------------------------------------------------------------------
    def count(self) -> int:
        """How many images ``--images`` holds (counted once: the folder is the user's, read, never written)."""
        if self._count is None:
            self._count = len(self.picks())
        return self._count

    def picks(self) -> list[str]:
        """The images of ``--images``, as paths relative to it."""
        if self.ex.images is None:
            return []
        return [p.relative_to(self.ex.images).as_posix() for p in image_files(self.ex.images)]

    def offered(self, uploads: int = 12) -> list[tuple[dict[str, str], str]]:
        """The photos a page can offer: the ``uploads`` newest uploads, then the images of ``--images``; each as
        ``(its query: {"upload": id} or {"pick": path}, its label)``."""
        made = sorted(self.ex.folder.uploads.glob("*.png"), key=lambda p: p.stat().st_mtime, reverse=True)
        chosen = [({"upload": p.stem}, f"upload {p.stem[:8]}") for p in made[:uploads]]
        return chosen + [({"pick": p}, p) for p in self.picks()]

    def save_upload(self, data: bytes) -> str:
        """Decode an uploaded image safely, store it as PNG under ``uploads/``; returns its id.

        Raises:
            KernelvizError: too large, or not an image Pillow can decode.
        """
        from PIL import Image

        if len(data) > MAX_UPLOAD:
            raise KernelvizError(
                f"the file is {len(data) / 2**20:.1f} MiB: uploads are limited to {MAX_UPLOAD // 2**20} MiB"
            )
        if not data:
            raise KernelvizError("the upload is empty: choose an image file")
        digest = hashlib.sha256(data).hexdigest()[:16]
        out = self.ex.folder.uploads / f"{digest}.png"
        if not out.exists():
            with tempfile.TemporaryDirectory() as tmp:
                raw = Path(tmp) / "upload"
                raw.write_bytes(data)
                try:
                    with Image.open(io.BytesIO(data)) as probe:
                        probe.verify()
                    image = load_image(raw)
                except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, KernelvizError) as err:
                    raise KernelvizError(f"the upload is not an image kernelviz can read ({err})") from err
            save_png(image, out)
        return digest

    def path(self, upload: str | None = None, pick: str | None = None) -> Path:
        """The file of an uploaded image id or of a picked ``--images`` file, checked to lie inside its folder."""
        if upload is not None:
            if not (len(upload) == 16 and all(c in "0123456789abcdef" for c in upload)):
                raise NotFoundError("unknown upload id")
            path = self.ex.folder.uploads / f"{upload}.png"
        elif pick is not None and self.ex.images is not None:
            # checked by its name, not where its links lead: a folder of links (the usual ImageNet layout) is the
            # user's, and a name that climbs out of it (.., an absolute path) is refused
            if "\0" in pick:
                raise NotFoundError("that image is not in the --images folder")
            parts = PurePosixPath(pick).parts
            if "\\" in pick or not parts or parts[0] == "/" or ".." in parts:
                raise KernelvizError("that image is not in the --images folder")
            path = Path(self.ex.images).joinpath(*parts)
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                raise KernelvizError("that image is not in the --images folder")
        else:
            raise KernelvizError("no image: upload one, or pick one from --images")
        if not path.is_file():
            raise NotFoundError("image not found")
        return path

    def methods(self) -> list[str]:
        """The heatmap methods this model can run (the attention methods only for a vision transformer)."""
        if self._methods is None:
            self._methods = available_methods(self.ex.model)
        return self._methods

    # --- what is made from one, by the worker ----------------------------------------------------
    def _image(self, path: Path) -> Any:
        return load_image(path, self.ex.meta.input_size)  # (3, S, S)

    def analyse(self, path: Path) -> Future:
        """Top-5 predictions and, per unit layer at every depth, the 6 filters with the largest mean activation."""
        layers = [r.name for r in self.ex.depth_units()]
        key = ("analyse", str(path), os.path.getmtime(path))
        return self.ex.worker.submit(key, lambda emit: image_summary(self.ex.model, self._image(path), layers))

    def scaled(self, path: Path, layer: str, unit: int) -> Future:
        """The image's class probabilities as unit ``unit`` of ``layer`` is scaled from 0 to 4 times
        (:func:`~kernelviz.units.ablation.scaling_curve`)."""
        self.ex.check_filter(layer, unit)
        return self.ex.worker.submit(
            ("scaled", str(path), layer, unit),
            lambda emit: scaling_curve(self.ex.model, layer, unit, self._image(path)),
        )

    def heatmap_png(self, path: Path, method: str, target: str | None, filter: str | None) -> Future:
        """The overlay of one heatmap method on the image, as PNG bytes."""
        check_methods(method)
        if method not in self.methods():
            raise KernelvizError(f"{method} reads a vision transformer's attention: this model has none it can read")

        def run(emit: Emit) -> bytes:
            return figure_png(heatmap_figure(self.ex.model, self._image(path), method, target, filter))

        return self.ex.worker.submit(("heatmap", str(path), method, target, filter), run)

    def maps_png(self, path: Path, layer: str) -> Future:
        """The feature maps of ``layer`` on the image (its 16 strongest channels), as PNG bytes."""
        self.ex.row(layer)
        run = lambda emit: figure_png(maps_figure(self.ex.model, self._image(path), layer))  # noqa: E731
        return self.ex.worker.submit(("maps", str(path), layer), run)

    def photo_png(self, path: Path, kind: str, layer: str | None, n: int | None = None) -> Future:
        """A picture made from the image (:func:`~kernelviz.jobs.photo.photo_figure`) beside it, as PNG bytes: at the
        server's settings and size, but for a DeepDream or an accentuation (from the photo) the steps and learning
        rate of :data:`~kernelviz.optvis.settings.DREAM` or :data:`~kernelviz.optvis.settings.ACCENTUATE`.

        Args:
            kind: ``caricature`` or ``dream`` of ``layer`` (``None``: one per :meth:`Explorer.depth_layers`, early to
                late), or ``accentuate`` (filter ``n`` of ``layer`` made to respond more, kept close to the image).
        """
        if kind not in KINDS:
            raise KernelvizError(f"unknown kind of photo picture {kind!r}: choose from {', '.join(KINDS)}")
        if kind == "accentuate":
            if layer is None or n is None:
                raise KernelvizError("an accentuation needs a layer and a filter")
            self.ex.check_filter(layer, n)
        elif layer is not None:
            self.ex.row(layer)
        layers = [layer] if layer is not None else self.ex.depth_layers()
        settings = self.ex.optim.with_(batch_size=None)
        seeded = {"dream": DREAM, "accentuate": ACCENTUATE}.get(kind)
        if seeded is not None:  # from the photo: few steps, a small learning rate, as the CLI's defaults
            settings = settings.with_(steps=seeded.steps, lr=seeded.lr)
        what = {"caricature": "caricature", "dream": "DeepDream", "accentuate": "feature accentuation"}[kind]
        where = "at every depth" if layer is None else f"of {layer}" + (f" filter {n}" if n is not None else "")
        title = f"{self.ex.meta.name}: {what} {where}"

        def run(emit: Emit) -> bytes:
            x = load_image(path, int(settings.size or self.ex.meta.input_size))  # (3, S, S)

            def progress(p: Any) -> None:
                emit(event("progress", task="photo", layer=layer, stage=p.stage, step=p.done, steps=p.total,
                           value=p.value))  # fmt: skip

            fig = photo_figure(self.ex.model, kind, layers, x, settings, filter=n, title=title, progress=progress)
            return figure_png(fig)

        key = ("photo", str(path), kind, layer, n, os.path.getmtime(path))
        return self.ex.worker.submit(key, run)
