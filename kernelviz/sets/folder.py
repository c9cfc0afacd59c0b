"""The atlas folder of one model: the one place its layout is spelled, read and checked.

The atlas (:mod:`kernelviz.sets.atlas`), its static site (:mod:`kernelviz.sets.site`) and the live explorer
(:mod:`kernelviz.serve`) all go through :class:`AtlasFolder`::

    DIR/<model>/
      settings.json              the settings the atlas is made with (a rerun must match them)
      manifest.json, index.html  what is done; the site's first page
      <layer>/NNNN.png, .json    filter NNNN's picture and its record (the record last: it marks it done)
      <layer>/sheet.png, index.html  (sheet_negative.png: the negative pictures' sheet)
      <layer>/examples.json      dataset examples per filter (each showing a square of an image of
                                 examples-images/, written once per atlas)
      <layer>/previews/NNNN.png  the explorer's quick previews (few steps, small: PREVIEW settings)
      <layer>/variants/          a filter's variants (NNNN_KIND.png, .json): the explorer's, and the negative
                                 pictures of an atlas made with negative=True (NNNN_negative)
      <layer>/concepts/          the layer's concepts over the explorer's images (a concepts folder:
                                 kernelviz.sets.concepts); concepts-by-class/<class index>/ for one class's
      uploads/                   photos uploaded to the explorer

A file that does not parse, or whose values are not of the types the readers need, counts as absent (and a
damaged filter is removed, so that it is redone).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.models import ModelMeta
from ..errors import KernelvizError, NotFoundError
from ..files.write import save_json, save_png, write_each
from ..optvis.settings import OptimSettings
from .concepts import concepts_file, read_concepts

__all__ = ["AtlasFolder", "atlas_settings", "picture_name", "record_name"]

#: What a filter's record must hold for the site and the explorer to read it (else the filter is redone).
_RECORD_TYPES: dict[str, type | tuple[type, ...]] = {"final_value": (int, float), "dead_unit": bool, "settings": dict}
#: Settings added after atlases were first written, with the value those atlases were made with.
_IMPLICIT = {"decay": 1.0, "detail": 1.0}


def picture_name(n: int) -> str:
    """The file name of filter ``n``'s picture inside its layer's folder (``"0017.png"``)."""
    return f"{n:04d}.png"


def record_name(n: int) -> str:
    """The file name of filter ``n``'s record inside its layer's folder (``"0017.json"``)."""
    return f"{n:04d}.json"


def atlas_settings(settings: OptimSettings, meta: ModelMeta) -> dict[str, Any]:
    """The content of an atlas's ``settings.json``: the optimization settings, the model and its weights."""
    return {**settings.to_json(), "model": meta.name, "weights": meta.weights}


def _read(path: Path) -> Any:
    """The JSON in ``path``, or ``None`` when it is missing or does not parse."""
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None


def _typed(data: Any, types: dict[str, type | tuple[type, ...]]) -> bool:
    """Whether ``data`` is an object whose keys hold values of ``types`` (a bool is not a number)."""
    return isinstance(data, dict) and all(
        key in data and isinstance(data[key], kind) and not (kind is not bool and isinstance(data[key], bool))
        for key, kind in types.items()
    )


def _numbers(values: Any) -> bool:
    """Whether ``values`` is a list of numbers (not booleans)."""
    return isinstance(values, list) and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def _same_setting(key: str, in_record: Any, asked: Any) -> bool:
    """Whether a picture's recorded setting is the atlas setting ``asked`` (a record keeps the size as [H, W] and
    the precision as resolved)."""
    if key == "size" and isinstance(in_record, list) and len(set(in_record)) == 1:
        in_record = in_record[0]
    if key == "precision" and asked == "auto":
        return True
    return bool(in_record == asked)


@dataclass(frozen=True)
class AtlasFolder:
    """The files of one model's atlas under ``root`` (``DIR/<model>``)."""

    root: Path

    # --- where each file lives -------------------------------------------------------------------
    @property
    def settings_file(self) -> Path:
        return self.root / "settings.json"

    @property
    def manifest_file(self) -> Path:
        return self.root / "manifest.json"

    @property
    def index_file(self) -> Path:
        return self.root / "index.html"

    @property
    def uploads(self) -> Path:
        return self.root / "uploads"

    def layer(self, layer: str) -> Path:
        """The folder of ``layer``'s files (a ``/`` in a module name becomes ``_``).

        Raises:
            NotFoundError: a name that is no folder inside the atlas (``..``, ``.``, empty: no module has it).
        """
        name = layer.replace("/", "_").replace("\\", "_")
        if name in ("", ".", "..") or "\0" in name:
            raise NotFoundError(f"unknown layer {layer!r}")
        return self.root / name

    def picture(self, layer: str, n: int, kind: str | None = None) -> Path:
        """Filter ``n``'s picture; with ``kind``, that of its variant (``"negative"``: :meth:`variant`)."""
        return self.variant(layer, n, kind) if kind else self.layer(layer) / picture_name(n)

    def record_file(self, layer: str, n: int, kind: str | None = None) -> Path:
        return self.picture(layer, n, kind).with_suffix(".json")

    def sheet(self, layer: str, kind: str | None = None) -> Path:
        """The layer's contact sheet; with ``kind``, that of the filters' variant ``kind`` (``sheet_negative.png``)."""
        return self.layer(layer) / (f"sheet_{kind}.png" if kind else "sheet.png")

    def layer_index(self, layer: str) -> Path:
        return self.layer(layer) / "index.html"

    def examples_file(self, layer: str) -> Path:
        return self.layer(layer) / "examples.json"

    def units_file(self, layer: str) -> Path:
        """The layer's units' statistics and labels (:func:`~kernelviz.sets.examples.write_scan`)."""
        return self.layer(layer) / "units.json"

    def example_image(self, image: str | Path) -> Path:
        """Where the atlas keeps the image file ``image`` that dataset examples show (once, whatever the layers, units
        and rankings that show it): ``examples-images/<a digest of its path>.jpg``."""
        digest = hashlib.sha1(str(image).encode()).hexdigest()[:16]
        return self.root / "examples-images" / f"{digest}.jpg"

    def preview(self, layer: str, n: int) -> Path:
        """Filter ``n``'s quick preview (the explorer's first look, until its picture is made)."""
        return self.layer(layer) / "previews" / picture_name(n)

    def variant(self, layer: str, n: int, kind: str) -> Path:
        """The picture of variant ``kind`` of filter ``n`` (its record: the same name, ``.json``)."""
        return self.layer(layer) / "variants" / f"{n:04d}_{kind}.png"

    def ablation_file(self, layer: str, n: int, kind: str) -> Path:
        """What switching filter ``n`` off (``kind`` ``zero``) or amplifying it (``x4``) over a collection did (the
        explorer's, :meth:`~kernelviz.units.ablation.Ablation.to_json`)."""
        return self.layer(layer) / "ablations" / f"{n:04d}_{kind}.json"

    def relative(self, path: Path) -> str:
        """``path`` relative to the root, with ``/`` (a link inside the atlas)."""
        return path.relative_to(self.root).as_posix()

    # --- filters ---------------------------------------------------------------------------------
    def written(self, layer: str, n: int, kind: str | None = None) -> bool:
        """Whether both of filter ``n``'s files (its variant ``kind``'s) exist (cheap: no parsing)."""
        return self.record_file(layer, n, kind).exists() and self.picture(layer, n, kind).exists()

    def written_filters(self, layer: str) -> list[int]:
        """The filters of ``layer`` whose picture and record exist."""
        d = self.layer(layer)
        return sorted(int(p.stem) for p in d.glob("[0-9][0-9][0-9][0-9].json") if (d / f"{p.stem}.png").exists())

    def kept(self, layer: str, n: int, kind: str | None = None) -> bool:
        """Whether filter ``n``'s files (those of its variant ``kind``) are whole: the record parses with the
        values readers need, the PNG decodes. Damaged ones are removed (the record first: it marks it done)."""
        from PIL import Image

        record, png = self.record_file(layer, n, kind), self.picture(layer, n, kind)
        if not (record.exists() or png.exists()):
            return False
        try:
            with Image.open(png) as im:
                im.verify()
            whole = _typed(_read(record), _RECORD_TYPES)
        except (OSError, SyntaxError):  # PIL raises SyntaxError for some broken files
            whole = False
        if not whole:
            record.unlink(missing_ok=True)
            png.unlink(missing_ok=True)
        return whole

    def record(self, layer: str, n: int, kind: str | None = None) -> dict[str, Any] | None:
        """Filter ``n``'s record (its variant ``kind``'s) when its files are whole, else ``None``."""
        return _read(self.record_file(layer, n, kind)) if self.kept(layer, n, kind) else None

    def written_record(self, layer: str, n: int, kind: str | None = None) -> dict[str, Any]:
        """The record of a filter (its variant ``kind``'s) just written (a :class:`KernelvizError` if it is not
        there)."""
        data = _read(self.record_file(layer, n, kind))
        if not _typed(data, _RECORD_TYPES):
            what = f"the {kind} picture" if kind else "the record"
            raise KernelvizError(f"{what} of filter {n} of {layer!r} is missing or damaged")
        return data

    def write_filter(self, layer: str, n: int, image: Any, record: dict[str, Any], kind: str | None = None) -> None:
        """Write filter ``n``'s picture ``(3, H, W)`` and record (its variant ``kind``'s) atomically, the record
        last."""
        write_each(
            lambda: save_png(image, self.picture(layer, n, kind)),
            lambda: save_json(record, self.record_file(layer, n, kind)),
        )

    # --- dataset examples ------------------------------------------------------------------------
    def examples(self, layer: str) -> dict[str, Any] | None:
        """The layer's dataset examples (``scanned``, ``skipped``, ``filters``, ``mean``, ``bottom`` → per filter a
        list of ``image``, ``value``, ``crop`` and more; ``classes`` for a class-labeled collection: see
        :func:`~kernelviz.sets.examples.write_scan`) when made and whole, else ``None``."""
        data = _read(self.examples_file(layer))
        if not _typed(data, {"scanned": int, "filters": dict}):
            return None
        entry: dict[str, type | tuple[type, ...]] = {"image": str, "crop": str, "value": (int, float)}
        rankings = [data[key] for key in ("filters", "mean", "bottom") if key in data]
        whole = all(
            isinstance(ranked, dict)
            and all(isinstance(found, list) and all(_typed(e, entry) for e in found) for found in ranked.values())
            for ranked in rankings
        ) and isinstance(data.get("classes", {}), dict)
        return data if whole else None

    def units(self, layer: str) -> dict[str, Any] | None:
        """The layer's ``units.json`` (per unit its frequency, mean, max, dead, dense, histogram, quantile examples
        and labels) when made and whole, every field a page reads of the type it needs; else ``None``."""
        data = _read(self.units_file(layer))
        if not _typed(data, {"layer": str, "images": int, "units": list}):
            return None
        number: tuple[type, ...] = (int, float)
        fields: dict[str, type | tuple[type, ...]] = {
            "unit": int, "frequency": number, "mean": number, "max": number, "dead": bool, "dense": bool,
            "histogram": dict, "quantiles": list, "labels": list,
        }  # fmt: skip
        label: dict[str, type | tuple[type, ...]] = {"id": str, "name": str, "kind": str, "auc": number, "images": int}
        example: dict[str, type | tuple[type, ...]] = {"image": str, "crop": str, "value": number}
        for u in data["units"]:
            if not _typed(u, fields) or not all(_typed(x, label) for x in u["labels"]):
                return None
            hist = u["histogram"]
            if not (_numbers(hist.get("edges")) and _numbers(hist.get("counts"))):
                return None
            if not all(isinstance(q, dict) and all(_typed(e, example) for e in q.get("examples", [])) for q in
                       u["quantiles"]):  # fmt: skip
                return None
        return data

    def unit_layers(self) -> list[str]:
        """The layers whose ``units.json`` is written (folder names, sorted)."""
        return sorted(p.parent.name for p in self.root.glob("*/units.json"))

    def labelled(self, text: str, layers: list[str] | None = None) -> list[dict[str, Any]]:
        """The units whose labels hold ``text`` (in a label's name or id, any case), over ``layers`` (default: every
        layer with a ``units.json``): ``{"layer", "unit", "label": {...}, "frequency"}``, by AUC, best first."""
        wanted = text.strip().lower()
        found = []
        for layer in layers if layers is not None else self.unit_layers():
            data = self.units(layer)
            if data is None:
                continue
            for u in data["units"]:
                exact = [x for x in u["labels"] if wanted in (x["name"].lower(), x["id"].lower())]
                near = [x for x in u["labels"] if wanted in x["name"].lower()]
                if exact or near:  # a label named so goes before one that only holds the text ("dog", "hot dog")
                    found.append({"layer": data["layer"], "unit": u["unit"], "label": (exact or near)[0],
                                  "exact": bool(exact), "frequency": u["frequency"]})  # fmt: skip
        return sorted(found, key=lambda f: (not f["exact"], -f["label"]["auc"], f["layer"], f["unit"]))

    # --- concepts ----------------------------------------------------------------------------------
    def concepts_dir(self, layer: str, class_index: int | None = None) -> Path:
        """Where the layer's concepts over the explorer's images are kept: ``<layer>/concepts/``, or
        ``<layer>/concepts-by-class/<index>/`` for one class (its index among the collection's classes: no class
        name becomes a path)."""
        if class_index is None:
            return self.layer(layer) / "concepts"
        return self.layer(layer) / "concepts-by-class" / str(int(class_index))

    def concepts(self, layer: str, class_index: int | None = None) -> dict[str, Any] | None:
        """The layer's ``concepts.json`` (:meth:`concepts_dir`), every field checked; ``None`` when there is none.

        Raises:
            KernelvizError: the file is there but damaged or not a concepts file (said relative to the atlas).
        """
        file = concepts_file(self.concepts_dir(layer, class_index))
        if not file.is_file():
            return None
        return read_concepts(file, shown=self.relative(file))

    # --- the settings ----------------------------------------------------------------------------
    def settings(self) -> dict[str, Any] | None:
        """The recorded ``settings.json``, with the settings older atlases were made with before they were
        recorded; ``None`` when there is none.

        Raises:
            KernelvizError: the file is there but damaged.
        """
        path = self.settings_file
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise KernelvizError(
                f"{path} is damaged ({err}), so the settings of the files already there are unknown: "
                "use another output folder, or delete that folder to start over"
            ) from err
        return {**_IMPLICIT, **data} if isinstance(data, dict) else data

    def check_settings(self, settings: dict[str, Any]) -> None:
        """Refuse to resume an atlas made with other settings; write ``settings.json`` for a new one (or for one
        whose pictures were made with these settings but whose ``settings.json`` was lost)."""
        before = self.settings()
        if before is None:
            made = next(
                (r for r in sorted(self.root.glob("*/[0-9][0-9][0-9][0-9].json")) if _typed(_read(r), _RECORD_TYPES)),
                None,
            )
            if made is not None:  # pictures without the settings file: compare with what a picture recorded
                recorded = _read(made)["settings"]
                differ = [k for k, v in settings.items() if k in recorded and not _same_setting(k, recorded[k], v)]
                if differ or not set(settings) & set(recorded):
                    listed = "; ".join(f"{k} {recorded.get(k)!r} there, {settings[k]!r} now" for k in differ)
                    raise KernelvizError(
                        f"{self.root} holds filter pictures but no settings.json, and {self.relative(made)} was made "
                        f"with other settings ({listed or 'unknown'}): use another output folder, or those settings"
                    )
            save_json(settings, self.settings_file)
            return
        if before != settings:
            was = before if isinstance(before, dict) else {}
            changed = [f"{k} {was.get(k)!r} there, {v!r} now" for k, v in settings.items() if was.get(k) != v]
            raise KernelvizError(
                f"{self.root} holds an atlas made with other settings ({'; '.join(changed)}): "
                "use another output folder, or those settings to resume"
            )
