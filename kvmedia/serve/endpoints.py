"""The route table: each handler is declared once, with its parameters and answers, and both
the Starlette routes and the OpenAPI document are made from that declaration, so the
document cannot miss a route and the parameters it lists are the ones the handler gets.

    @endpoint("GET", "/api/count", "Count records", params=[TYPE, Param("trash", "boolean")],
              responses={200: "Count"})
    async def count(request, args): ...      # args: the parsed, validated parameters
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from .errors import ApiError

Handler = Callable[[Request, dict[str, Any]], Awaitable[Response]]
MAX_BODY_BYTES = 1 << 20


@dataclass(frozen=True)
class Param:
    """One query or path parameter. kind: string | integer | boolean | enum."""

    name: str
    kind: str = "string"
    description: str = ""
    default: Any = None
    choices: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None
    required: bool = False
    where: str = "query"  # "query" | "path"

    def schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": {"enum": "string"}.get(self.kind, self.kind)}
        if self.choices:
            out["enum"] = list(self.choices)
        if self.minimum is not None:
            out["minimum"] = self.minimum
        if self.maximum is not None:
            out["maximum"] = self.maximum
        if self.default is not None:
            out["default"] = self.default
        return out

    def parse(self, raw: str | None) -> Any:
        if raw is None or (raw == "" and self.kind != "string"):
            if self.required:
                raise ApiError("bad_request", f"parameter {self.name!r} is required; add it")
            return self.default
        if self.kind == "integer":
            try:
                value = int(raw)
            except ValueError:
                raise ApiError("bad_request", f"parameter {self.name!r} must be an integer, "
                               f"got {raw[:40]!r}; send a number") from None
            if (self.minimum is not None and value < self.minimum) or (
                    self.maximum is not None and value > self.maximum):
                raise ApiError("bad_request", f"parameter {self.name!r} must be between "
                               f"{self.minimum} and {self.maximum}; got {value}")
            return value
        if self.kind == "boolean":
            if raw.lower() in ("1", "true", "yes"):
                return True
            if raw.lower() in ("0", "false", "no"):
                return False
            raise ApiError("bad_request", f"parameter {self.name!r} must be true or false")
        if self.kind == "enum" and raw not in self.choices:
            raise ApiError("bad_request", f"parameter {self.name!r} must be one of "
                           f"{', '.join(self.choices)}; got {raw[:40]!r}")
        return raw


@dataclass
class Endpoint:
    method: str
    path: str
    summary: str
    handler: Handler
    params: list[Param] = field(default_factory=list)
    body: str | None = None              # a component schema name
    responses: dict[int, str | None] = field(default_factory=dict)  # status -> schema name
    content_type: str = "application/json"  # of the 2xx answer
    public: bool = False                 # served without the API token (see auth.py)
    tag: str = "library"
    description: str = ""

    async def __call__(self, request: Request) -> Response:
        args: dict[str, Any] = {}
        for param in self.params:
            source = request.path_params if param.where == "path" else request.query_params
            args[param.name] = param.parse(source.get(param.name))
        return await self.handler(request, args)


REGISTRY: list[Endpoint] = []


def endpoint(method: str, path: str, summary: str, **kwargs: Any
             ) -> Callable[[Handler], Handler]:
    """Declare a handler; see the module docstring."""

    def wrap(fn: Handler) -> Handler:
        kwargs.setdefault("description", fn.__doc__ or "")
        REGISTRY.append(Endpoint(method, path, summary, fn, **kwargs))
        return fn

    return wrap


async def read_json(request: Request) -> dict[str, Any]:
    """The request body as a JSON object. Only `application/json` is accepted, which also
    means a cross-site page cannot send one without a CORS preflight (that we never allow)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await request.body()
    if not body and not ctype:
        return {}
    if ctype != "application/json":
        raise ApiError("unsupported_media", "send the body as JSON with "
                       "`Content-Type: application/json`")
    if len(body) > MAX_BODY_BYTES:
        raise ApiError("payload_too_large", f"the body is over {MAX_BODY_BYTES} bytes; "
                       "send fewer ids per request")
    try:
        data = orjson.loads(body) if body else {}
    except orjson.JSONDecodeError as exc:
        raise ApiError("bad_request", f"the body is not valid JSON ({exc}); fix it") from None
    if not isinstance(data, dict):
        raise ApiError("bad_request", "the body must be a JSON object, e.g. {\"ids\": [...]}")
    return data


def body_field(body: dict[str, Any], name: str, kind: type | tuple[type, ...],
               default: Any = None) -> Any:
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise ApiError("bad_request", f"body field {name!r} must be of type {names}")
    return value
