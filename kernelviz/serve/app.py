"""The explorer's web app (Starlette on uvicorn): routes, the token, files, server-sent events.

Every route but ``/static`` asks for the token (as Jupyter does): ``?token=`` on the first visit sets a
cookie; a request without either is refused with 403. Files are served only from the atlas folder
(``/files/...``: a path that leaves it is refused), uploads are capped and decoded safely, and every
failure is a JSON error or an error page: the server goes on.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Future
from importlib import resources
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..errors import KernelvizError, NotFoundError
from .explorer import Explorer
from .pages import page
from .photos import MAX_UPLOAD
from .urls import API, PAGES
from .views import concepts_view, filter_view, image_view, layer_view, message_view, model_view, units_view

__all__ = ["COOKIE", "create_app"]

COOKIE = "kernelviz_token"
_LOG = logging.getLogger("kernelviz.serve")


async def _wait(future: Future) -> Any:
    """The result of a worker future, awaited without blocking the event loop."""
    return await asyncio.wrap_future(future)


def _error(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(explorer: Explorer, token: str | None) -> Starlette:
    """The app serving ``explorer``; ``token=None`` turns the token check off (``--no-token``).

    Every page is also JSON for scripts: ``?format=json`` answers the page's view (its plain data,
    :mod:`~kernelviz.serve.views`) instead of its HTML.
    """

    def shown(request: Request, name: str, view: dict[str, Any], status: int = 200) -> Response:
        if request.query_params.get("format") == "json":
            return JSONResponse(view, status_code=status)
        return HTMLResponse(page(name, view, token or ""), status_code=status)

    def message(title: str, text: str, status: int) -> HTMLResponse:
        return HTMLResponse(page("message", message_view(explorer, title, text)), status_code=status)

    class TokenCheck(BaseHTTPMiddleware):
        async def dispatch(self, request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
            if token is None or request.url.path.startswith(PAGES["static"] + "/"):
                return await call_next(request)
            given = request.query_params.get("token") or request.headers.get("x-kernelviz-token")
            from_query = given is not None
            given = given or request.cookies.get(COOKIE)
            if not given or not hmac.compare_digest(given.encode(), token.encode()):
                message_text = "a token is required: open the URL kernelviz serve printed (it ends in ?token=...)"
                if request.url.path.startswith("/api/") or request.query_params.get("format") == "json":
                    return _error(message_text, 403)
                return message("token required", message_text, 403)
            response = await call_next(request)
            if from_query:
                response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
            return response

    def answered(
        handler: Callable[[Request], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        """A handler whose errors become answers, the status chosen by the error's type: :class:`NotFoundError` a
        404, any other :class:`KernelvizError` a 400 (JSON for /api, a page otherwise), anything else a 500 with
        its message: one request never brings the server down."""

        async def run(request: Request) -> Response:
            try:
                return await handler(request)
            except KernelvizError as err:
                status = 404 if isinstance(err, NotFoundError) else 400
                if request.url.path.startswith("/api/") or request.query_params.get("format") == "json":
                    return _error(str(err), status)
                return message("cannot show that", str(err), status)
            except Exception as err:  # a bug must not take the server down: say it, log it
                _LOG.exception("request %s failed", request.url.path)
                text = f"internal error: {type(err).__name__}: {err}".replace(str(explorer.root.resolve()), "<atlas>")
                if request.url.path.startswith("/api/") or request.query_params.get("format") == "json":
                    return _error(text, 500)
                return message("internal error", text, 500)

        return run

    def _int(value: str, what: str) -> int:
        try:
            return int(value)
        except ValueError as err:
            raise KernelvizError(f"{what} must be a whole number, got {value!r}") from err

    async def home(request: Request) -> Response:
        return shown(request, "model", model_view(explorer))

    async def layer(request: Request) -> Response:
        number = _int(request.query_params.get("page", "0"), "page")
        layer_name = request.path_params["layer"]
        return shown(request, "layer", layer_view(explorer, layer_name, max(0, number), chosen_photo(request)))

    async def filter_(request: Request) -> Response:
        n = _int(request.path_params["n"], "filter")
        return shown(request, "filter", filter_view(explorer, request.path_params["layer"], n, chosen_photo(request)))

    def chosen_photo(request: Request) -> dict[str, str]:
        """The photo a page was opened with (``?upload=`` or ``?pick=``), offered first by its photo forms."""
        return {k: v for k, v in request.query_params.items() if k in ("upload", "pick")}

    async def files(request: Request) -> Response:
        root = explorer.root.resolve()
        asked = request.path_params["path"]
        path = None if "\0" in asked else (root / asked).resolve()
        if path is None or not path.is_relative_to(root) or not path.is_file():
            raise NotFoundError("file not found in the atlas folder")
        return FileResponse(path)

    async def json_body(request: Request) -> dict[str, Any]:
        try:
            data = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise KernelvizError(f"the request body is not JSON: {err}") from err
        except RecursionError:
            raise KernelvizError("the request body is nested too deeply to read") from None
        if not isinstance(data, dict):
            raise KernelvizError("the request body must be a JSON object")
        return data

    async def compute(request: Request) -> Response:
        data = await json_body(request)
        layer_name = str(data.get("layer", ""))
        filters = data.get("filters", [])
        if not isinstance(filters, list) or not all(isinstance(n, int) for n in filters):
            raise KernelvizError("filters must be a list of whole numbers")
        if data.get("previews") is True:  # a layer page: quick previews first
            previews, futures = explorer.request_page(layer_name, filters)
        else:
            previews, futures = [], explorer.request_filters(layer_name, filters)
        return JSONResponse(
            {"batches": len(futures), "batch_size": explorer.optim.batch_size, "preview_batches": len(previews)}
        )

    async def variant(request: Request) -> Response:
        data = await json_body(request)
        explorer.request_variant(
            str(data.get("layer", "")), _int(str(data.get("filter", "")), "filter"), str(data.get("variant", ""))
        )
        return JSONResponse({"queued": True})

    def queued(future: object | None) -> Response:
        """The answer to a request for work on ``--images`` (``None``: the server has none)."""
        if future is None:
            raise KernelvizError("no --images folder was given to the server")
        return JSONResponse({"queued": True})

    def unit_of(data: dict[str, Any]) -> tuple[str, int]:
        return str(data.get("layer", "")), _int(str(data.get("filter", "")), "filter")

    async def examples(request: Request) -> Response:
        return queued(explorer.request_examples(str((await json_body(request)).get("layer", ""))))

    async def trust(request: Request) -> Response:
        return queued(explorer.request_trust(*unit_of(await json_body(request))))

    async def ablation(request: Request) -> Response:
        data = await json_body(request)
        return queued(explorer.request_ablation(*unit_of(data), str(data.get("kind", ""))))

    async def importance(request: Request) -> Response:
        return queued(explorer.request_importance(str((await json_body(request)).get("layer", ""))))

    async def units(request: Request) -> Response:
        return shown(request, "units", units_view(explorer, request.query_params.get("label", "")))

    async def concepts(request: Request) -> Response:
        q = request.query_params
        return shown(request, "concepts", concepts_view(explorer, request.path_params["layer"], q.get("class") or None))

    async def find_concepts(request: Request) -> Response:
        data = await json_body(request)
        k = _int(str(data.get("k", 8)), "k")
        explorer.concepts.request(str(data.get("layer", "")), k, str(data.get("class") or "") or None)
        return JSONResponse({"queued": True})

    async def concept_maps(request: Request) -> Response:
        q = request.query_params
        future = explorer.concepts.maps_png(image_file(request), q.get("layer", ""), q.get("class") or None)
        return Response(await _wait(future), media_type="image/png")

    async def kernel(request: Request) -> Response:
        n = _int(request.path_params["n"], "filter")
        png = await _wait(explorer.kernel_png(request.path_params["layer"], n))
        return Response(png, media_type="image/png")

    async def events(request: Request) -> Response:
        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=1000)

        def listener(event: dict[str, Any]) -> None:  # called on the worker thread
            loop.call_soon_threadsafe(_put, event)

        def _put(event: dict[str, Any]) -> None:
            if not inbox.full():  # a slow client loses progress ticks, not the server's memory
                inbox.put_nowait(event)

        async def stream() -> AsyncIterator[str]:
            explorer.worker.subscribe(listener)
            try:
                yield ": connected\n\n"
                while True:
                    try:
                        event = await asyncio.wait_for(inbox.get(), timeout=15)
                    except TimeoutError:
                        yield ": keep-alive\n\n"
                        continue
                    yield f"data: {json.dumps(event)}\n\n"
            finally:  # the client went away: stop listening; the computation goes on and is kept
                explorer.worker.unsubscribe(listener)

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})

    def image_file(request: Request) -> Path:
        q = request.query_params
        return explorer.photos.path(upload=q.get("upload"), pick=q.get("pick"))

    async def image(request: Request) -> Response:
        if request.method == "POST":
            if int(request.headers.get("content-length") or 0) > MAX_UPLOAD + 65536:
                raise KernelvizError(f"the file is too large: uploads are limited to {MAX_UPLOAD // 2**20} MiB")
            try:
                form = await request.form(max_files=1, max_fields=4)
            except (MultiPartException, HTTPException) as err:  # two files, too many fields, a broken body
                raise KernelvizError(f"the upload could not be read: {getattr(err, 'detail', None) or err}") from err
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise KernelvizError("no file in the upload: choose an image file")
            data = await upload.read(MAX_UPLOAD + 1)
            digest = await asyncio.to_thread(explorer.photos.save_upload, data)
            return RedirectResponse(f"{PAGES['image']}?upload={digest}", status_code=303)
        query = dict(request.query_params)  # the image, and the view's choices (method, target, layer...)
        analysis, scaled = None, None
        if "upload" in query or "pick" in query:
            analysis = await _wait(explorer.photos.analyse(image_file(request)))
            if query.get("scale_layer") and query.get("scale_unit"):  # a unit scaled from 0 to 4x on this photo
                try:
                    unit = _int(query["scale_unit"], "unit")
                    scaled = await _wait(explorer.photos.scaled(image_file(request), query["scale_layer"], unit))
                except KernelvizError as err:
                    scaled = {"error": str(err)}
        return shown(request, "image", image_view(explorer, analysis, query, scaled))

    async def image_png(request: Request) -> Response:
        return FileResponse(image_file(request))

    async def heatmap(request: Request) -> Response:
        q = request.query_params
        future = explorer.photos.heatmap_png(
            image_file(request), q.get("method", "gradcam"), q.get("target") or None, q.get("filter") or None
        )
        return Response(await _wait(future), media_type="image/png")

    async def maps(request: Request) -> Response:
        future = explorer.photos.maps_png(image_file(request), request.query_params.get("layer", ""))
        return Response(await _wait(future), media_type="image/png")

    async def photo(request: Request) -> Response:
        q = request.query_params
        n = q.get("filter")
        future = explorer.photos.photo_png(
            image_file(request),
            q.get("kind", "caricature"),
            q.get("layer") or None,  # none: every depth
            None if n is None else _int(n, "filter"),
        )
        return Response(await _wait(future), media_type="image/png")

    async def status(request: Request) -> Response:
        layer_name = request.path_params["layer"]
        explorer.row(layer_name)
        return JSONResponse({"layer": layer_name, "done": explorer.done(layer_name)})

    static = resources.files("kernelviz.serve") / "static"
    routes = [
        Route(PAGES["model"], answered(home)),
        Route(PAGES["layer"], answered(layer)),
        Route(PAGES["filter"], answered(filter_)),
        Route(PAGES["image"], answered(image), methods=["GET", "POST"]),
        Route(PAGES["files"], answered(files)),
        Route(PAGES["concepts"], answered(concepts)),
        Route(PAGES["units"], answered(units)),
        Route(API["concepts"], answered(find_concepts), methods=["POST"]),
        Route(API["concept_maps"], answered(concept_maps)),
        Route(API["compute"], answered(compute), methods=["POST"]),
        Route(API["variant"], answered(variant), methods=["POST"]),
        Route(API["examples"], answered(examples), methods=["POST"]),
        Route(API["trust"], answered(trust), methods=["POST"]),
        Route(API["ablate"], answered(ablation), methods=["POST"]),
        Route(API["importance"], answered(importance), methods=["POST"]),
        Route(API["kernel"], answered(kernel)),
        Route(API["events"], events),
        Route(API["status"], answered(status)),
        Route(API["image"], answered(image_png)),
        Route(API["heatmap"], answered(heatmap)),
        Route(API["maps"], answered(maps)),
        Route(API["photo"], answered(photo)),
        Mount(PAGES["static"], StaticFiles(directory=str(static)), name="static"),
    ]
    return Starlette(routes=routes, middleware=[Middleware(TokenCheck)])
