"""The explorer's model side, for one model and one atlas folder: its layers and the pictures of their units;
no HTTP here, no tensor.

The explorer's cache *is* an atlas (:mod:`kernelviz.sets.atlas`): a filter's picture is made by the same
:func:`~kernelviz.sets.atlas.write_filters` in the same batches (the atlas's batch ``i`` holds filters
``i*B .. i*B+B-1`` of a layer), written with the same atomic writes, under the same ``settings.json``. So
``kernelviz atlas`` output serves at once, a restart loses nothing, and ``kernelviz atlas`` can finish what the
explorer started. Variants go to ``<layer>/variants/`` (:mod:`kernelviz.sets.variants`), uploaded photos to
``uploads/``.

Every computation is a library call (``jobs``, ``sets``, ``explain``) run as a task of the one :class:`Worker`,
which owns the model; this class only chooses what to ask and turns progress into events.
:class:`~kernelviz.serve.explorer.Explorer` adds the image and concepts sides to it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.layers import LayerInfo, default_units
from ..core.models import model_device, model_meta, model_slug
from ..core.progress import OnProgress, Progress
from ..errors import KernelvizError, NotFoundError, out_of_range
from ..explain.wiring import Wiring
from ..files.images import load_image
from ..files.write import figure_png, save_json
from ..jobs.inspect import LayerTable, kernel_figure, layer_table
from ..optvis.batch import auto_batch_size
from ..optvis.render import StopOptimization
from ..optvis.settings import DEFAULTS, PREVIEW_BATCH, OptimSettings, preview_settings
from ..sets.atlas import write_examples, write_filters, write_previews, write_trust
from ..sets.examples import write_importance
from ..sets.folder import AtlasFolder, atlas_settings
from ..sets.variants import VARIANTS, write_variant
from ..units.ablation import ablate
from ..units.trust import PathCheck, collection_check, unit_examples
from .events import event
from .urls import PAGES
from .urls import path as url_path
from .worker import Emit, Preempted, Worker

if TYPE_CHECKING:
    from torch import nn

__all__ = ["ABLATIONS", "VARIANTS", "Pictures"]

#: What the filter page's ablation buttons do: ``(mode, factor)`` of :func:`~kernelviz.ablate`.
ABLATIONS = {"zero": ("zero", None), "x4": ("scale", 4.0)}


@dataclass
class Pictures:
    """One model, its atlas folder and its worker: the layers and the pictures of their units.

    Args:
        model: the network (with metadata: :func:`~kernelviz.load_model`).
        root: the model's atlas folder (``DIR/<model>``), created if needed.
        images: a folder of natural images (dataset examples, the image page's picker, concepts).
        settings: optimization settings; default: those of the atlas already in ``root``, else the defaults.
    """

    model: nn.Module
    root: Path
    images: Path | None = None
    settings: OptimSettings | None = None
    worker: Worker = field(default_factory=Worker)

    def __post_init__(self) -> None:
        self.meta = model_meta(self.model)
        self.root = Path(self.root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.folder = AtlasFolder(self.root)
        if self.images is not None and not Path(self.images).is_dir():
            raise KernelvizError(f"--images {self.images}: not a folder")
        self._table = layer_table(self.model, blocks=True)  # as `kernelviz layers MODEL --all` shows it
        self._rows = {r.name: r for r in self._table.rows}
        self.wiring = Wiring(self.model, self._table.rows)
        if not self.wiring.convs:
            raise KernelvizError(f"{self.meta.name} has no convolution: nothing to explore")
        self.optim: OptimSettings = self._settings()
        #: the layer pages' quick previews' settings (``None``: the server's own settings are as quick)
        self.preview: OptimSettings | None = preview_settings(self.optim)
        self.recorded = atlas_settings(self.optim, self.meta)
        self.folder.check_settings(self.recorded)  # refuses an atlas made with other settings
        self._checks: dict[str, PathCheck] = {}  # each layer's path check, calibrated once

    def _settings(self) -> OptimSettings:
        """The settings given, else those of the atlas in the folder, else the defaults; with a batch size."""
        chosen = self.settings
        if chosen is None and self.folder.settings_file.exists():
            try:
                data = self.folder.settings() or {}
                chosen = OptimSettings.from_json({k: v for k, v in data.items() if k in OptimSettings.names()})
            except (ValueError, TypeError, AttributeError, KernelvizError) as err:
                raise KernelvizError(
                    f"{self.folder.settings_file} cannot be read ({err}): use another --atlas folder"
                ) from err
        settings = (chosen or DEFAULTS).for_model(self.meta.input_size)
        if not settings.batch_size:
            widest = max(r.channels for r in self.wiring.convs)
            first = self.wiring.convs[0].name
            size = int(settings.size or 0)
            device = model_device(self.model)
            settings = settings.with_(batch_size=auto_batch_size(self.model, first, size, device, widest))
        return settings

    # --- the model's layers --------------------------------------------------------------------
    @property
    def table(self) -> LayerTable:
        """The layer table (computed once, at start)."""
        return self._table

    @property
    def slug(self) -> str:
        return model_slug(self.meta.name)

    def unit_layers(self) -> list[LayerInfo]:
        """The rows of the layers with pages: every convolution, activation, pooling, normalization and block output
        with a spatial map (padding and identity layers repeat their input: no page)."""
        return [
            r
            for r in self._table.rows
            if len(r.shape) == 3
            and (r.type.startswith("Conv") or r.kind in ("activation", "block") or re.search("Pool|Norm", r.type))
        ]

    def is_conv(self, layer: str) -> bool:
        return self.row(layer) in self.wiring.convs

    def row(self, layer: str) -> LayerInfo:
        """The table row of a layer the explorer shows.

        Raises:
            NotFoundError: an unknown layer (with close names).
            KernelvizError: a layer without a page.
        """
        row = self._rows.get(layer)
        if row is None:
            from ..core.names import resolve_layer

            resolve_layer(self.model, layer)  # the usual message, with close names
            raise NotFoundError(f"unknown layer {layer!r}")
        if row not in self.unit_layers():
            raise KernelvizError(
                f"layer {layer!r} has no page: pages are for the convolutions, activations, pooling, normalization and "
                "block outputs with a spatial map"
            )
        return row

    def check_filter(self, layer: str, n: int) -> LayerInfo:
        row = self.row(layer)
        if not 0 <= n < row.channels:
            raise out_of_range("filter", n, row.channels, f"layer {layer!r}")
        return row

    def depth_units(self) -> list[LayerInfo]:
        """The unit layers from the first to the last: every convolution with a spatial map, or for a transformer
        every block's MLP activation (:func:`~kernelviz.core.layers.default_units`)."""
        return [r for r in default_units(self.model, self._table.rows) if len(r.shape) == 3]

    def depth_layers(self, k: int = 5) -> list[str]:
        """``k`` unit layers spread from the first to the last (the image page's "every depth")."""
        units = [r.name for r in self.depth_units()]
        if len(units) <= k:
            return units
        return [units[round(i * (len(units) - 1) / (k - 1))] for i in range(k)]

    # --- what is on disk -----------------------------------------------------------------------
    def file_url(self, path: Path) -> str:
        """The URL path of a file under the atlas root (``/files/...``, each segment percent-encoded)."""
        return url_path(PAGES["files"], path=tuple(self.folder.relative(path).split("/")))

    def done(self, layer: str) -> list[int]:
        """The filters of ``layer`` whose picture is on disk (cheap: for pages)."""
        return self.folder.written_filters(layer)

    def variants(self, layer: str, n: int) -> dict[str, Path]:
        """The variants of filter ``n`` already made (an atlas's negative picture is its negative variant)."""
        return {k: p for k in VARIANTS if self.folder.written(layer, n, k) for p in [self.folder.variant(layer, n, k)]}

    # --- pictures, made by the worker ----------------------------------------------------------
    def request_page(self, layer: str, filters: list[int]) -> tuple[list[Future], list[Future]]:
        """A layer page's missing pictures: quick previews first, then the atlas batches (:meth:`request_filters`),
        all of one request; returns ``(preview futures, batch futures)``.

        Previews (:func:`~kernelviz.optvis.settings.preview_settings`) are made for the filters with neither picture
        nor preview, ``PREVIEW_BATCH`` per task, each reported by a ``preview`` event. None are made when the
        server's own settings cost no more.
        """
        for n in filters:
            self.check_filter(layer, n)
        request = self.worker.new_request()  # this page's tasks go before those of pages asked earlier
        previews = []
        if self.preview is not None:
            todo = sorted(
                {n for n in filters if not self.folder.written(layer, n) and not self.folder.preview(layer, n).exists()}
            )
            for i in range(0, len(todo), PREVIEW_BATCH):
                chunk = todo[i : i + PREVIEW_BATCH]
                previews.append(self.worker.submit(("preview", layer, *chunk), self._previews(layer, chunk), request))
        return previews, self.request_filters(layer, filters, request)

    def _yielding(self, emit: Emit, **fields: Any) -> OnProgress:
        """A progress listener that sends ``progress`` events and gives way to a newer page (as a batch does)."""

        def listen(p: Progress) -> None:
            emit(event("progress", stage=p.stage, step=p.done, steps=p.total, value=p.value, **fields))
            if self.worker.outranked():
                raise StopOptimization

        return listen

    def _previews(self, layer: str, chunk: list[int]) -> Callable[[Emit], Any]:
        settings = self.preview
        assert settings is not None

        def run(emit: Emit) -> int:
            left = [n for n in chunk if not self.folder.written(layer, n)]
            if not left:
                return 0
            progress = self._yielding(emit, task="preview", layer=layer, filters=left)
            written, stopped = write_previews(self.model, self.root, layer, left, settings, progress=progress)
            if stopped:
                raise Preempted
            for n, path in written.items():
                emit(event("preview", layer=layer, filter=n, src=self.file_url(path)))
            return len(written)

        return run

    def request_filters(self, layer: str, filters: list[int], request: int | None = None) -> list[Future]:
        """Queue the atlas batches holding ``filters`` that are not on disk; returns their futures. Each batch reports
        ``progress`` and one ``done`` event per filter written. ``request``: the request they belong to
        (:meth:`Worker.new_request`; default: a new one)."""
        row = self.row(layer)
        for n in filters:
            self.check_filter(layer, n)
        b = int(self.optim.batch_size or 1)
        if request is None:
            request = self.worker.new_request()  # this page's batches go before those of pages asked earlier
        futures = []
        for start in sorted({n // b * b for n in filters}):
            group = list(range(start, min(start + b, row.channels)))
            if all(self.folder.kept(layer, n) for n in group):
                continue
            futures.append(self.worker.submit(("batch", layer, start), self._batch(layer, group), request))
        return futures

    def _batch(self, layer: str, group: list[int]) -> Callable[[Emit], Any]:
        def run(emit: Emit) -> int:
            kept = {(layer, n) for n in group if self.folder.kept(layer, n)}
            if len(kept) == len(group):
                return 0
            progress = self._yielding(emit, task="batch", layer=layer, filters=group)
            emit(event("progress", task="batch", layer=layer, filters=group, stage="optimize", step=0,
                       steps=int(self.optim.steps)))  # fmt: skip
            written, stopped = write_filters(self.model, self.root, layer, group, self.optim, skip=kept,
                                             progress=progress)  # fmt: skip
            if stopped:  # nothing was written; the batch runs again once the newer requests are served
                raise Preempted
            for n in group:  # the records just written, not read back; those kept from before are read
                record = written[n] if n in written else self.folder.written_record(layer, n)
                emit(event("done", layer=layer, filter=n, src=self.file_url(self.folder.picture(layer, n)),
                           value=record["final_value"], dead=record["dead_unit"]))  # fmt: skip
            return len(written)

        return run

    def request_variant(self, layer: str, n: int, kind: str) -> Future:
        """Make one variant of filter ``n`` (its PNG and record under ``<layer>/variants/``). The negative picture of
        an atlas made with ``--negative`` is that variant already: it is kept, not made again."""
        self.check_filter(layer, n)
        if kind not in VARIANTS:
            raise NotFoundError(f"unknown variant {kind!r}: choose from {', '.join(VARIANTS)}")

        def run(emit: Emit) -> str:
            path = self.folder.variant(layer, n, kind)
            if not self.folder.kept(layer, n, kind):
                progress = self._listener(emit, task="variant", layer=layer, filters=[n], variant=kind)
                path = write_variant(self.model, self.root, layer, n, kind, self.optim, progress=progress)
            emit(event("variant", layer=layer, filter=n, variant=kind, src=self.file_url(path)))
            return str(path)

        return self.worker.submit(("variant", layer, n, kind), run)

    def _listener(self, emit: Emit, **fields: Any) -> OnProgress:
        """A progress listener that sends ``progress`` events (a task that does not give way)."""
        return lambda p: emit(event("progress", stage=p.stage, step=p.done, steps=p.total, value=p.value, **fields))

    def examples(self, layer: str) -> dict[str, Any] | None:
        """The layer's ``examples.json`` (dataset examples of every filter), when made."""
        return self.folder.examples(layer)

    def request_examples(self, layer: str) -> Future | None:
        """Scan ``--images`` once for every filter of ``layer`` (atlas layout); ``None`` without images."""
        if self.images is None:
            return None
        self.row(layer)
        images = self.images

        def run(emit: Emit) -> None:
            progress = self._listener(emit, task="examples", layer=layer)
            write_examples(self.model, self.root, layer, images, 9, progress=progress)
            emit(event("examples", layer=layer))

        return self.worker.submit(("examples", layer), run)

    def request_trust(self, layer: str, n: int) -> Future | None:
        """Path-check filter ``n``'s picture against its natural examples in ``--images`` and write it into its
        record (``"trust"``); the layer's check is calibrated once, on the units with a picture and others drawn
        (:func:`~kernelviz.units.trust.collection_check`). ``None`` without images."""
        if self.images is None:
            return None
        self.check_filter(layer, n)
        images = self.images

        def run(emit: Emit) -> bool:
            if self.folder.record(layer, n) is None:
                raise KernelvizError(f"filter {n} of {layer} has no picture yet: nothing to check")
            check = self._checks.get(layer)
            if check is None or n not in check.units:
                emit(event("progress", task="trust", layer=layer, filters=[n], stage="scan", step=0, steps=1))
                listen = self._listener(emit, task="trust", layer=layer, filters=[n])
                scan = write_examples(self.model, self.root, layer, images, 9, progress=listen)
                if scan is None:
                    raise KernelvizError(f"the scan of {layer} is not whole: nothing to check against")
                if check is None:
                    made = [m for m in self.done(layer) if m != n]
                    check = collection_check(self.model, layer, [n, *made[:23]], scan)
                    self._checks[layer] = check
                else:
                    check.add(n, unit_examples(self.model, scan, layer, [n])[0][n])
            trust = check.check(n, load_image(self.folder.picture(layer, n)))
            write_trust(self.root, layer, n, trust)
            emit(event("trust", layer=layer, filter=n, flagged=trust.flagged))
            return trust.flagged

        return self.worker.submit(("trust", layer, n), run)

    def request_ablation(self, layer: str, n: int, kind: str) -> Future | None:
        """Switch filter ``n`` off (``kind`` ``"zero"``) or amplify it 4 times (``"x4"``) over ``--images`` and keep
        what the network gained and lost (:func:`~kernelviz.ablate`) beside the layer; ``None`` without images."""
        if self.images is None:
            return None
        self.check_filter(layer, n)
        if kind not in ABLATIONS:
            raise NotFoundError(f"unknown ablation {kind!r}: choose from {', '.join(ABLATIONS)}")
        images = self.images

        def run(emit: Emit) -> str:
            mode, factor = ABLATIONS[kind]
            listen = self._listener(emit, task="ablate", layer=layer, filters=[n])
            found = ablate(self.model, layer, [n], images, mode=mode, factor=factor, progress=listen)
            path = self.folder.ablation_file(layer, n, kind)
            path.parent.mkdir(parents=True, exist_ok=True)
            save_json(found.to_json(), path)
            emit(event("ablate", layer=layer, filter=n, ablation=kind))
            return str(path)

        return self.worker.submit(("ablate", layer, n, kind), run)

    def request_importance(self, layer: str) -> Future | None:
        """Estimate what each unit of ``layer`` matters for over ``--images`` (one pass, first-order:
        :func:`~kernelviz.sets.examples.write_importance`) into its ``units.json``, scanning the layer first if it
        was not; ``None`` without images."""
        if self.images is None:
            return None
        self.row(layer)
        images = self.images

        def run(emit: Emit) -> None:
            listen = self._listener(emit, task="importance", layer=layer)
            if self.folder.units(layer) is None:
                write_examples(self.model, self.root, layer, images, 9, progress=listen)
            write_importance(self.model, self.root, [layer], images, progress=listen)
            emit(event("importance", layer=layer))

        return self.worker.submit(("importance", layer), run)

    def ablations(self, layer: str, n: int) -> dict[str, dict[str, Any]]:
        """Filter ``n``'s ablations made so far, by kind (``zero``, ``x4``)."""
        found = {}
        for kind in ABLATIONS:
            path = self.folder.ablation_file(layer, n, kind)
            try:
                found[kind] = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
        return found

    def kernel_png(self, layer: str, n: int) -> Future:
        """Filter ``n``'s kernel on its 16 strongest input channels, as PNG bytes."""
        if not self.is_conv(self.check_filter(layer, n).name):
            raise NotFoundError(f"layer {layer!r} is not a convolution: it has no kernel")
        return self.worker.submit(
            ("kernel", layer, n), lambda emit: figure_png(kernel_figure(self.model, layer, n, self.wiring))
        )
