"""`kvmedia serve`: the HTTP JSON API and the search page, optionally with the watcher."""

from __future__ import annotations

import errno
import os
import socket
import sys
from typing import Any

import click

from .. import errors as E
from ..cli import EPILOG, StopOnSignal, _dumps, cli, handle_errors, json_option, open_library
from ..store.env import keep_heap_for_searches


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket, made before the server starts so the port is known (--port 0
    picks a free one) and connections made as soon as it is announced are queued."""
    try:
        family, kind, proto, _name, addr = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise E.UsageError(f"cannot resolve --host {host!r}: {exc.strerror}; give an IP "
                           "address such as 127.0.0.1") from exc
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
        sock.listen(1024)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise E.BusyError(f"port {port} on {host} is in use; stop the other server or "
                              "pick another with --port") from exc
        raise E.StorageError(f"cannot listen on {host}:{port}: {exc.strerror}; check the "
                             "address and your permissions") from exc
    return sock


def default_search_workers() -> int:
    """One search process a core the server may use; none on a single core (a worker there
    only adds a pipe hop to every search)."""
    from ..forking import usable_cores

    cores = usable_cores()
    return cores if cores >= 2 else 0


@cli.command(epilog=EPILOG)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but loopback requires the API token.")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True,
              help="Port (0: any free port, announced on start).")
@click.option("--watch", "watch_paths", multiple=True, type=click.Path(path_type=bytes),
              help="Also run the watcher on PATH in this process (repeat for several).")
@click.option("--require-token", is_flag=True,
              help="Require the API token even on loopback (also: "
                   "KVMEDIA_SERVE_REQUIRE_TOKEN=1).")
@click.option("--debounce", "debounce_s", type=click.FloatRange(min=0), default=1.5,
              show_default=True, help="Watcher debounce in seconds (with --watch).")
@click.option("--search-workers", type=click.IntRange(min=-1), default=-1,
              envvar="KVMEDIA_SERVE_SEARCH_WORKERS", show_default="one a core when there are "
              "two or more",
              help="Processes that run text searches side by side (0: in the server "
                   "process; also KVMEDIA_SERVE_SEARCH_WORKERS).")
@json_option
@handle_errors
@click.pass_context
def serve(ctx: click.Context, host: str, port: int, watch_paths: tuple[bytes, ...],
          require_token: bool, debounce_s: float, search_workers: int, as_json: bool) -> None:
    """Serve the library over HTTP: a JSON API (/api/..., described at /openapi.json), file
    downloads by share token (/f/<token>) and a search page at /.

    On loopback (the default) no token is needed. On any other address every API call
    needs `Authorization: Bearer <token>`, the token being in <data dir>/api-token (made
    on first use, mode 0600). SIGTERM / Ctrl-C stop it cleanly. With --json, a line
    {"type": "serving", "url": ...} is printed once it accepts connections.

    Example:

        kvmedia serve --port 8765 --watch /mnt/vol1
    """
    try:
        import uvicorn

        from ..serve import create_app
        from ..serve.auth import load_or_create_token, token_path, token_required
        from ..serve.watching import BackgroundWatcher
    except ImportError as exc:
        raise E.UsageError(f"kvmedia serve needs the serve extra ({exc.name} is missing); "
                           "install it with: pip install 'kvmedia[serve]'") from exc
    lib = open_library(ctx)
    watcher = None
    try:
        token = None
        if token_required(host, require_token):
            try:
                token = load_or_create_token(lib.data_dir)
            except OSError as exc:
                raise E.StorageError(f"cannot read or create {token_path(lib.data_dir)}: "
                                     f"{exc.strerror}; check the data dir") from exc
        sock = _bind(host, port)
        if watch_paths:
            watcher = BackgroundWatcher(lib, [os.path.abspath(p) for p in watch_paths],
                                        debounce_s=debounce_s)
            watcher.start()
        bound = sock.getsockname()
        shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
        info: dict[str, Any] = {"type": "serving", "host": bound[0], "port": bound[1],
                                "url": f"http://{shown}:{bound[1]}/", "pid": os.getpid(),
                                "token_required": token is not None,
                                "token_file": token_path(lib.data_dir) if token else None}

        def announce() -> None:
            if as_json:
                click.echo(_dumps(info))
            else:
                how = f"token in {info['token_file']}" if token else "no token on loopback"
                click.echo(f"kvmedia: serving {info['url']} ({how}); Ctrl-C stops", err=True)
            sys.stdout.flush()

        if search_workers < 0:
            search_workers = default_search_workers()
        if search_workers == 0:
            keep_heap_for_searches()  # this process answers the searches
        app = create_app(lib, token=token, watcher=watcher, search_workers=search_workers,
                         on_ready=announce)
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                                timeout_graceful_shutdown=3, server_header=False)
        # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal to the
        # handlers it found: these, so the clean-up below runs and the exit code is 0.
        with StopOnSignal():
            uvicorn.Server(config).run(sockets=[sock])
    finally:
        if watcher is not None:
            watcher.stop()
        lib.close()
