"""A tour of ``kernelviz serve`` in a real browser (Playwright driving the system Chromium).

Used by the browser test (``tests/serve/test_browser.py``, on a small model) and, run as a script, to make
the README's screenshots on the ImageNet-trained EfficientNet-Lite0 (offline)::

    python docs/serve_tour.py            # writes docs/img/serve_*.png (a few minutes on 2 CPU cores)

The tour: the model page; a layer, waiting until every thumbnail of its first page has arrived; a filter
page; a block output's layer and filter pages; the image page with an uploaded photo and its heatmap, its
URL reopened. :func:`reopen` opens saved URLs in a new browser (after a restart with a fixed token). Both
collect console errors and check that every image on each page loaded.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")


def chromium_path() -> str | None:
    """The system Chromium (Playwright drives it; no browser download)."""
    return next((p for p in map(shutil.which, CHROMIUM) if p), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running(app: Any, port: int | None = None) -> Iterator[str]:
    """Serve ``app`` with uvicorn on ``port`` (default: a free local one) in a thread; yields its base URL."""
    import uvicorn

    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


_IMAGES_OK = """() => Array.from(document.images).every(im => im.complete && im.naturalWidth > 0)"""


#: A page's script: the picture in the element ``slot`` loaded.
_LOADED = "() => {{ const k = document.querySelector('#{slot} img'); return k && k.complete && k.naturalWidth > 0; }}"


#: Counts the event connections a page opens (``window.kernelvizSources``), independently of the page's script.
_COUNT_SOURCES = """(() => {
  const Real = window.EventSource;
  window.kernelvizSources = 0;
  window.EventSource = function (url, options) { window.kernelvizSources += 1; return new Real(url, options); };
  window.EventSource.prototype = Real.prototype;
})();"""


def _browser_page(p: Any, seen: dict[str, Any]) -> tuple[Any, Any]:
    """A new Chromium and a page whose console errors go to ``seen["console_errors"]``."""
    browser = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.add_init_script(_COUNT_SOURCES)  # how many event connections each page opens
    page.on("console", lambda m: seen["console_errors"].append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: seen["console_errors"].append(str(e)))
    return browser, page


def tour(
    base: str,
    token: str,
    layer: str,
    photo: Path,
    shots: Path | None = None,
    timeout_s: float = 300,
    block: str | None = None,
) -> dict[str, Any]:
    """Walk the explorer; returns what was seen (console errors, images per page, timings). ``block``: also the
    pages of this block output (its layer page until every picture arrived, then its filter 0)."""
    from playwright.sync_api import sync_playwright

    seen: dict[str, Any] = {"console_errors": [], "pages": {}}
    ms = int(timeout_s * 1000)
    with sync_playwright() as p:
        browser, page = _browser_page(p, seen)

        def check(name: str) -> None:
            page.wait_for_function(_IMAGES_OK, timeout=ms)
            count = page.evaluate("() => document.images.length")
            sources = page.evaluate("() => window.kernelvizSources")
            seen["pages"][name] = {"url": page.url, "images": count, "title": page.title(), "event_sources": sources}
            if shots is not None:
                page.screenshot(path=str(shots / f"serve_{name}.png"), full_page=False)

        page.goto(f"{base}/?token={token}")
        check("model")
        start = time.perf_counter()
        page.click(f'a[href="/layer/{layer}"]')
        page.wait_for_url("**/layer/**", timeout=ms)
        page.wait_for_function("() => document.body && document.body.dataset.missingCount === '0'", timeout=ms)
        seen["layer_seconds"] = round(time.perf_counter() - start, 1)
        seen["layer_previews"] = int(page.evaluate("() => document.body.dataset.previews || '0'"))
        check("layer")
        page.click("#f3 a")
        page.wait_for_url("**/filter/**", timeout=ms)
        page.wait_for_selector("img.big:not(.preview)", timeout=ms)
        check("filter")
        if block is not None:
            page.goto(f"{base}/")
            page.click(f'a[href="/layer/{block}"]')
            page.wait_for_url("**/layer/**", timeout=ms)
            page.wait_for_function("() => document.body && document.body.dataset.missingCount === '0'", timeout=ms)
            check("block")
            page.click("#f0 a")
            page.wait_for_url("**/filter/**", timeout=ms)
            page.wait_for_selector("img.big:not(.preview)", timeout=ms)
            check("block_filter")
            seen["block_filter_text"] = page.inner_text("main")
        page.goto(f"{base}/image")
        page.set_input_files("input[type=file]", str(photo))
        page.click("form[enctype] button[type=submit]")
        page.wait_for_url("**/image?upload=*", timeout=ms)
        page.wait_for_function(
            "() => { const h = document.getElementById('heatmap'); return h && h.complete && h.naturalWidth > 0; }",
            timeout=ms,
        )
        check("image")
        # the view's choices go into the URL: reopened, the page shows the same view
        page.select_option("#heatmap-form select[name=method]", "saliency")
        page.click("#heatmap-form button[type=submit]")
        page.wait_for_function("() => location.search.includes('method=saliency')", timeout=ms)
        maps_layer = page.eval_on_selector_all("#maps-form option", "os => os[os.length - 1].value")
        page.select_option("#maps-form select[name=layer]", maps_layer)
        page.click("#maps-form button[type=submit]")
        page.wait_for_function("() => location.search.includes('layer=')", timeout=ms)
        kept = page.url
        page.goto("about:blank")
        page.goto(kept)
        page.wait_for_function(_IMAGES_OK, timeout=ms)
        page.select_option("form[data-slot=caricature] select[name=layer]", "")  # every depth
        page.click("form[data-slot=caricature] button[type=submit]")  # what each depth keeps of the photo
        page.wait_for_function(_LOADED.format(slot="caricature"), timeout=ms)
        seen["caricature"] = page.eval_on_selector("#caricature img", "k => [k.naturalWidth, k.naturalHeight]")
        seen["reopened"] = {
            "url": kept,
            "method": page.eval_on_selector("#heatmap-form select[name=method]", "s => s.value"),
            "layer": page.eval_on_selector("#maps-form select[name=layer]", "s => s.value"),
            "maps_layer": maps_layer,
        }
        # a filter that fires on the photo: its page offers the photo first, for an accentuation
        page.click(".firing a")
        page.wait_for_url("**/filter/**", timeout=ms)
        page.wait_for_selector("img.big:not(.preview)", timeout=ms)  # its picture first (the page reloads then)
        page.click("form.photo-form button[type=submit]")
        page.wait_for_function(_LOADED.format(slot="photo-picture"), timeout=ms)
        seen["accentuated"] = {
            "url": page.url,
            "size": page.eval_on_selector("#photo-picture img", "k => [k.naturalWidth, k.naturalHeight]"),
            "photo": page.eval_on_selector("form.photo-form select[name=photo]", "s => s.value"),
        }
        browser.close()
    return seen


def reopen(urls: list[str], timeout_s: float = 60) -> dict[str, Any]:
    """Open each URL in a new browser (no cookie): ``{"console_errors": [...], "pages": [{url, status, title,
    images}]}``, each page waited for until its images loaded."""
    from playwright.sync_api import sync_playwright

    seen: dict[str, Any] = {"console_errors": [], "pages": []}
    with sync_playwright() as p:
        browser, page = _browser_page(p, seen)
        for url in urls:
            response = page.goto(url)
            page.wait_for_function(_IMAGES_OK, timeout=int(timeout_s * 1000))
            seen["pages"].append(
                {
                    "url": url,
                    "status": response.status if response else None,
                    "title": page.title(),
                    "images": page.evaluate("() => document.images.length"),
                }
            )
        browser.close()
    return seen


def main() -> None:
    import secrets
    import tempfile

    from PIL import Image

    import kernelviz
    from kernelviz.core.models import model_slug
    from kernelviz.serve.app import create_app
    from kernelviz.serve.explorer import Explorer
    from kernelviz.zoo import efficientnet_lite0, photo

    out = Path(__file__).parent / "img"
    with tempfile.TemporaryDirectory() as tmp:
        picture = Path(tmp) / "chelsea.png"
        Image.fromarray((photo("chelsea", 224).permute(1, 2, 0).numpy() * 255).astype("uint8")).save(picture)
        model = efficientnet_lite0()
        settings = kernelviz.DEFAULTS.with_(steps=96, size=128)
        root = Path(tmp) / "atlas" / model_slug(kernelviz.model_meta(model).name)
        explorer = Explorer(model, root, settings=settings)
        token = secrets.token_urlsafe(16)
        with running(create_app(explorer, token)) as base:
            seen = tour(base, token, "_blocks.9._project_conv", picture, shots=out, timeout_s=1500, block="_blocks.9")
        explorer.worker.stop()
    print(seen)


if __name__ == "__main__":
    main()
