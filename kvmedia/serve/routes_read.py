"""Read endpoints: search, listings, counts, items, buckets, the change feed, status, similar
items and thumbnails. Each parses its parameters (endpoints.Param), makes one Library call on
the thread pool and answers JSON."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from .. import __version__
from ..records import MEDIA_TYPES
from .context import blocking, cpu_bound, has_semantic, server
from .endpoints import Param, endpoint
from .errors import ApiError, not_implemented
from .files import thumbnail_response
from .responses import ok, raw_json
from .searchers import search_body, search_json

LIST_TYPES = (*MEDIA_TYPES, "all")
LIST_SORTS = ("mod", "moddesc", "name", "namedesc", "size", "sizedesc")
SEARCH_SORTS = ("relevance", *LIST_SORTS)
MAX_PAGE = 1000

TYPE = Param("type", "enum", "Media type (all: every type).", default="all", choices=LIST_TYPES)
LIMIT = Param("limit", "integer", "At most this many items.", default=50, minimum=0,
              maximum=MAX_PAGE)
OFFSET = Param("offset", "integer", "Skip this many items first.", default=0, minimum=0)
ITEM_ID = Param("id", description="The record's uuid.", required=True, where="path")


def is_uuid(text: str) -> bool:
    return len(text) == 36 and text.count("-") == 4 and all(
        c in "0123456789abcdef-" for c in text.lower())


def unknown_id(item_id: str) -> ApiError:
    return ApiError("not_found", f"no record with id {item_id[:64]!r}; search for the file "
                    "again, it may have been deleted or rescanned away")


async def get_record(request: Request, item_id: str) -> dict[str, Any]:
    if not is_uuid(item_id):
        raise unknown_id(item_id)
    rec = await blocking(server(request).lib.get, item_id.lower())
    if rec is None:
        raise unknown_id(item_id)
    return rec


def scored_json(result: Any) -> dict[str, Any]:
    """A semantic / hybrid / similar result: each hit carries its `score`."""
    out = search_json(result)
    out["hits"] = [{**rec, "score": round(float(score), 6)}
                   for rec, score in zip(result.hits, result.scores, strict=True)]
    return out


@endpoint("GET", "/api/search", "Search names and paths", responses={200: "SearchResult"},
          params=[
              Param("q", description="The query (grammar: kvmedia/search/query.py), e.g. "
                    "`beach 2023 -draft type:image size:>1M`.", default=""),
              Param("type", "enum", "Only this media type.", choices=LIST_TYPES),
              Param("trash", "enum", "Trashed items, live ones (default) or both.",
                    choices=("true", "false", "any")),
              Param("path", description="Only under these folders, separated by `|`."),
              Param("sort", "enum", "Order of the hits.", default="relevance",
                    choices=SEARCH_SORTS),
              LIMIT, OFFSET,
              Param("mode", "enum", "text (names and paths), semantic (by meaning, from "
                    "the embedded descriptions) or hybrid (both, fused by rank).",
                    default="text", choices=("text", "semantic", "hybrid")),
          ])
async def search(request: Request, args: dict[str, Any]) -> Response:
    """Same language, filters, sort and paging as `kvmedia search`. A query that does not
    parse is answered 400 `bad_query` with the offending `position` in `q`."""
    lib = server(request).lib
    trash = {"true": True, "false": False, "any": None, None: "keep"}[args["trash"]]
    options = {"media_type": args["type"], "trash": trash, "path_prefix": args["path"],
               "limit": args["limit"], "offset": args["offset"]}
    if args["mode"] == "text":
        pool = server(request).searchers
        body = await pool.search(args["q"], args["sort"], options) if pool else None
        if body is None:  # no worker processes (or the one asked died): search here
            body = await cpu_bound(search_body, lib, args["q"], args["sort"], options)
        return raw_json(body)
    if not has_semantic(lib):
        raise not_implemented(f"{args['mode']} search", "use mode=text")
    if args["sort"] != "relevance":
        raise ApiError("bad_request", f"sort={args['sort']} applies to mode=text only; "
                       f"{args['mode']} results come nearest first")
    run = lib.semantic.search if args["mode"] == "semantic" else lib.semantic.hybrid
    return ok(scored_json(await cpu_bound(run, args["q"], **options)))


@endpoint("GET", "/api/media", "List records of a type in one of six orders",
          params=[TYPE, Param("trash", "boolean", "List trashed items instead.", default=False),
                  Param("sort", "enum", "Order.", default="moddesc", choices=LIST_SORTS),
                  LIMIT, OFFSET],
          responses={200: "MediaList"})
async def media(request: Request, args: dict[str, Any]) -> Response:
    """Served from the type keys: any page of any order costs the same."""
    lib = server(request).lib

    def page() -> dict[str, Any]:
        items = lib.list_media(media_type=args["type"], trash=args["trash"], sort=args["sort"],
                               limit=args["limit"], offset=args["offset"])
        total = lib.count(media_type=args["type"], trash=args["trash"])
        return {"total": total, "offset": args["offset"], "limit": args["limit"],
                "sort": args["sort"], "items": items}

    return ok(await cpu_bound(page))


@endpoint("GET", "/api/count", "Count records of a type",
          params=[TYPE, Param("trash", "boolean", "Count trashed items.", default=False)],
          responses={200: "Count"})
async def count(request: Request, args: dict[str, Any]) -> Response:
    n = await cpu_bound(server(request).lib.count, media_type=args["type"], trash=args["trash"])
    return ok({"type": args["type"], "trash": args["trash"], "count": n})


@endpoint("GET", "/api/items/{id}", "One record by id", params=[ITEM_ID],
          responses={200: "Record", 404: "Error"})
async def item(request: Request, args: dict[str, Any]) -> Response:
    return ok(await get_record(request, args["id"]))


@endpoint("GET", "/api/buckets", "Folders holding media (buckets), newest first",
          params=[Param("type", "enum", "Only folders holding this type.", choices=LIST_TYPES)],
          responses={200: "Buckets"})
async def buckets(request: Request, args: dict[str, Any]) -> Response:
    rows = await blocking(server(request).lib.buckets, args["type"])
    return ok({"buckets": rows})


@endpoint("GET", "/api/events", "The change feed after a cursor",
          params=[Param("since", "integer", "The seq of the last entry already consumed.",
                        default=0, minimum=0),
                  Param("limit", "integer", "At most this many entries.", default=1000,
                        minimum=1, maximum=10000)],
          responses={200: "FeedPage"})
async def events(request: Request, args: dict[str, Any]) -> Response:
    """`gap: true` means entries after `since` were dropped: resync from /api/media, then
    continue from `oldest - 1`."""
    page = await blocking(server(request).lib.events, args["since"], args["limit"])
    return ok(dataclasses.asdict(page))


@endpoint("GET", "/api/status", "Library counts, roots, watcher, current job, features",
          responses={200: "Status"})
async def status(request: Request, args: dict[str, Any]) -> Response:
    state = server(request)
    stats = await blocking(state.lib.stats)
    watcher = await blocking(state.watcher.status) if state.watcher is not None else None
    pool = state.searchers
    workers = None if pool is None else {"size": pool.size, "alive": pool.alive,
                                         "pids": pool.pids(), "started": pool.started,
                                         "lost": pool.lost}
    return ok({"version": __version__, "pid": os.getpid(), "token_required":
               state.token_required, "features": state.features(), "stats": stats,
               "watcher": watcher, "job": state.jobs.snapshot(), "search_workers": workers})


@endpoint("GET", "/api/items/{id}/similar", "Items like this one, nearest first",
          params=[ITEM_ID, Param("q", description="Filters and words that must also match, "
                                 "e.g. `type:image`.", default=""),
                  Param("limit", "integer", "At most this many items.", default=20, minimum=0,
                        maximum=MAX_PAGE), OFFSET],
          responses={200: "SearchResult", 404: "Error", 501: "Error"})
async def similar(request: Request, args: dict[str, Any]) -> Response:
    """By the items' embeddings: 404 when this item has none yet (`kvmedia embed`)."""
    lib = server(request).lib
    if not has_semantic(lib):
        raise not_implemented("similar-item search", "it needs the semantic-search support")
    rec = await get_record(request, args["id"])
    result = await blocking(lib.semantic.similar, rec["uuid"], args["q"], limit=args["limit"],
                            offset=args["offset"])
    return ok(scored_json(result))


@endpoint("GET", "/api/items/{id}/thumbnail", "A small preview image of the item",
          params=[ITEM_ID], content_type="image/*",
          responses={200: None, 404: "Error", 501: "Error"})
async def thumbnail(request: Request, args: dict[str, Any]) -> Response:
    """501 `not_implemented` where this build makes no thumbnails: show a placeholder."""
    lib = server(request).lib
    if not callable(getattr(lib, "thumbnail", None)):
        raise not_implemented("thumbnails", "show a placeholder; thumbnails come with "
                              "`kvmedia thumbs`")
    rec = await get_record(request, args["id"])
    try:
        data = await blocking(lib.thumbnail, rec["uuid"])
    except ApiError as err:
        if err.code in ("busy", "io", "damaged"):
            raise
        data = None  # the media could not be read: the same as having no thumbnail
    return thumbnail_response(request, data)
