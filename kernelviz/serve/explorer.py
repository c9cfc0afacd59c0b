"""What the live explorer knows and computes, for one model and one atlas folder; no HTTP here.

The explorer's cache *is* an atlas (:mod:`kernelviz.sets.atlas`): a filter's picture is made by the same
:func:`~kernelviz.sets.atlas.write_filters` in the same batches (the atlas's batch ``i`` holds filters
``i*B .. i*B+B-1`` of a layer), written with the same atomic writes, under the same ``settings.json``.
So ``kernelviz atlas`` output serves at once, a restart loses nothing, and ``kernelviz atlas`` can finish
what the explorer started. Variants (another seed, parameterization, more steps, a diversity batch) go
to ``<layer>/variants/``, which the atlas ignores; uploaded photos to ``uploads/``.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.capture import activations
from ..core.layers import LayerInfo, default_units
from ..core.models import model_device, model_meta, model_slug
from ..core.names import get_module, resolve_layer
from ..errors import KernelvizError, NotFoundError, out_of_range
from ..explain.heatmaps import attribute, check_methods, predict
from ..explain.kernels import kernel_weights
from ..files.images import IMAGE_SUFFIXES, image_files, load_image
from ..files.write import save_figure, save_json, save_png
from ..jobs.inspect import LayerTable, layer_table
from ..optvis.batch import auto_batch_size
from ..optvis.render import StopOptimization
from ..optvis.settings import ACCENTUATE, DEFAULTS, DREAM, PREVIEW_BATCH, OptimSettings, preview_settings
from ..sets.atlas import write_examples, write_filters, write_previews
from ..sets.folder import AtlasFolder, atlas_settings
from .urls import PAGES
from .urls import path as url_path
from .worker import Emit, Preempted, Worker

__all__ = ["MAX_UPLOAD", "VARIANTS", "Explorer"]

#: Layer types whose outputs are non-negative (a concept's factorization needs them).
_ACTIVATION = re.compile(r"ReLU|Softplus|Sigmoid|Hardsigmoid", re.IGNORECASE)

#: Largest upload accepted, in bytes.
MAX_UPLOAD = 20 * 1024 * 1024
#: The variants a filter page offers: name -> (what it changes, in words).
VARIANTS = {
    "seed": "another random start (seed + 1)",
    "pixel": "the article's plain pixel image",
    "maco": "MACO (phase only, the spectrum of natural images)",
    "fine": "every pixel free (detail 1, decay 1: finer texture)",
    "steps": "twice the steps",
    "diversity": "a batch of 4 pushed apart (Gram-matrix diversity)",
    "negative": "the most inhibiting picture (minimized: what it responds to least)",
}


@dataclass
class Explorer:
    """One model, its atlas folder and its worker.

    Args:
        model: the network (with metadata: :func:`~kernelviz.load_model`).
        root: the model's atlas folder (``DIR/<model>``), created if needed.
        images: a folder of natural images (dataset examples, the image page's picker).
        settings: optimization settings; default: those of the atlas already in ``root``, else the defaults.
    """

    model: nn.Module
    root: Path
    images: Path | None = None
    settings: OptimSettings | None = None
    worker: Worker = field(default_factory=Worker)

    def __post_init__(self) -> None:
        meta = model_meta(self.model)
        self.meta = meta
        self.root = Path(self.root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.folder = AtlasFolder(self.root)
        if self.settings is None and self.folder.settings_file.exists():
            try:
                data = self.folder.settings() or {}
                self.settings = OptimSettings.from_json({k: v for k, v in data.items() if k in OptimSettings.names()})
            except (ValueError, TypeError, AttributeError, KernelvizError) as err:
                raise KernelvizError(
                    f"{self.folder.settings_file} cannot be read ({err}): use another --atlas folder"
                ) from err
        settings = (self.settings or DEFAULTS).for_model(meta.input_size)
        # as `kernelviz layers MODEL --all` shows it: at the input size, block outputs included
        self._table = layer_table(self.model, blocks=True)
        self._rows = {r.name: r for r in self._table.rows}
        first = next((r.name for r in self._table.rows if r.type.startswith("Conv")), None)
        if first is None:
            raise KernelvizError(f"{meta.name} has no convolution: nothing to explore")
        if not settings.batch_size:
            widest = max(r.channels for r in self._table.rows if r.type.startswith("Conv"))
            size = int(settings.size or 0)
            settings = settings.with_(
                batch_size=auto_batch_size(self.model, first, size, model_device(self.model), widest)
            )
        self.optim: OptimSettings = settings
        #: the layer pages' quick previews' settings (``None``: the server's own settings are as quick)
        self.preview: OptimSettings | None = preview_settings(settings)
        self.recorded = atlas_settings(settings, meta)
        self.folder.check_settings(self.recorded)  # refuses an atlas made with other settings
        self._classes: list[str] | None = None
        if self.images is not None and not Path(self.images).is_dir():
            raise KernelvizError(f"--images {self.images}: not a folder")

    # --- the model -------------------------------------------------------------------------------
    @property
    def table(self) -> LayerTable:
        """The layer table (computed once, at start)."""
        return self._table

    def conv_layers(self) -> list[LayerInfo]:
        """The convolutions with a spatial map (the layers with kernels)."""
        return [r for r in self._table.rows if len(r.shape) == 3 and r.type.startswith("Conv")]

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
        return self.row(layer).type.startswith("Conv")

    def row(self, layer: str) -> LayerInfo:
        """The table row of a layer the explorer shows; an unknown one is a :class:`KernelvizError`."""
        resolve_layer(self.model, layer)  # the usual message, with close names
        row = self._rows.get(layer)
        if row is None or row not in self.unit_layers():
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

    # --- filters ---------------------------------------------------------------------------------
    def record(self, layer: str, n: int) -> dict[str, Any] | None:
        """Filter ``n``'s record when its files are whole, else ``None``."""
        return self.folder.record(layer, n)

    def done(self, layer: str) -> list[int]:
        """The filters of ``layer`` whose picture is on disk (cheap: for pages)."""
        return self.folder.written_filters(layer)

    def file_url(self, path: Path) -> str:
        """The URL path of a file under the atlas root (``/files/...``, each segment percent-encoded)."""
        return url_path(PAGES["files"], path=tuple(self.folder.relative(path).split("/")))

    def request_page(self, layer: str, filters: list[int]) -> tuple[list[Future], list[Future]]:
        """A layer page's missing pictures: quick previews first, then the atlas batches (:meth:`request_filters`),
        all of one request; returns ``(preview futures, batch futures)``.

        Previews (:func:`~kernelviz.optvis.settings.preview_settings`: few steps, small, ``PREVIEW_BATCH`` filters
        per task) are made for the filters with neither picture nor preview; each task reports ``progress`` and
        one ``preview`` event per filter. None are made when the server's own settings cost no more.
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
                previews.append(
                    self.worker.submit(("preview", layer, *chunk), self._preview_task(layer, chunk), request)
                )
        return previews, self.request_filters(layer, filters, request)

    def _preview_task(self, layer: str, chunk: list[int]) -> Callable[[Emit], Any]:
        settings = self.preview
        assert settings is not None

        def run(emit: Emit) -> int:
            chunk_left = [n for n in chunk if not self.folder.written(layer, n)]
            if not chunk_left:
                return 0

            def progress(step: int, value: float) -> None:
                emit({"type": "progress", "layer": layer, "filters": chunk_left, "preview": True, "step": step,
                      "steps": settings.steps, "value": value})  # fmt: skip
                if self.worker.outranked():  # a newer page waits: give way to it, as a batch does
                    raise StopOptimization

            written, stopped = write_previews(self.model, self.root, layer, chunk_left, settings, progress=progress)
            if stopped:
                raise Preempted
            for n, path in written.items():
                emit({"type": "preview", "layer": layer, "filter": n, "src": self.file_url(path)})
            return len(written)

        return run

    def request_filters(self, layer: str, filters: list[int], request: int | None = None) -> list[Future]:
        """Queue the atlas batches holding ``filters`` that are not on disk; returns their futures.

        Each batch task reports ``progress`` (step, objective) and one ``done`` event per filter written.
        ``request``: the request they belong to (:meth:`Worker.new_request`); default: a new one.
        """
        row = self.row(layer)
        for n in filters:
            self.check_filter(layer, n)
        b = int(self.optim.batch_size or 1)
        futures = []
        if request is None:
            request = self.worker.new_request()  # this page's batches go before those of pages asked earlier
        for start in sorted({n // b * b for n in filters}):
            group = list(range(start, min(start + b, row.channels)))
            missing = [n for n in group if not self.folder.kept(layer, n)]
            if not missing:
                continue
            futures.append(self.worker.submit(("batch", layer, start), self._batch_task(layer, group), request))
        return futures

    def _batch_task(self, layer: str, group: list[int]) -> Callable[[Emit], Any]:
        def run(emit: Emit) -> int:
            kept = {(layer, n) for n in group if self.folder.kept(layer, n)}
            if len(kept) == len(group):
                return 0
            total = int(self.optim.steps)

            def progress(step: int, value: float) -> None:
                emit(
                    {"type": "progress", "layer": layer, "filters": group, "step": step, "steps": total, "value": value}
                )
                if self.worker.outranked():  # a newer page waits: give way to it, and come back after
                    raise StopOptimization

            emit({"type": "progress", "layer": layer, "filters": group, "step": 0, "steps": total, "value": None})
            written, stopped = write_filters(
                self.model, self.root, layer, group, self.optim, skip=kept, progress=progress
            )
            if stopped:  # nothing was written; the batch runs again once the newer requests are served
                emit({"type": "paused", "layer": layer, "filters": group})
                raise Preempted
            for n in group:  # the records just written, not read back; those kept from before are read
                record = written[n] if n in written else self.folder.written_record(layer, n)
                emit(
                    {
                        "type": "done",
                        "layer": layer,
                        "filter": n,
                        "src": self.file_url(self.folder.picture(layer, n)),
                        "value": record["final_value"],
                        "dead": record["dead_unit"],
                    }
                )
            return len(written)

        return run

    def kernel_png(self, layer: str, n: int, k: int = 16) -> bytes:
        """Filter ``n``'s kernel on its ``k`` strongest input channels (largest weight norm first), one tile each,
        numbered as the previous layer numbers its channels."""
        from ..plot.kernels import plot_kernels

        self._check_conv(layer, n)
        w = kernel_weights(self.model, layer)  # (C_out, C_in / groups, kh, kw)
        if w.shape[1] in (1, 3):  # the image's RGB as one color tile; a depthwise filter's one input
            return _png(plot_kernels(w, filters=[n]))  # its tile is labelled with its index
        strongest = self.strongest_inputs(layer, n, k)
        first = self._first_input(layer, n)
        fig = plot_kernels(w, filters=[n], inputs=[c - first for c in strongest], input_labels=strongest)
        fig.suptitle(f"filter {n}: its {len(strongest)} strongest of {w.shape[1]} inputs (by weight norm)", fontsize=9)
        return _png(fig)

    def strongest_inputs(self, layer: str, n: int, k: int = 16) -> list[int]:
        """The ``k`` input channels filter ``n`` of convolution ``layer`` weighs most (largest norm of its kernel on
        each, ties by index), numbered as the previous layer numbers them."""
        self._check_conv(layer, n)
        norms = kernel_weights(self.model, layer)[n].flatten(1).norm(dim=1)  # (C_in / groups,)
        first = self._first_input(layer, n)
        return [first + int(c) for c in norms.argsort(descending=True, stable=True)[:k]]

    def _check_conv(self, layer: str, n: int) -> nn.Module:
        self.check_filter(layer, n)
        if not self.is_conv(layer):
            raise NotFoundError(f"layer {layer!r} is not a convolution: it has no kernel")
        return get_module(self.model, resolve_layer(self.model, layer))

    def _first_input(self, layer: str, n: int) -> int:
        """The first input channel filter ``n`` of convolution ``layer`` reads (not 0 in a grouped convolution)."""
        module = get_module(self.model, resolve_layer(self.model, layer))
        groups = int(getattr(module, "groups", 1))
        w = kernel_weights(self.model, layer)
        return (n // (w.shape[0] // groups)) * w.shape[1]

    def feeders(self, layer: str, n: int, k: int = 6) -> list[tuple[str | None, int, float]]:
        """The input channels that feed filter ``n`` most, by the norm of its kernel on each:
        ``[(previous layer or None, channel, norm)]``. A grouped (depthwise) convolution's filter reads only
        its group's channels, numbered here as the previous layer numbers them. The previous layer is the last
        convolution before this one with as many channels as this one takes in (``None`` for the image)."""
        module = self._check_conv(layer, n)
        groups = int(getattr(module, "groups", 1))
        w = kernel_weights(self.model, layer)  # (C_out, C_in / groups, kh, kw)
        per_group_in = w.shape[1]
        first_input = self._first_input(layer, n)
        norms = w[n].flatten(1).norm(dim=1)
        convs = self.conv_layers()
        index = [r.name for r in convs].index(layer)
        before = [r for r in convs[:index] if r.channels == per_group_in * groups]
        previous = before[-1].name if before else None
        top = norms.topk(min(k, len(norms)))
        return [(previous, first_input + int(c), float(v)) for v, c in zip(top.values, top.indices, strict=True)]

    def feeds_into(self, layer: str, n: int, k: int = 6) -> list[tuple[str, int, float]]:
        """The filters of the next convolution that read channel ``n`` of ``layer`` most, by the norm of their
        kernel on it: ``[(next convolution, filter, norm)]``, strongest first. The next convolution is the first
        after ``layer`` that takes in as many channels as ``layer`` puts out; none (``[]``) at the network's end."""
        row = self.check_filter(layer, n)
        rows = self._table.rows
        convs = self.conv_layers()
        for r in rows[rows.index(row) + 1 :]:
            if r not in convs:
                continue
            module = get_module(self.model, resolve_layer(self.model, r.name))
            groups = int(getattr(module, "groups", 1))
            w = kernel_weights(self.model, r.name)  # (C_out, C_in / groups, kh, kw)
            if w.shape[1] * groups != row.channels:
                continue
            per_group_out, per_group_in = w.shape[0] // groups, w.shape[1]
            g = n // per_group_in  # only the filters of channel n's group read it
            norms = w[g * per_group_out : (g + 1) * per_group_out, n - g * per_group_in].flatten(1).norm(dim=1)
            top = norms.topk(min(k, len(norms)))
            start = g * per_group_out
            return [(r.name, start + int(c), float(v)) for v, c in zip(top.values, top.indices, strict=True)]
        return []

    def computed_from(self, layer: str) -> str | None:
        """For an activation or a block output: the last convolution before it with as many channels, whose filter
        ``n`` its channel ``n`` is computed from (through a batch norm, an activation, a block's residual sum);
        ``None`` for a convolution, for an activation of a linear layer's output (a transformer's MLP), or when
        there is none."""
        row = self.row(layer)
        if row.type.startswith("Conv"):
            return None
        rows = self._table.rows
        convs = self.conv_layers()
        earlier = rows[: rows.index(row)]
        weighted = [r for r in earlier if r.trainable]
        if row.kind == "activation" and weighted and not weighted[-1].type.startswith("Conv"):
            return None  # it rectifies a linear layer's output (a transformer's MLP): that mixes every channel
        before = [r for r in earlier if r in convs and r.channels == row.channels]
        return before[-1].name if before else None

    def examples(self, layer: str) -> dict[str, Any] | None:
        """The layer's ``examples.json`` (dataset examples of every filter), when made."""
        return self.folder.examples(layer)

    def request_examples(self, layer: str) -> Future | None:
        """Scan ``--images`` once for every filter of ``layer`` (atlas layout); ``None`` without images."""
        if self.images is None:
            return None
        row = self.row(layer)
        images = self.images

        def run(emit: Emit) -> None:
            emit({"type": "progress", "layer": layer, "examples": True, "step": 0, "steps": 1, "value": None})
            write_examples(
                self.model, self.root, layer, list(range(row.channels)), images, 9, int(self.optim.size or 0)
            )
            emit({"type": "examples", "layer": layer})

        return self.worker.submit(("examples", layer), run)

    def variant_path(self, layer: str, n: int, kind: str) -> Path:
        if kind not in VARIANTS:
            raise NotFoundError(f"unknown variant {kind!r}: choose from {', '.join(VARIANTS)}")
        return self.folder.variant(layer, n, kind)

    def variants(self, layer: str, n: int) -> dict[str, Path]:
        """The variants of filter ``n`` already made."""
        return {
            k: p for k in VARIANTS if (p := self.variant_path(layer, n, k)).exists() and p.with_suffix(".json").exists()
        }

    def request_variant(self, layer: str, n: int, kind: str) -> Future:
        """Make one variant of filter ``n`` (its PNG and record under ``<layer>/variants/``)."""
        from ..optvis.objectives import channel, diversity
        from ..optvis.render import visualize

        self.check_filter(layer, n)
        path = self.variant_path(layer, n, kind)
        base = self.optim.with_(batch_size=None)
        changed = {
            "seed": base.with_(seed=base.seed + 1),
            "pixel": base.with_(param="pixel"),
            "maco": base.with_(param="maco"),
            "fine": base.with_(detail=1.0, decay=1.0),
            "steps": base.with_(steps=2 * base.steps),
            "diversity": base,
            "negative": base,
        }[kind]

        def run(emit: Emit) -> str:
            def progress(step: int, value: float) -> None:
                emit(
                    {
                        "type": "progress",
                        "layer": layer,
                        "filters": [n],
                        "variant": kind,
                        "step": step,
                        "steps": changed.steps,
                        "value": value,
                    }
                )

            if kind == "diversity":
                unit = channel(layer, n)
                main = visualize(self.model, unit, **changed.visualize_kwargs())
                weight = 0.5 * abs(float(main.final[0])) or 1.0
                result = visualize(
                    self.model,
                    unit + weight * diversity(layer),
                    batch=4,
                    progress=progress,
                    **changed.visualize_kwargs(),
                )
                from ..plot.grid import plot_grid

                labels = [f"{float(v):.3g}" for v in result.final]
                save_figure(plot_grid(list(result.images), labels, title=f"{layer}:{n} diversity x{weight:.3g}"), path)
                save_json(
                    result.record(
                        0,
                        self.meta,
                        layer=layer,
                        filter=n,
                        variant=kind,
                        diversity_weight=weight,
                        batch_final_values=[float(v) for v in result.final],
                    ),
                    path.with_suffix(".json"),
                )
            else:
                unit = -channel(layer, n) if kind == "negative" else channel(layer, n)
                result = visualize(self.model, unit, progress=progress, **changed.visualize_kwargs())
                if kind == "negative":  # the record gives the activation reached, as --negative does
                    result = result.minimized()
                save_png(result.images[0], path)
                save_json(result.record(0, self.meta, layer=layer, filter=n, variant=kind), path.with_suffix(".json"))
            emit({"type": "variant", "layer": layer, "filter": n, "variant": kind, "src": self.file_url(path)})
            return str(path)

        return self.worker.submit(("variant", layer, n, kind), run)

    # --- concepts --------------------------------------------------------------------------------
    def concept_layers(self) -> list[LayerInfo]:
        """The layers whose concepts can be found: activations (non-negative outputs) with a spatial map."""
        return [r for r in self._table.rows if len(r.shape) == 3 and _ACTIVATION.search(r.type)]

    def activation_after(self, layer: str) -> str | None:
        """The activation that follows ``layer`` with the same output shape (the place of its concepts), if any:
        ``relu3_2`` after VGG's ``conv3_2``; ``layer`` itself when it is an activation."""
        rows = self._table.rows
        i = next((j for j, r in enumerate(rows) if r.name == layer), None)
        if i is None:
            return None
        for r in rows[i : i + 4]:  # a batch norm may come between
            if r.shape != rows[i].shape:
                return None
            if r in self.concept_layers():
                return r.name
        return None

    def concept_row(self, layer: str) -> LayerInfo:
        resolve_layer(self.model, layer)
        row = self._rows.get(layer)
        if row is None or row not in self.concept_layers():
            raise KernelvizError(
                f"layer {layer!r} is not an activation with a spatial output: concepts are found in the output of a "
                "ReLU-like layer"
            )
        return row

    def image_classes(self) -> list[str]:
        """The classes of ``--images`` (its subfolders, in the ``ImageFolder`` layout), or none; read once (the
        folder is walked at the first call, not for every layer and class a page lists)."""
        if self.images is None:
            return []
        if self._classes is None:
            from ..explain.scan import collection

            self._classes = collection(self.images).classes or []
        return self._classes

    def concepts_dir(self, layer: str, class_name: str | None = None) -> Path:
        """Where a layer's concepts (over all of ``--images``, or one class's) are kept: ``<layer>/concepts/`` or
        ``<layer>/concepts-by-class/<index>/`` (the class's index among the subfolders: no name becomes a path)."""
        if class_name is None:
            return self.folder.layer(layer) / "concepts"
        classes = self.image_classes()
        if class_name not in classes:
            raise NotFoundError(f"no class {class_name!r} in --images {self.images}")
        return self.folder.layer(layer) / "concepts-by-class" / str(classes.index(class_name))

    def concepts(self, layer: str, class_name: str | None = None) -> dict[str, Any] | None:
        """The layer's ``concepts.json`` when written (whole: it is written last, atomically)."""
        import json

        path = self.concepts_dir(layer, class_name) / "concepts.json"
        try:
            return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
        except (OSError, ValueError):
            return None

    def request_concepts(self, layer: str, k: int, class_name: str | None = None) -> Future:
        """Find ``k`` concepts of ``layer`` over ``--images`` (or one class of it) and write their folder."""
        from ..jobs.concepts import export_concepts

        self.concept_row(layer)
        if self.images is None:
            raise KernelvizError("no --images folder was given to the server: concepts are found over images")
        if not 1 <= k <= 64:
            raise KernelvizError(f"k must be 1 to 64, got {k}")
        folder, images = self.concepts_dir(layer, class_name), self.images

        def run(emit: Emit) -> str:
            def stage(name: str, done: int, total: int) -> None:
                emit(
                    {"type": "progress", "layer": layer, "concepts": name, "step": done, "steps": total, "value": None}
                )

            def stepped(step: int, value: float) -> None:
                emit({"type": "progress", "layer": layer, "concepts": "pictures", "step": step,
                      "steps": self.optim.steps, "value": value})  # fmt: skip

            export_concepts(self.model, layer, images, k, folder, self.optim.with_(batch_size=None),
                            class_name=class_name, stage=stage, progress=stepped)  # fmt: skip
            emit({"type": "concepts", "layer": layer, "class": class_name})
            return str(folder)

        return self.worker.submit(("concepts", layer, class_name, k), run)

    def found_concepts(self) -> list[tuple[str, str | None]]:
        """``(layer, class or None)`` of every concepts folder written, in layer order."""
        found: list[tuple[str, str | None]] = []
        for r in self.concept_layers():
            if self.concepts(r.name) is not None:
                found.append((r.name, None))
            found.extend((r.name, c) for c in self.image_classes() if self.concepts(r.name, c) is not None)
        return found

    def concept_maps_png(self, path: Path, layer: str, class_name: str | None = None) -> Future:
        """Where each of the layer's concepts is in the image (one overlay per concept, one scale), as PNG bytes."""
        data = self.concepts(layer, class_name)
        if data is None:
            raise NotFoundError(f"no concepts of {layer!r} found yet: open its concepts page to find them")
        directions = torch.tensor([c["direction"] for c in data["concepts"]], dtype=torch.float32)

        def run(emit: Emit) -> bytes:
            from ..explain.concepts import concept_maps
            from ..plot.heatmaps import plot_heatmap

            x = self._image(path)[None]
            maps = concept_maps(self.model, layer, directions, x)[0]  # (K, S, S)
            strongest = maps.flatten(1).amax(1)
            titles = [f"concept {j}: max {float(v):.3g}" for j, v in enumerate(strongest)]
            of = f" ({class_name})" if class_name else ""
            fig = plot_heatmap(x, [m[None] for m in maps], titles=titles, scale="shared",
                               groups=["concept code"] * len(maps),
                               title=f"{self.meta.name} {layer}{of}: where each concept is")  # fmt: skip
            return _png(fig)

        return self.worker.submit(("concept-maps", str(path), layer, class_name, os.path.getmtime(path)), run)

    # --- images ----------------------------------------------------------------------------------
    def picks(self) -> list[str]:
        """The images of ``--images``, as paths relative to it."""
        if self.images is None:
            return []
        return [p.relative_to(self.images).as_posix() for p in image_files(self.images)]

    def photos(self, uploads: int = 12) -> list[tuple[dict[str, str], str]]:
        """The photos a page can offer: the ``uploads`` newest uploads, then the images of ``--images``; each as
        ``(its query: {"upload": id} or {"pick": path}, its label)``."""
        made = sorted(self.folder.uploads.glob("*.png"), key=lambda p: p.stat().st_mtime, reverse=True)
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
        out = self.folder.uploads / f"{digest}.png"
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

    def image_path(self, upload: str | None = None, pick: str | None = None) -> Path:
        """The file of an uploaded image id or of a picked ``--images`` file, checked to lie inside its folder."""
        if upload is not None:
            if not (len(upload) == 16 and all(c in "0123456789abcdef" for c in upload)):
                raise NotFoundError("unknown upload id")
            path = self.folder.uploads / f"{upload}.png"
        elif pick is not None and self.images is not None:
            base = Path(self.images).resolve()
            if "\0" in pick:
                raise NotFoundError("that image is not in the --images folder")
            path = (base / pick).resolve()
            if not path.is_relative_to(base) or path.suffix.lower() not in IMAGE_SUFFIXES:
                raise KernelvizError("that image is not in the --images folder")
        else:
            raise KernelvizError("no image: upload one, or pick one from --images")
        if not path.is_file():
            raise NotFoundError("image not found")
        return path

    def _image(self, path: Path) -> torch.Tensor:
        return load_image(path, self.meta.input_size)  # (3, S, S)

    def analyse(self, path: Path) -> Future:
        """Top-5 predictions and, per explored layer, the 6 filters with the largest mean activation."""

        def run(emit: Emit) -> dict[str, Any]:
            x = self._image(path)[None]
            preds = predict(self.model, x, 5)[0]
            layers = [r.name for r in self.depth_units()]
            acts = activations(self.model, self.meta.normalize(x.to(model_device(self.model))), layers)
            firing = {}
            for name in layers:
                means = acts[name][0].flatten(1).mean(1).float().cpu()
                top = means.topk(min(6, len(means)))
                firing[name] = [(int(i), float(v)) for v, i in zip(top.values, top.indices, strict=True)]
            return {"predictions": preds, "firing": firing}

        return self.worker.submit(("analyse", str(path), os.path.getmtime(path)), run)

    def heatmap_png(self, path: Path, method: str, target: str | None, filter: str | None) -> Future:
        """The overlay of one heatmap method on the image, as PNG bytes."""
        check_methods(method)

        def run(emit: Emit) -> bytes:
            from ..plot.heatmaps import plot_heatmap

            x = self._image(path)[None]
            res = attribute(self.model, x, method, target=target if not filter else None, filter=filter or None)
            title = f"{res.label}: {res.what(0)}"
            return _png(plot_heatmap(x, [res.maps], titles=[title]))

        return self.worker.submit(("heatmap", str(path), method, target, filter), run)

    def maps_png(self, path: Path, layer: str) -> Future:
        """The feature maps of ``layer`` on the image (its 16 strongest channels), as PNG bytes."""
        self.row(layer)

        def run(emit: Emit) -> bytes:
            from ..explain.maps import feature_maps
            from ..plot.maps import plot_feature_maps

            x = self._image(path)[None]
            acts = feature_maps(self.model, x, layer)[0]
            return _png(plot_feature_maps(acts, image=x[0], k=16, title=f"{self.meta.name} {layer}: top 16 channels"))

        return self.worker.submit(("maps", str(path), layer), run)

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

    def photo_png(self, path: Path, kind: str, layer: str | None, n: int | None = None) -> Future:
        """A picture made from the image (:func:`~kernelviz.jobs.photo.photo_result`) beside the image, labelled with
        how it relates to it, as PNG bytes: at the server's settings and size, but for a DeepDream or an accentuation
        (from the photo) the steps and learning rate of :data:`~kernelviz.optvis.settings.DREAM` or
        :data:`~kernelviz.optvis.settings.ACCENTUATE`.

        Args:
            kind: ``caricature`` or ``dream`` of ``layer`` (``None``: one per :meth:`depth_layers`, early to late),
                or ``accentuate`` (filter ``n`` of ``layer`` made to respond more, kept close to the image).
        """
        from ..jobs.photo import KINDS, photo_result

        if kind not in KINDS:
            raise KernelvizError(f"unknown kind of photo picture {kind!r}: choose from {', '.join(KINDS)}")
        if kind == "accentuate":
            if layer is None or n is None:
                raise KernelvizError("an accentuation needs a layer and a filter")
            self.check_filter(layer, n)
        elif layer is not None:
            self.row(layer)
        layers = [layer] if layer is not None else self.depth_layers()

        def run(emit: Emit) -> bytes:
            from ..plot.grid import plot_grid

            settings = self.optim.with_(batch_size=None)
            seeded = {"dream": DREAM, "accentuate": ACCENTUATE}.get(kind)
            if seeded is not None:  # from the photo: few steps, a small learning rate, as the CLI's defaults
                settings = settings.with_(steps=seeded.steps, lr=seeded.lr)
            x = load_image(path, int(settings.size or self.meta.input_size))  # (3, S, S)
            tiles, labels = [x], ["the image"]
            for i, name in enumerate(layers):

                def progress(step: int, value: float, name: str = name, i: int = i) -> None:
                    emit({"type": "progress", "photo": kind, "layer": name, "part": i + 1, "parts": len(layers),
                          "step": step, "steps": settings.steps, "value": value})  # fmt: skip

                filters = [n] if kind == "accentuate" and n is not None else []
                result, (fields,) = photo_result(
                    self.model, kind, name, x, settings, filters=filters, progress=progress
                )
                tiles.append(result.images[0])
                if kind == "accentuate":
                    ratio = fields["activation"] / fields["photo_activation"] if fields["photo_activation"] else 0.0
                    labels[0] = f"the image\n{name}:{n} mean {fields['photo_activation']:.3g}"
                    labels.append(f"accentuated: mean {fields['activation']:.3g} (x{ratio:.2f})\n"
                                  f"RMS {fields['rms_from_photo']:.3f} from the image")  # fmt: skip
                else:
                    labels.append(f"{name}\ncosine {fields['cosine_to_photo']:.2f} to the image's")
            what = {"caricature": "caricature", "dream": "DeepDream", "accentuate": "feature accentuation"}[kind]
            where = "at every depth" if layer is None else f"of {layer}" + (f" filter {n}" if n is not None else "")
            title = f"{self.meta.name}: {what} {where}"
            return _png(plot_grid(tiles, labels, title=title, cols=len(tiles), tile_inches=2.2))

        key = ("photo", str(path), kind, layer, n, os.path.getmtime(path))
        return self.worker.submit(key, run)

    @property
    def slug(self) -> str:
        return model_slug(self.meta.name)


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()
