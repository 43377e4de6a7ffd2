"""`kvmedia serve`: the library over HTTP (JSON API, OpenAPI document, a search page).

    app.py          create_app(lib, token=...): routes, guard, error shape, lifespan
    endpoints.py    the route table: handlers declared with their parameters and answers
    routes_read.py  search, media, count, items, buckets, events, status, similar, thumbnail
    routes_ops.py   trash / restore / delete, probe, share, scan + rebuild jobs, /f/<token>
    jobs.py         one background job at a time, its progress for polling and SSE
    watching.py     the watcher daemon on a thread of the server (`--watch`)
    auth.py         loopback vs token mode, <data_dir>/api-token, cross-site write refusal
    errors.py       {"error": {"code", "message", "position"}} and the stable codes
    files.py        opening a file inside its root; streaming it with ranges
    ranges.py       Range header parsing and content types (pure)
    openapi.py      the OpenAPI 3.1 document made from the route table
    static/         index.html, the page (plain HTML + JS)

Needs the `serve` extra (Starlette, uvicorn). Import direction: commands -> serve -> watch ->
library; handlers call only `Library` methods, on the thread pool.
"""

from .app import create_app

__all__ = ["create_app"]
