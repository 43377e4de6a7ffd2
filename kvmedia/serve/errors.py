"""Every error the API returns has one shape, with a stable `code` clients can branch on:

    {"error": {"code": "bad_query", "message": "...", "position": 7}}

`position` is the 0-based character offset in the `q` parameter (or `query` body field) where
a query went wrong, else null. Codes and their HTTP statuses:

    bad_request          400   a malformed parameter or body
    bad_query            400   the query text does not parse (`position` says where)
    unauthorized         401   token mode and no / a wrong `Authorization: Bearer` token
    forbidden            403   cross-site write, foreign Host header, file outside known roots
    not_found            404   unknown id, route, share token or job
    method_not_allowed   405
    conflict             409   a scan or rebuild job is already running
    payload_too_large    413
    unsupported_media    415   a body that is not `application/json`
    range_not_satisfiable 416
    busy                 503   the data dir is locked by another process
    io / damaged         500   storage trouble; the message says what to do
    not_implemented      501   a feature this build does not have yet (e.g. thumbnails)
    internal             500   a bug: the message says to report it
"""

from __future__ import annotations

import re
from typing import Any

from ..errors import (
    BusyError,
    DamagedError,
    KvmediaError,
    NotFoundError,
    StorageError,
    UsageError,
)

_QUERY_COLUMN = re.compile(r"^bad query at column (\d+):")

STATUS_BY_CODE = {
    "bad_request": 400, "bad_query": 400, "unauthorized": 401, "forbidden": 403,
    "not_found": 404, "method_not_allowed": 405, "conflict": 409, "payload_too_large": 413,
    "unsupported_media": 415, "range_not_satisfiable": 416, "internal": 500, "io": 500,
    "damaged": 500, "not_implemented": 501, "busy": 503,
}
CODES = tuple(STATUS_BY_CODE)


class ApiError(Exception):
    """An error answer: `code` from CODES, a message ending with what to do, a position."""

    def __init__(self, code: str, message: str, *, position: int | None = None,
                 headers: dict[str, str] | None = None) -> None:
        assert code in STATUS_BY_CODE, code
        super().__init__(message)
        self.code = code
        self.message = message
        self.position = position
        self.headers = headers or {}

    @property
    def status(self) -> int:
        return STATUS_BY_CODE[self.code]

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message,
                          "position": self.position}}


def query_position(exc: KvmediaError) -> int | None:
    """The 0-based offset of a query parse error (the parser reports a 1-based column)."""
    position = getattr(exc, "position", None)
    if isinstance(position, int):
        return position
    match = _QUERY_COLUMN.match(exc.message)
    return int(match.group(1)) - 1 if match else None


def from_library(exc: KvmediaError) -> ApiError:
    """Map a library error to the API's codes."""
    if isinstance(exc, NotFoundError):
        return ApiError("not_found", exc.message)
    if isinstance(exc, UsageError):
        position = query_position(exc)
        if position is not None:
            return ApiError("bad_query", exc.message, position=position)
        return ApiError("bad_request", exc.message)
    if isinstance(exc, BusyError):
        return ApiError("busy", exc.message)
    if isinstance(exc, DamagedError):
        return ApiError("damaged", exc.message)
    if isinstance(exc, StorageError):
        return ApiError("io", exc.message)
    return ApiError("bad_request", exc.message)


def item_error(exc: KvmediaError) -> dict[str, Any]:
    """The `error` object of one failed item in a batch."""
    return from_library(exc).body()["error"]


def internal(exc: Exception) -> ApiError:
    """The answer to an unexpected exception: a bug, named so it can be reported."""
    return ApiError("internal", f"{type(exc).__name__}: {exc}; this is a bug, please report "
                    "it with the server log")


def not_implemented(feature: str, fix: str) -> ApiError:
    return ApiError("not_implemented", f"{feature} is not available in this kvmedia; {fix}")
