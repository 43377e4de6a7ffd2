"""The OpenAPI 3.1 document served at `/openapi.json`, made from the route table
(endpoints.REGISTRY) and the answer shapes below."""

from __future__ import annotations

from typing import Any

from .. import __version__
from .errors import CODES
from .jobs import JOB_KINDS

OBJ: dict[str, Any] = {"type": "object"}
RECORD_REF = {"$ref": "#/components/schemas/Record"}
ERROR_OBJ = {"type": "object", "required": ["code", "message", "position"], "properties": {
    "code": {"type": "string", "enum": list(CODES)}, "message": {"type": "string"},
    "position": {"type": ["integer", "null"],
                 "description": "0-based offset in the query text, for bad_query"}}}
JOB = {"type": "object", "required": ["id", "kind", "state", "version"], "properties": {
    "id": {"type": "integer"}, "kind": {"type": "string", "enum": list(JOB_KINDS)},
    "state": {"type": "string", "enum": ["running", "stopping", "done", "stopped", "failed"]},
    "started_at": {"type": "string"}, "finished_at": {"type": ["string", "null"]},
    "progress": OBJ, "result": {}, "error": {"oneOf": [ERROR_OBJ, {"type": "null"}]},
    "version": {"type": "integer"}}}

SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": ERROR_OBJ}},
    "Record": {"type": "object", "required": ["uuid", "type"], "additionalProperties": True,
               "description": "A media record; a path that is not UTF-8 is given as "
                              "`path_bytes` (base64) instead of `path` (same for name).",
               "properties": {"uuid": {"type": "string"}, "path": {"type": "string"},
                              "name": {"type": "string"}, "type": {"type": "string"},
                              "size": {"type": "integer"}, "mtime": {"type": "number"},
                              "is_trash": {"type": "boolean"}}},
    "SearchResult": {"type": "object", "required": ["total", "hits"], "properties": {
        "total": {"type": "integer"}, "offset": {"type": "integer"},
        "limit": {"type": ["integer", "null"]}, "sort": {"type": "string"},
        "mode": {"type": "string"}, "ms": {"type": "number"},
        "hits": {"type": "array", "items": RECORD_REF}}},
    "MediaList": {"type": "object", "required": ["total", "items"], "properties": {
        "total": {"type": "integer"}, "offset": {"type": "integer"},
        "limit": {"type": "integer"}, "sort": {"type": "string"},
        "items": {"type": "array", "items": RECORD_REF}}},
    "Count": {"type": "object", "required": ["count"], "properties": {
        "type": {"type": "string"}, "trash": {"type": "boolean"},
        "count": {"type": "integer"}}},
    "Buckets": {"type": "object", "required": ["buckets"], "properties": {
        "buckets": {"type": "array", "items": OBJ}}},
    "FeedPage": {"type": "object", "required": ["entries", "cursor"], "properties": {
        "entries": {"type": "array", "items": OBJ}, "cursor": {"type": "integer"},
        "oldest": {"type": "integer"}, "latest": {"type": "integer"},
        "gap": {"type": "boolean"}}},
    "Status": {"type": "object", "required": ["version", "features", "stats"], "properties": {
        "version": {"type": "string"}, "pid": {"type": "integer"},
        "token_required": {"type": "boolean"},
        "features": {"type": "object", "additionalProperties": {"type": "boolean"}},
        "stats": OBJ, "watcher": {"oneOf": [OBJ, {"type": "null"}]},
        "job": {"oneOf": [JOB, {"type": "null"}]}}},
    "Batch": {"type": "object", "description": "Either ids or a query.", "properties": {
        "ids": {"type": "array", "items": {"type": "string"}, "maxItems": 10000},
        "query": {"type": "string"}, "type": {"type": "string"}, "path": {"type": "string"},
        "limit": {"type": "integer", "minimum": 0, "maximum": 10000}}},
    "BatchResult": {"type": "object", "required": ["ok", "failed", "results"], "properties": {
        "verb": {"type": "string"}, "ok": {"type": "integer"}, "failed": {"type": "integer"},
        "matched": {"type": ["integer", "null"]},
        "results": {"type": "array", "items": {"type": "object", "properties": {
            "id": {"type": "string"}, "ok": {"type": "boolean"}, "record": RECORD_REF,
            "error": ERROR_OBJ}}},
        "error": ERROR_OBJ}},
    "Probe": {"type": "object", "required": ["ids"], "properties": {
        "ids": {"type": "array", "items": {"type": "string"}, "maxItems": 500},
        "force": {"type": "boolean"}}},
    "Summary": OBJ,
    "Share": {"type": "object", "required": ["token", "url"], "properties": {
        "id": {"type": "string"}, "token": {"type": "string"}, "url": {"type": "string"}}},
    "Scan": {"type": "object", "properties": {
        "paths": {"type": "array", "items": {"type": "string"}},
        "force": {"type": "boolean"}}},
    "JobStarted": {"type": "object", "required": ["job"], "properties": {"job": JOB}},
    "JobState": {"type": "object", "required": ["job"], "properties": {
        "job": {"oneOf": [JOB, {"type": "null"}]}}},
}


def _answer(status: int, schema: str | None, content_type: str) -> dict[str, Any]:
    desc = {200: "OK", 202: "Accepted", 206: "Partial content", 304: "Not modified",
            400: "Bad request or bad query", 403: "Forbidden", 404: "Not found",
            409: "A job is already running", 416: "Range not satisfiable",
            501: "Not implemented in this build"}.get(status, "Answer")
    out: dict[str, Any] = {"description": desc}
    if status == 304:
        return out
    if schema is not None:
        out["content"] = {"application/json": {"schema": {"$ref":
                                                          f"#/components/schemas/{schema}"}}}
    else:
        out["content"] = {content_type: {"schema": {"type": "string", "format": "binary"}}}
    return out


def document(endpoints: list[Any], *, token_required: bool) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for ep in endpoints:
        op: dict[str, Any] = {
            "operationId": ep.handler.__name__, "summary": ep.summary, "tags": [ep.tag],
            "responses": {str(s): _answer(s, schema, ep.content_type)
                          for s, schema in (ep.responses or {200: None}).items()},
        }
        description = " ".join(ep.description.split())
        if description:
            op["description"] = description
        if ep.params:
            op["parameters"] = [{"name": p.name, "in": p.where, "required": p.required or
                                 p.where == "path", "description": p.description or p.name,
                                 "schema": p.schema()} for p in ep.params]
        if ep.body:
            op["requestBody"] = {"required": False, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{ep.body}"}}}}
        if ep.public:
            op["security"] = []
        op["responses"].setdefault("401", {"description": "Token mode: missing or wrong "
                                           "bearer token", "content": {"application/json": {
                                               "schema": {"$ref": "#/components/schemas/Error"
                                                          }}}})
        paths.setdefault(ep.path, {})[ep.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "kvmedia", "version": __version__,
                 "description": "The media library over HTTP. Errors are "
                                "{\"error\": {\"code\", \"message\", \"position\"}}."
                                + (" Token mode: send `Authorization: Bearer <token>` "
                                   "(<data dir>/api-token)." if token_required else "")},
        "paths": paths,
        "components": {"schemas": SCHEMAS, "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}] if token_required else [],
    }
