"""`kvmedia watch`, `notify`, `status`, `events`: the watcher daemon and what it tells."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import click

from .. import errors as E
from ..cli import EPILOG, _dumps, cli, emit_json, handle_errors, json_option, open_library


@cli.command(epilog=EPILOG)
@click.argument("paths", nargs=-1, type=click.Path(path_type=bytes))
@click.option("--debounce", "debounce_s", type=click.FloatRange(min=0), default=1.5,
              show_default=True, help="Seconds a path must be quiet before it is applied.")
@click.option("--settle", "settle_s", type=click.FloatRange(min=0), default=None,
              help="Seconds a file must stay untouched before it is indexed (plus 2 s per "
                   "GiB). Default: the debounce.")
@click.option("--poll", "poll_s", type=click.FloatRange(min=0.05), default=None,
              help="No inotify: sweep the roots every SECONDS (network mounts).")
@click.option("--sweep", "sweep_s", type=click.FloatRange(min=0.05), default=30.0,
              show_default=True, help="Sweep interval for roots inotify cannot cover.")
@click.option("--no-scan", is_flag=True, help="Skip the scan-on-start (not recommended).")
@click.option("--daemon", is_flag=True, help="Detach and run in the background.")
@click.option("--analyze/--no-analyze", default=None,
              help="Analyze and embed new files in the background, at low priority "
                   "(default: the watch.analyze setting, yes).")
@click.option("--state-interval", "state_interval_s", type=click.FloatRange(min=0.01),
              default=2.0, hidden=True)
@click.option("--watch-budget", type=click.IntRange(min=0), default=None, hidden=True)
@click.option("--log-max-bytes", type=click.IntRange(min=1024), default=None, hidden=True)
@handle_errors
@click.pass_context
def watch(ctx: click.Context, paths: tuple[bytes, ...], debounce_s: float,
          settle_s: float | None, poll_s: float | None, sweep_s: float, no_scan: bool,
          daemon: bool, analyze: bool | None, state_interval_s: float,
          watch_budget: int | None, log_max_bytes: int | None) -> None:
    """Keep the library fresh: watch PATHS (default: the known scan roots) until stopped.

    Starts with an incremental scan that catches up on changes made while no watcher ran,
    then applies file-system events in debounced batches. One watcher per data dir: a
    second one exits with code 4. SIGTERM/SIGINT finish the batch in hand and exit 0.
    State is in <data dir>/state.json (`kvmedia status`), logs in <data dir>/logs/.

    Example:

        kvmedia watch /mnt/vol1 /mnt/vol2 --debounce 1.5
    """
    from ..watch import Watcher, WatchOptions

    options = WatchOptions(paths=list(paths), debounce_s=debounce_s, settle_s=settle_s,
                           poll_s=poll_s, sweep_s=sweep_s, scan_on_start=not no_scan,
                           state_interval_s=state_interval_s, watch_budget=watch_budget)
    if log_max_bytes:
        options.log_max_bytes = log_max_bytes
    lib = open_library(ctx)
    options.analyze = analyze if analyze is not None else lib.config["watch.analyze"] == "yes"
    if daemon:
        _daemonize(lib.data_dir)
    try:
        code = Watcher(lib, options).run()
    finally:
        lib.close()
    sys.exit(code)


def _daemonize(data_dir: str) -> None:
    """Double fork; the parent returns only to exit once the child holds the lock."""
    from ..lockfile import DataDirLock, holder_pid, is_locked

    probe = DataDirLock(data_dir)
    probe.acquire()  # refuse now, in the foreground, when a watcher already runs
    probe.release()
    pid = os.fork()
    if pid > 0:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if is_locked(data_dir):
                click.echo(f"kvmedia: watcher started (pid {holder_pid(probe.path)})", err=True)
                sys.exit(0)
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.05)
        click.echo("kvmedia: error: the watcher did not start; see "
                   f"{os.path.join(data_dir, 'logs', 'watcher.err.log')}", err=True)
        sys.exit(E.EXIT_IO)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


@cli.command(epilog=EPILOG)
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=bytes))
@click.option("--no-wait", is_flag=True,
              help="Return once the watcher has queued the paths, before they are applied.")
@json_option
@handle_errors
@click.pass_context
def notify(ctx: click.Context, paths: tuple[bytes, ...], no_wait: bool, as_json: bool) -> None:
    """Tell the library that PATHS changed (files, folders, or paths now gone).

    The running watcher applies them at once (no debounce); with no watcher running they
    are applied directly. When the command returns, every process sees the change. For NAS
    firmware: Samba VFS hooks, rsync post-scripts, upload handlers.

    Example:

        kvmedia notify /mnt/vol/photos/2024/IMG_0001.jpg /mnt/vol/old-folder
    """
    from ..config import Config
    from ..watch.notify import send_notify

    absolute = [os.path.abspath(p) for p in paths]
    data_dir = Config({"data_dir": ctx.find_root().obj.get("data_dir")})["data_dir"]
    reply = None
    if os.path.isdir(data_dir):
        try:
            reply = send_notify(os.path.abspath(data_dir), absolute, wait=not no_wait)
        except TimeoutError as exc:
            raise E.BusyError("the watcher did not answer in time; it may be busy with a "
                              "long scan: retry, or see `kvmedia status`") from exc
    if reply is not None:
        if not reply.get("ok"):
            raise E.StorageError(f"the watcher refused: {reply.get('error')}; see its log")
        out: dict[str, Any] = {"type": "notify", "via": "watcher", "paths": len(paths),
                               "applied": bool(reply.get("applied"))}
    else:
        lib = open_library(ctx)
        stats = lib.upsert_paths(absolute)
        out = {"type": "notify", "via": "direct", "paths": len(paths), "applied": True, **stats}
    if as_json:
        emit_json(out)
    else:
        how = "applied" if out["applied"] else "queued"
        click.echo(f"{len(paths)} path(s) {how} via {out['via']}", err=True)


@cli.command(epilog=EPILOG)
@json_option
@handle_errors
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Show the watcher's state (from state.json) and whether it is running.

    Exit code 0 when a watcher runs, 1 when none does.

    Example:

        kvmedia status --json
    """
    from ..config import Config
    from ..lockfile import is_locked
    from ..watch.runlog import read_state

    data_dir = os.path.abspath(Config({"data_dir": ctx.find_root().obj.get("data_dir")})[
        "data_dir"])
    state = read_state(data_dir) or {}
    locked = is_locked(data_dir)
    pid = state.get("pid")
    alive = bool(pid) and _pid_alive(int(pid))
    running = locked and alive
    if as_json:
        emit_json({"type": "status", "running": running, "pid_alive": alive,
                   "locked": locked, "data_dir": data_dir, "state": state or None})
    else:
        click.echo(f"watcher: {'running' if running else 'not running'}"
                   + (f" (pid {pid})" if pid else "") + f" on {data_dir}")
        for key, value in state.items():
            click.echo(f"{key:>20}: {value}")
    if not running:
        sys.exit(E.EXIT_NO_RESULTS)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@cli.command(epilog=EPILOG)
@click.option("--since", "since", type=click.IntRange(min=0), default=0, show_default=True,
              help="Cursor: the seq of the last entry already consumed (0: from the start).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most N entries.")
@click.option("--cursor", "cursor_only", is_flag=True,
              help="Only print the current cursor (to start following from now).")
@json_option
@handle_errors
@click.pass_context
def events(ctx: click.Context, since: int, limit: int | None, cursor_only: bool,
           as_json: bool) -> None:
    """Print the change feed after a cursor: added, modified, moved, trashed, restored,
    deleted, offline.

    Each entry has a `seq`; pass the last one you consumed as --since next time. When the
    cursor is older than the oldest kept entry (the feed is bounded), the first line is an
    entry with op "gap": resync from `kvmedia list`, then apply the entries that follow.
    Exit 0 even when there is nothing new.

    Example:

        kvmedia events --since 1200 --json
    """
    from ..pathbytes import display, get_field

    lib = open_library(ctx)
    page = lib.events(since, limit)
    if cursor_only:
        out = {"type": "cursor", "cursor": page.latest, "oldest": page.oldest}
        click.echo(_dumps(out) if as_json else str(page.latest))
        return
    if page.gap:
        gap = {"seq": page.oldest - 1, "op": "gap", "oldest": page.oldest,
               "message": f"entries {since + 1}..{page.oldest - 1} were dropped (the feed is "
                          "bounded): resync from a full listing (`kvmedia list --json`), "
                          "then apply the entries that follow"}
        click.echo(_dumps(gap) if as_json else f"gap: {gap['message']}")
    for entry in page.entries:
        if as_json:
            emit_json(entry)
            continue
        line = f"{entry['seq']:>8}  {entry['at']}  {entry['op']:<9} "
        line += display(get_field(entry, "path"))
        if entry["op"] == "moved":
            line += f"  (from {display(get_field(entry, 'from'))})"
        if entry["op"] == "offline":
            line += f"  ({entry.get('reason')})"
        click.echo(line)
