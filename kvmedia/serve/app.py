"""`create_app(lib, token=...)`: the Starlette application of `kvmedia serve`.

Routes come from the table in endpoints.py (filled by routes_read, routes_ops and the two
below); every call goes through `_route`, which applies the guard (auth.py) and turns errors
into the JSON shape of errors.py. Unknown routes and methods answer the same way.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import re
from collections.abc import AsyncIterator, Callable
from importlib import resources
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from . import routes_ops, routes_read  # noqa: F401 - they register their endpoints
from .auth import Guard
from .context import ServeState, server
from .endpoints import REGISTRY, Endpoint, endpoint
from .errors import ApiError, internal
from .openapi import document
from .responses import error_response, ok
from .searchers import SearcherPool

if TYPE_CHECKING:
    from ..library import Library
    from .watching import BackgroundWatcher

log = logging.getLogger("kvmedia.serve")


def _page() -> tuple[bytes, str]:
    """The page and its Content-Security-Policy (inline scripts allowed by their hash)."""
    html = resources.files("kvmedia.serve").joinpath("static/index.html").read_bytes()
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(m.group(1)).digest()).decode() + "'"
        for m in re.finditer(rb"<script>(.*?)</script>", html, re.S))
    csp = (f"default-src 'none'; script-src {hashes}; style-src 'unsafe-inline'; "
           "img-src 'self' blob: data:; media-src 'self'; connect-src 'self'; "
           "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
    return html, csp


@endpoint("GET", "/", "The search page (HTML)", content_type="text/html", public=True,
          tag="page", responses={200: None})
async def page(request: Request, args: dict[str, Any]) -> Response:
    """Search as you type, filters by type, trash and restore: the reference client."""
    html, csp = request.app.state.page
    return HTMLResponse(html, headers={"content-security-policy": csp,
                                       "x-content-type-options": "nosniff",
                                       "referrer-policy": "no-referrer",
                                       "cache-control": "no-cache"})


@endpoint("GET", "/openapi.json", "This document", public=True, tag="page",
          responses={200: "Summary"})
async def openapi(request: Request, args: dict[str, Any]) -> Response:
    return ok(document(REGISTRY, token_required=server(request).token_required))


def _route(ep: Endpoint) -> Route:
    async def call(request: Request) -> Any:
        try:
            server(request).guard.check(request, ep.public)
            return await ep(request)
        except ApiError as err:
            return error_response(err)

    call.__name__ = ep.handler.__name__
    return Route(ep.path, call, methods=[ep.method], name=ep.handler.__name__)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        return error_response(ApiError("method_not_allowed", f"{request.method} is not "
                                       f"allowed on {request.url.path}; see /openapi.json"))
    return error_response(ApiError("not_found", f"no such route: {request.url.path}; the "
                                   "routes are listed in /openapi.json"))


async def _crash(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(internal(exc))


def create_app(lib: Library, *, token: str | None = None,
               watcher: BackgroundWatcher | None = None, sse_interval_s: float = 0.25,
               search_workers: int = 0,
               on_ready: Callable[[], None] | None = None) -> Starlette:
    """The app for one Library. `token`: the API token (token mode), None on loopback.
    `search_workers`: text searches run in this many worker processes (searchers.py; 0: in
    the server process). `on_ready` runs once the server is set up (its signal handlers and
    search workers included)."""
    state = ServeState(lib=lib, guard=Guard(token), watcher=watcher,
                       sse_interval_s=sse_interval_s)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if search_workers > 0:
            state.searchers = SearcherPool(lib.data_dir, search_workers)
            await state.searchers.start()
        try:
            if on_ready is not None:
                on_ready()
            yield
        finally:
            state.jobs.close()  # a running scan stops at its next batch and commits
            if state.searchers is not None:
                await state.searchers.close()

    app = Starlette(routes=[_route(ep) for ep in REGISTRY], lifespan=lifespan,
                    exception_handlers={HTTPException: _http_error, Exception: _crash})
    app.state.kvmedia = state
    app.state.page = _page()
    return app
