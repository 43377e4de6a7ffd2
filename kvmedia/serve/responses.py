"""JSON responses rendered with orjson (records are plain dicts; any stray bytes are shown
with `pathbytes.display`, never dropped)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from ..pathbytes import display
from .errors import ApiError

NO_STORE = {"Cache-Control": "no-store"}


def _default(obj: Any) -> Any:
    if isinstance(obj, bytes):
        return display(obj)
    if hasattr(obj, "to_json"):
        return obj.to_json()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, default=_default)


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return dumps(content)


def ok(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(content, status_code=status, headers={**NO_STORE, **(headers or {})})


def raw_json(body: bytes) -> Response:
    """A 200 answer whose JSON body is already rendered (by a search worker)."""
    return Response(body, media_type="application/json", headers=NO_STORE)


def error_response(err: ApiError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers={**NO_STORE, **err.headers})
