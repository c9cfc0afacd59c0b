"""Same results before and after a refactoring: run the same commands on two trees and compare every file.

    python benchmarks/same_results.py run OUT          # the commands, on the tree this script is run from
    python benchmarks/same_results.py compare A B      # every PNG, .npy, JPEG, JSON and HTML of A against B

``run`` writes, with EfficientNet-Lite0 (offline) at quick settings: filter pictures, a grid, heatmaps with
several methods, feature maps, an atlas with its site and dataset examples, an examples scan, concepts, a
caricature, and the explorer's pages and pictures over HTTP (``kernelviz serve`` on a free port, fetched with its
token). ``compare`` says, per file, whether it is identical (JSON: after dropping the keys that hold times,
versions and the output folder's own path) and prints the first difference of each HTML page.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

MODEL = "kernelviz.zoo:efficientnet_lite0"
QUICK = ["--steps", "8", "--size", "64", "--batch-size", "4"]
TOKEN = "same-results-token-0123456789"
#: JSON keys whose values change from run to run (wall time, versions, dates).
VOLATILE = {
    "wall_time",
    "wall_seconds",
    "scan",
    "seconds",
    "versions",
    "time",
    "elapsed",
    "created",
    "date",
    "torch",
    "kernelviz",
}


def _run(out: Path, *args: str) -> None:
    print("kernelviz", " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "kernelviz", *args], check=True, cwd=out, stdout=subprocess.DEVNULL)


def _collection(root: Path) -> Path:
    """A small ImageFolder collection (3 classes x 6 JPEGs cut from the bundled photos)."""
    from kernelviz.zoo import photo_collection

    for i, names in enumerate((("chelsea", "coffee"), ("astronaut", "rocket"), ("coins", "camera"))):
        photo_collection(root / f"class{i}", 6, names=names, seed=i)
    return root


def run(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    from kernelviz.files.write import save_png
    from kernelviz.zoo import photo

    images = _collection(out / "images")
    cat = out / "chelsea.png"
    save_png(photo("chelsea"), cat)
    _run(out, "filter", MODEL, "_blocks.2", "0-1", *QUICK, "-o", "filter")
    _run(out, "filter", MODEL, "_swish#2", "0", *QUICK, "-o", "filter_swish.png")
    _run(out, "grid", MODEL, "_blocks.5", "--filters", "0-3", *QUICK, "-o", "grid.png", "--individual", "grid")
    _run(out, "heatmap", MODEL, str(cat), "-m", "gradcam", "-m", "saliency", "-m", "guided_backprop", "-o", "heatmap")
    _run(out, "maps", MODEL, "_blocks.2", str(cat), "-o", "maps.png", "--raw")
    _run(out, "weights", MODEL, "_conv_stem", "-o", "weights.png")
    _run(out, "atlas", MODEL, "-o", "atlas", "--layers", "_blocks.2,_blocks.5._project_conv", "--filters", "4",
         *QUICK, "--images", str(images))  # fmt: skip
    _run(out, "examples", MODEL, "--images", str(images), "-o", "examples",
         "--layers", "_blocks.2._project_conv,_swish#2", "-k", "3", "--workers", "0")  # fmt: skip
    _run(out, "concepts", MODEL, "_swish#2", "--images", str(images), "-k", "3", *QUICK, "--samples", "512",
         "-o", "concepts", "--workers", "0")  # fmt: skip
    _run(out, "heatmap", MODEL, str(cat), "--concepts", "concepts", "-o", "concept_maps")
    _run(out, "caricature", MODEL, "_blocks.5", str(cat), *QUICK, "-o", "caricature.png")
    _serve(out, images)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(out: Path, images: Path) -> None:
    """The explorer's pages and pictures over HTTP, on the atlas written above."""
    port = _free_port()
    atlas = out / "atlas"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kernelviz",
            "serve",
            MODEL,
            "--atlas",
            str(atlas),
            "--images",
            str(images),
            "--port",
            str(port),
            "--token",
            TOKEN,
            *QUICK,
        ],
        cwd=out,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    pages = out / "pages"
    pages.mkdir(exist_ok=True)
    base = f"http://127.0.0.1:{port}"
    fetch = {
        "model.html": "/",
        "layer.html": "/layer/_blocks.2",
        "filter.html": "/filter/_blocks.2/1",
        "filter_conv.html": "/filter/_blocks.5._project_conv/2",
        "concepts.html": "/concepts/_swish%232",
        "image.html": "/image?pick=class0/000000.jpg",
        "kernel.png": "/api/kernel/_blocks.5._project_conv/2.png",
        "heatmap.png": "/api/heatmap.png?pick=class0/000000.jpg&method=gradcam",
        "maps.png": "/api/maps.png?pick=class0/000000.jpg&layer=_blocks.2",
    }
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{base}/?token={TOKEN}", timeout=5).read()
                break
            except OSError:
                time.sleep(1)
        for name, url in fetch.items():
            sep = "&" if "?" in url else "?"
            body = urllib.request.urlopen(f"{base}{url}{sep}token={TOKEN}", timeout=600).read()
            (pages / name).write_bytes(body)
            print("GET", url, len(body), flush=True)
    finally:
        server.terminate()
        server.wait(30)


class _Content(HTMLParser):
    """A page's content: its tags with their attributes (unescaped) and its text, whitespace collapsed, so that two
    pages that differ only in layout or in how they escape compare equal."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.items: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.items.append(f"<{tag} {sorted((k, v or '') for k, v in attrs)}>")

    def handle_data(self, data: str) -> None:
        if " ".join(data.split()):
            self.items.append(" ".join(data.split()))


def _content(page: str) -> list[str]:
    parser = _Content()
    parser.feed(page)
    return parser.items


def _clean(value: object, root: str) -> object:
    if isinstance(value, dict):
        return {k: _clean(v, root) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_clean(v, root) for v in value]
    if isinstance(value, str):
        return value.replace(root, "<OUT>")
    return value


def compare(a: Path, b: Path) -> int:
    files = sorted({p.relative_to(a) for p in a.rglob("*") if p.is_file()} |
                   {p.relative_to(b) for p in b.rglob("*") if p.is_file()})  # fmt: skip
    same = differ = 0
    for rel in files:
        if rel.parts[0] == "images" or "examples-scan" in rel.parts:
            continue
        x, y = a / rel, b / rel
        if not x.exists() or not y.exists():
            print(f"only in {'B' if not x.exists() else 'A'}: {rel}")
            differ += 1
            continue
        if rel.suffix == ".json":
            ok = _clean(json.loads(x.read_text()), str(a.resolve())) == _clean(
                json.loads(y.read_text()), str(b.resolve())
            )
        elif rel.suffix == ".html":
            tx, ty = x.read_text(), y.read_text()
            tx, ty = tx.replace(str(a.resolve()), "<OUT>"), ty.replace(str(b.resolve()), "<OUT>")
            ok = tx == ty
            if not ok:
                ca, cb = _content(tx), _content(ty)
                if ca == cb:
                    print(f"differs: {rel} in layout and escaping only (same tags, attributes and text)")
                else:
                    diff = difflib.unified_diff(ca, cb, "A", "B", n=0, lineterm="")
                    print(f"differs: {rel} in content:\n  " + "\n  ".join(list(diff)[2:40]))
        else:
            ok = x.read_bytes() == y.read_bytes()
        if ok:
            same += 1
        else:
            differ += 1
            if rel.suffix != ".html":
                print(f"differs: {rel}")
    print(f"{same} identical, {differ} differ")
    return 0 if differ == 0 else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("run").add_argument("out", type=Path)
    c = sub.add_parser("compare")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    args = parser.parse_args()
    if args.what == "run":
        if args.out.exists():
            shutil.rmtree(args.out)
        run(args.out.resolve())
    else:
        sys.exit(compare(args.a, args.b))


if __name__ == "__main__":
    os.environ.setdefault("KERNELVIZ_QUIET", "1")
    main()
