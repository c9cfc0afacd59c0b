"""``kernelviz serve``: a live explorer of a model, unit by unit, in the browser (the ``serve`` extra: Starlette,
uvicorn).

``explorer`` (the façade over the library, no HTTP: another front-end can use it without Starlette) with its three
sides: ``pictures`` (the layers and their units' pictures), ``photos`` (photos and what is made from them),
``concepts`` (a layer's concepts); ``worker`` (the one thread that owns the model and runs every computation),
``events`` (the server-sent events, declared once), ``views`` (what each page shows, as plain data),
``pages`` (the HTML, from templates that escape every value), ``app`` (Starlette routes, the token; statuses by
error type), ``urls`` (every URL path, one table for routes, pages and ``static/app.js``).
"""

from __future__ import annotations

import secrets
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.models import model_meta, model_slug
from ..errors import KernelvizError
from ..optvis.settings import OptimSettings

if TYPE_CHECKING:
    from torch import nn

__all__ = ["serve"]


def _check_port(host: str, port: int) -> None:
    """Refuse a port another server listens on (bound as uvicorn binds it: with ``SO_REUSEADDR``, so a port left in
    ``TIME_WAIT`` is free)."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as err:
            raise KernelvizError(
                f"cannot listen on {host}:{port} ({err.strerror or err}): another server uses it; choose another "
                "port (--port)"
            ) from None


def serve(
    model: nn.Module,
    *,
    atlas: str | Path | None = None,
    images: str | Path | None = None,
    host: str = "127.0.0.1",
    port: int = 8765,
    token: bool | str = True,
    settings: OptimSettings | None = None,
    say: Callable[..., None] = print,
) -> None:
    """Run the explorer until Ctrl-C.

    Args:
        model: the network (with metadata: :func:`~kernelviz.load_model`).
        atlas: the atlas folder that caches the pictures (``atlas/<model>/``, the layout of
            :func:`~kernelviz.atlas`); default: a new temporary folder (lost when the machine cleans it).
        images: a folder of natural images (dataset examples, the image page's picker).
        host: the address to bind; anything but a loopback address is said to be exposed.
        port: the port.
        token: ask for a token on every request (printed in the URL): a new random one (``True``), this one (a
            string: links then last across restarts), or none (``False``).
        settings: how the pictures are made; default: those of the atlas already in ``atlas``, else the defaults.
        say: where to print the URL and notices.
    """
    try:
        import uvicorn

        from .app import create_app
        from .explorer import Explorer
    except ImportError as err:
        raise KernelvizError(
            f"kernelviz serve needs its extra: pip install 'kernelviz[serve]' ({err.name} is missing)"
        ) from err
    _check_port(host, port)  # before the URL is printed: a URL of another server's port would open that server
    if atlas is None:
        atlas = tempfile.mkdtemp(prefix="kernelviz-atlas-")
        say(f"pictures are kept in {atlas} (pass --atlas DIR to keep them across runs)")
    root = Path(atlas) / model_slug(model_meta(model).name)
    explorer = Explorer(model, root, Path(images) if images else None, settings=settings)
    secret = token if isinstance(token, str) else secrets.token_urlsafe(24) if token else None
    if host not in ("127.0.0.1", "localhost", "::1"):
        say(f"warning: binding {host} exposes the explorer (and your model) to the network", file=sys.stderr)
    shown = "localhost" if host in ("127.0.0.1", "::1") else host
    say(f"kernelviz explorer of {explorer.meta.name}: http://{shown}:{port}/" + (f"?token={secret}" if secret else ""))
    app = create_app(explorer, secret)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        explorer.worker.stop()
