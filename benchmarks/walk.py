"""The walk of a parameter through the calls: which files of the package a value passes through, in order.

    python benchmarks/walk.py filter      # the layer name and the model, from `kernelviz filter` to the optimizer
    python benchmarks/walk.py scan        # --images, from `kernelviz examples MODEL --images DIR` through a scan

Every call into the package is traced (``sys.setprofile``); a call counts when one of its arguments is the value
followed (the same object, or an equal string). It prints the files the value passes through, first visit first,
and the climbs back up: a call from a file of a lower package to one of a higher package (the README's
architecture order: errors, core, files, data, optvis, explain, units, plot, sets, jobs, serve, cli).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ORDER = ["errors", "zoo", "core", "files", "data", "optvis", "explain", "units", "plot", "sets", "jobs", "serve", "cli"]


def _package(filename: str) -> str | None:
    parts = Path(filename).parts
    if "kernelviz" not in parts:
        return None
    rest = parts[parts.index("kernelviz") + 1 :]
    if not rest:
        return None
    name = rest[0].removesuffix(".py")
    return name if name in ORDER else None


def trace(followed: list[object], run: callable) -> None:  # type: ignore[valid-type]
    files: list[str] = []
    climbs: list[tuple[str, str]] = []

    def carries(frame: object) -> bool:
        code = frame.f_code  # type: ignore[attr-defined]
        names = code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]
        values = [frame.f_locals.get(n) for n in names]  # type: ignore[attr-defined]
        return any(
            v is f or (isinstance(f, str | Path) and type(v) is type(f) and v == f) for v in values for f in followed
        )

    def profile(frame: object, event: str, arg: object) -> None:
        if event != "call":
            return
        here = frame.f_code.co_filename  # type: ignore[attr-defined]
        pkg = _package(here)
        if pkg is None or not carries(frame):
            return
        rel = here[here.index("kernelviz") :]
        if rel not in files:
            files.append(rel)
        caller = frame.f_back  # type: ignore[attr-defined]
        while caller is not None and _package(caller.f_code.co_filename) is None:
            caller = caller.f_back
        if caller is not None:
            up = _package(caller.f_code.co_filename)
            if up is not None and ORDER.index(pkg) > ORDER.index(up):
                pair = (caller.f_code.co_filename[caller.f_code.co_filename.index("kernelviz") :], rel)
                if pair not in climbs:
                    climbs.append(pair)

    sys.setprofile(profile)
    try:
        run()
    finally:
        sys.setprofile(None)
    print(f"{len(files)} files:")
    for f in files:
        print("  ", f)
    print(f"{len(climbs)} climbs back up:")
    for a, b in climbs:
        print(f"   {a} -> {b}")


def main() -> None:
    from click.testing import CliRunner

    import kernelviz
    from kernelviz.cli import main as cli
    from kernelviz.zoo import photo_collection

    what = sys.argv[1] if len(sys.argv) > 1 else "filter"
    out = Path(tempfile.mkdtemp())
    model = kernelviz.load_model("kernelviz.zoo:efficientnet_lite0")
    import kernelviz.core.models as models

    real_load = models.load_model
    models.load_model = lambda *a, **k: model  # the same object, so that it can be followed
    if what == "filter":
        args = ["filter", "kernelviz.zoo:efficientnet_lite0", "_blocks.2", "3", "--steps", "2", "--size", "64",
                "-o", str(out / "f.png")]  # fmt: skip
        followed: list[object] = ["_blocks.2", model]
    else:
        images = str(photo_collection(out / "images", 8))
        args = ["examples", "kernelviz.zoo:efficientnet_lite0", "--images", images, "-o", str(out / "ex"),
                "--layers", "_blocks.2._project_conv", "--workers", "0", "--quiet"]  # fmt: skip
        followed = [images, Path(images)]
    try:
        trace(followed, lambda: CliRunner().invoke(cli, args, catch_exceptions=False))
    finally:
        models.load_model = real_load


if __name__ == "__main__":
    main()
