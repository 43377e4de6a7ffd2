"""Write endpoints and downloads: trash / restore / delete in batches, probe, share links,
scan and rebuild-index jobs with their progress, and `GET /f/<token>`."""

from __future__ import annotations

import threading
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ..pathbytes import get_field
from .context import blocking, cpu_bound, server
from .endpoints import Param, body_field, endpoint, read_json
from .errors import ApiError, item_error
from .files import FileResponse, open_in_roots
from .responses import NO_STORE, dumps, ok
from .routes_read import ITEM_ID, get_record, is_uuid

MAX_BATCH = 10_000
MAX_PROBE = 500
BATCH_VERBS = {  # verb -> trash filter used when the batch is chosen by a query
    "trash": False, "restore": True, "delete": "keep"}


def _ids(body: dict[str, Any], limit: int) -> list[str] | None:
    ids = body_field(body, "ids", list)
    if ids is None:
        return None
    if len(ids) > limit:
        raise ApiError("payload_too_large", f"{len(ids)} ids in one request; send at most "
                       f"{limit} per request")
    bad = [i for i in ids if not isinstance(i, str) or not is_uuid(i)]
    if bad:
        raise ApiError("bad_request", f"{str(bad[0])[:64]!r} is not a record id (a uuid); "
                       "send the `uuid` of each item")
    return [i.lower() for i in ids]


async def _batch(request: Request, verb: str) -> Response:
    lib = server(request).lib
    body = await read_json(request)
    ids = _ids(body, MAX_BATCH)
    query = body_field(body, "query", str)
    if (ids is None) == (query is None):
        raise ApiError("bad_request", 'send either "ids": [uuid, ...] or "query": "..." '
                       "(with optional type, path, limit)")
    if query is not None:
        limit = body_field(body, "limit", int, 1000)
        if not 0 <= limit <= MAX_BATCH:
            raise ApiError("bad_request", f"limit must be between 0 and {MAX_BATCH}")
        result = await cpu_bound(lib.search, query, media_type=body_field(body, "type", str),
                                 trash=BATCH_VERBS[verb],
                                 path_prefix=body_field(body, "path", str),
                                 sort="relevance", limit=limit)
        ids = [rec["uuid"] for rec in result.hits]
        matched: int | None = result.total
    else:
        matched = None
    results = await blocking(getattr(lib, verb), ids)
    rows = []
    for item in results:
        if item.ok:
            rows.append({"id": item.ref, "ok": True, "record": item.record})
        else:
            rows.append({"id": item.ref, "ok": False, "error": item_error(item.error)})
    done = sum(1 for r in rows if r["ok"])
    out = {"verb": verb, "ok": done, "failed": len(rows) - done, "matched": matched,
           "results": rows}
    if rows and not done:  # nothing worked: answer with the first item's error
        first = rows[0]["error"]
        err = ApiError(first["code"], first["message"])
        return ok({**out, "error": first}, status=err.status)
    return ok(out)


_BATCH_DOC = ('Body: {"ids": [uuid, ...]} or {"query": "...", "type": ..., "path": ..., '
              '"limit": 1000}. One result per item; 200 when any item succeeded, else the '
              "first item's error status. By query, `matched` is the query's total: when it "
              "exceeds `limit`, send the request again for the rest.")


@endpoint("POST", "/api/trash", "Move items to their volume's trash", body="Batch",
          responses={200: "BatchResult", 400: "Error", 404: "BatchResult"},
          description=_BATCH_DOC)
async def trash(request: Request, args: dict[str, Any]) -> Response:
    return await _batch(request, "trash")


@endpoint("POST", "/api/restore", "Put trashed items back", body="Batch",
          responses={200: "BatchResult", 400: "Error", 404: "BatchResult"},
          description=_BATCH_DOC)
async def restore(request: Request, args: dict[str, Any]) -> Response:
    return await _batch(request, "restore")


@endpoint("POST", "/api/delete", "Delete items and their files permanently", body="Batch",
          responses={200: "BatchResult", 400: "Error", 404: "BatchResult"},
          description=_BATCH_DOC)
async def delete(request: Request, args: dict[str, Any]) -> Response:
    return await _batch(request, "delete")


@endpoint("POST", "/api/probe", "Fill metadata (duration, dimensions, tags) of items",
          body="Probe", responses={200: "Summary", 404: "Error"})
async def probe(request: Request, args: dict[str, Any]) -> Response:
    """Body: {"ids": [uuid, ...] (at most 500), "force": false}. Probing the whole library is
    long: use `kvmedia probe --all` for that."""
    body = await read_json(request)
    ids = _ids(body, MAX_PROBE)
    if not ids:
        raise ApiError("bad_request", 'send "ids": [uuid, ...] (at most 500)')
    lib = server(request).lib
    summary = await blocking(lib.probe, ids, force=bool(body_field(body, "force", bool, False)))
    return ok(summary.to_json())


@endpoint("POST", "/api/items/{id}/share", "A share link for the file", params=[ITEM_ID],
          responses={200: "Share", 404: "Error"})
async def share(request: Request, args: dict[str, Any]) -> Response:
    """The token opens `GET /f/<token>` for anyone holding it (no API token needed)."""
    rec = await get_record(request, args["id"])
    token = await blocking(server(request).lib.share_id, rec["uuid"])
    return ok({"id": rec["uuid"], "token": token, "url": f"/f/{token}"})


def _paths(body: dict[str, Any]) -> list[bytes] | None:
    paths = body_field(body, "paths", list)
    if not paths:
        return None
    if not all(isinstance(p, str) and p.startswith("/") for p in paths):
        raise ApiError("bad_request", '"paths" must be absolute paths, e.g. ["/mnt/vol1"]')
    return [p.encode("utf-8", "surrogateescape") for p in paths]


def _summaries(out: Any) -> Any:
    return [s.to_json() for s in out]


@endpoint("POST", "/api/scan", "Start a scan (a background job)", body="Scan",
          responses={202: "JobStarted", 400: "Error", 409: "Error"})
async def scan(request: Request, args: dict[str, Any]) -> Response:
    """Body: {"paths": ["/mnt/vol1"], "force": false}; no paths: every known root. Follow it
    with GET /api/job (polling) or GET /api/job/events (server-sent events)."""
    state = server(request)
    body = await read_json(request)
    paths = _paths(body)
    force = bool(body_field(body, "force", bool, False))
    if paths is None:
        roots = await blocking(state.lib.roots)
        paths = [p for p in (get_field(r, "path") for r in roots) if p]
        if not paths:
            raise ApiError("bad_request", 'no volume was scanned yet; send "paths": [...]')

    def work(progress: Any, stop: threading.Event) -> Any:
        return state.lib.scan(paths, progress=progress, stop=stop, force=force)

    return ok({"job": state.jobs.start("scan", work, _summaries)}, status=202)


@endpoint("POST", "/api/rebuild-index", "Rescan and write the search index again (a job)",
          body="Scan", responses={202: "JobStarted", 409: "Error"})
async def rebuild_index(request: Request, args: dict[str, Any]) -> Response:
    """Searches keep answering from the old index until the new one is switched in."""
    state = server(request)
    paths = _paths(await read_json(request))

    def work(progress: Any, stop: threading.Event) -> Any:
        return state.lib.rebuild_index(paths, progress=progress, stop=stop)

    def to_json(out: dict[str, Any]) -> Any:
        return {"scans": _summaries(out["scans"]), "index": out["index"].to_json()}

    return ok({"job": state.jobs.start("rebuild-index", work, to_json)}, status=202)


@endpoint("GET", "/api/job", "The current or last job (polling)", responses={200: "JobState"})
async def job(request: Request, args: dict[str, Any]) -> Response:
    return ok({"job": server(request).jobs.snapshot()})


@endpoint("POST", "/api/job/stop", "Stop the running job at its next safe point",
          responses={200: "JobStarted", 404: "Error"})
async def job_stop(request: Request, args: dict[str, Any]) -> Response:
    return ok({"job": server(request).jobs.stop()})


@endpoint("GET", "/api/job/events", "Progress of the current job as server-sent events",
          content_type="text/event-stream", responses={200: None})
async def job_events(request: Request, args: dict[str, Any]) -> Response:
    """`event: progress` with the job JSON on each change, `event: done` once it finished
    (then the stream ends); `event: idle` with `null` when no job was ever started."""
    state = server(request)

    async def stream() -> Any:
        seen = -1
        idle_s = 0.0
        while True:
            snap = state.jobs.snapshot()
            if snap is None:
                yield b"event: idle\ndata: null\n\n"
                return
            if snap["state"] in ("done", "stopped", "failed"):
                yield b"event: done\ndata: " + dumps(snap) + b"\n\n"
                return
            if snap["version"] != seen:
                seen = snap["version"]
                idle_s = 0.0
                yield b"event: progress\ndata: " + dumps(snap) + b"\n\n"
            elif idle_s >= 15.0:
                idle_s = 0.0
                yield b": keep-alive\n\n"
            await anyio.sleep(state.sse_interval_s)
            idle_s += state.sse_interval_s

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={**NO_STORE, "x-accel-buffering": "no"})


@endpoint("GET", "/f/{token}", "Download a shared file (HTTP range requests supported)",
          params=[Param("token", description="A share token from POST /api/items/{id}/share.",
                        required=True, where="path")],
          content_type="application/octet-stream", public=True, tag="files",
          responses={200: None, 206: None, 304: None, 403: "Error", 404: "Error", 416: "Error"})
async def download(request: Request, args: dict[str, Any]) -> Any:
    """Content type by extension; only regular files inside a scanned volume; HEAD gives the
    headers alone. A share token is a capability: no API token is needed."""
    lib = server(request).lib
    try:
        rec = await blocking(lib.resolve_share, args["token"])
    except ApiError as err:  # a malformed or forged token is simply not found
        if err.code != "bad_request":
            raise
        raise ApiError("not_found", err.message) from None
    path = get_field(rec, "path") or b""
    roots = await blocking(lib.roots)
    root_paths = [p for p in (get_field(r, "path") for r in roots) if p]
    fd, st = await blocking(open_in_roots, path, root_paths)
    return FileResponse(request, fd, st, get_field(rec, "name") or path.rsplit(b"/", 1)[-1])
