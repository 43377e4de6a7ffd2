"""The `kvmedia` command. Each command parses, makes one Library call, renders.

Stdout is data (tables, or JSON lines with --json); stderr is talk (progress, warnings,
errors). Exit codes: 0 ok, 1 no results, 2 usage/bad input, 3 not found, 4 busy/locked,
5 I/O or storage error, 6 damaged data, 130 interrupted.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import click

from . import errors as E

F = TypeVar("F", bound=Callable[..., Any])

EPILOG = """\b
Exit codes: 0 ok, 1 no results, 2 usage error or bad input, 3 not found,
4 busy (locked by another process), 5 I/O or storage error, 6 damaged data,
130 interrupted (Ctrl-C / SIGTERM; committed work is kept).
Data dir: --data-dir, else $KVMEDIA_DATA_DIR, else ~/.local/share/kvmedia."""


# -- output helpers --------------------------------------------------------------------------

def _dumps(obj: Any) -> str:
    import orjson

    return orjson.dumps(obj, default=_json_default).decode()


def _json_default(obj: Any) -> Any:
    if isinstance(obj, bytes):
        from .pathbytes import display

        return display(obj)
    raise TypeError


def emit_json(obj: Any) -> None:
    click.echo(_dumps(obj))


def human_size(n: int) -> str:
    value = float(n)
    for unit in ("B", "K", "M", "G", "T"):
        if value < 1024 or unit == "T":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{n}B"


def human_time(mtime: float | None) -> str:
    import datetime as dt

    if mtime is None:
        return "-"
    try:
        return dt.datetime.fromtimestamp(mtime).strftime("%Y-%m-%d %H:%M")
    except (OverflowError, OSError, ValueError):
        return "?"


def record_line(rec: dict[str, Any]) -> str:
    from .pathbytes import display, get_field

    return (
        f"{rec.get('type', '?'):<5}  {human_size(int(rec.get('size') or 0)):>7}  "
        f"{human_time(rec.get('mtime'))}  {display(get_field(rec, 'path'))}"
    )


# -- shared options and error handling --------------------------------------------------------

def json_option(fn: F) -> F:
    return click.option("--json", "as_json", is_flag=True,
                        help="Print JSON lines (one object per record) instead of a table.")(fn)


def handle_errors(fn: F) -> F:
    """Map library errors to exit codes; in --json mode print them as JSON on stderr."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        as_json = kwargs.get("as_json", False)
        try:
            return fn(*args, **kwargs)
        except E.KvmediaError as exc:
            _fail(exc.message, exc.code, exc.exit_code, as_json)
        except KeyboardInterrupt:
            _fail("interrupted", "interrupted", E.EXIT_INTERRUPTED, as_json)
        except BrokenPipeError:
            sys.stderr.close()
            sys.exit(0)
        except OSError as exc:  # disk full, quota, I/O error met outside a typed wrapper
            where = f" ({exc.filename})" if exc.filename else ""
            _fail(f"I/O error: {exc.strerror or exc}{where}; free some space or check the "
                  "disk and retry (committed work is kept)", "io", E.EXIT_IO, as_json)

    return wrapper  # type: ignore[return-value]


def _fail(message: str, code: str, exit_code: int, as_json: bool) -> None:
    if as_json:
        click.echo(_dumps({"type": "error", "code": code, "message": message}), err=True)
    else:
        click.echo(f"kvmedia: error: {message}", err=True)
    sys.exit(exit_code)


def open_library(ctx: click.Context, readonly: bool = False) -> Any:
    from .config import Config
    from .library import Library

    obj = ctx.find_root().obj
    config = Config({"data_dir": obj.get("data_dir")})
    return Library.open(config["data_dir"], config=config)


class StopOnSignal:
    """SIGINT/SIGTERM set an event; the work stops at the next safe point and commits."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._old: dict[int, Any] = {}

    def __enter__(self) -> threading.Event:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handler)
        return self.event

    def _handler(self, signum: int, frame: Any) -> None:
        if self.event.is_set():  # second Ctrl-C: give up at once
            raise KeyboardInterrupt
        self.event.set()

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


# -- commands --------------------------------------------------------------------------------

@click.group(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Library location (default: $KVMEDIA_DATA_DIR or ~/.local/share/kvmedia).")
@click.version_option(package_name="kvmedia")
@click.pass_context
def cli(ctx: click.Context, data_dir: str | None) -> None:
    """kvmedia: index the media on your volumes and find it again.

    Example:

        kvmedia scan /mnt/vol && kvmedia list --type video --sort moddesc --limit 10
    """
    ctx.ensure_object(dict)
    ctx.obj["data_dir"] = data_dir


@cli.command(epilog=EPILOG)
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=bytes))
@click.option("--progress", type=click.Choice(["auto", "tty", "json", "none"]), default=None,
              help="Progress on stderr: a live line (tty), JSON lines (json), or none. "
                   "Default: a live line when stderr is a terminal.")
@click.option("--force", is_flag=True,
              help="Sync even when a root looks unmounted (missing, empty or another filesystem)"
                   "; records of files not found are then removed.")
@click.option("--hash", "hash_", is_flag=True,
              help="Then give each file a content hash (reused while size+mtime hold).")
@click.option("--persist-ids", type=click.Choice(["xattr", "none"]), default=None,
              help="xattr: keep each new file's uuid in its user.kvmedia.uuid attribute, so a "
                   "rebuilt data dir gets the same ids (default: setting scan.persist_ids).")
@json_option
@handle_errors
@click.pass_context
def scan(ctx: click.Context, paths: tuple[bytes, ...], progress: str | None, force: bool,
         as_json: bool, hash_: bool = False, persist_ids: str | None = None) -> None:
    """Walk PATHS and bring their records up to date.

    New files are added, changed ones updated (a renamed or moved file keeps its uuid),
    files gone from a root are removed. Unchanged files cost no write. A root that looks
    unmounted is marked offline and nothing under it is deleted. Ctrl-C stops cleanly:
    committed work stays and the next scan continues.

    Example:

        kvmedia scan /mnt/vol1 /mnt/usb1 --progress json
    """
    from .progress import make_progress

    lib = open_library(ctx)
    mode = progress or lib.config["progress"]
    with StopOnSignal() as stop:
        summaries = lib.scan(list(paths), progress=make_progress(mode), stop=stop, force=force,
                             persist_ids=persist_ids)
    interrupted = stop.is_set()
    for summary in summaries:
        for path, message in summary.warnings:
            from .pathbytes import display

            if as_json:
                click.echo(_dumps({"type": "warning", "path": display(path),
                                   "message": message}), err=True)
            else:
                click.echo(f"kvmedia: warning: {display(path)}: {message}", err=True)
        if as_json:
            emit_json(summary.to_json())
        else:
            _print_summary(summary)
    if hash_ and not interrupted:
        with StopOnSignal() as stop:
            hashed = lib.hash_media(under=[s.root for s in summaries],
                                    progress=make_progress(mode), stop=stop)
        interrupted = stop.is_set()
        if as_json:
            emit_json({**hashed.to_json(), "type": "hash"})
        else:
            click.echo(f"hashes: {hashed.hashed} computed, {hashed.reused} reused, "
                       f"{hashed.failed} failed")
    if interrupted:
        sys.exit(E.EXIT_INTERRUPTED)


def _print_summary(s: Any) -> None:
    from .pathbytes import display

    if s.offline:
        click.echo(f"{display(s.root)}: offline ({s.offline_reason}); nothing removed")
        return
    state = " (interrupted: run the scan again to finish)" if s.interrupted else ""
    click.echo(
        f"{display(s.root)}: {s.added} added, {s.updated} updated, {s.moved} moved, "
        f"{s.unchanged} unchanged, {s.removed} removed, {s.errors} errors "
        f"in {s.seconds:.2f}s{state}"
    )


TYPE_CHOICE = click.Choice(["audio", "video", "image", "other", "all"])
SORT_CHOICE = click.Choice(["mod", "moddesc", "name", "namedesc", "size", "sizedesc"])


@cli.command("list", epilog=EPILOG)
@click.option("--type", "media_type", type=TYPE_CHOICE, default="all", show_default=True,
              help="Media type to list.")
@click.option("--trash", is_flag=True, help="List trashed items instead of live ones.")
@click.option("--sort", type=SORT_CHOICE, default="moddesc", show_default=True,
              help="Order: modification time, name or size; *desc reverses.")
@click.option("--limit", type=click.IntRange(min=0), default=None, help="At most N records.")
@click.option("--offset", type=click.IntRange(min=0), default=0, help="Skip the first K.")
@json_option
@handle_errors
@click.pass_context
def list_cmd(ctx: click.Context, media_type: str, trash: bool, sort: str, limit: int | None,
             offset: int, as_json: bool) -> None:
    """List records of a type in one of six orders (served from the type keys).

    Example:

        kvmedia list --type image --sort name --limit 50 --offset 100 --json
    """
    lib = open_library(ctx)
    records = lib.list_media(media_type=media_type, trash=trash, sort=sort, limit=limit,
                             offset=offset)
    for rec in records:
        click.echo(_dumps(rec) if as_json else record_line(rec))


@cli.command(epilog=EPILOG)
@click.option("--type", "media_type", type=TYPE_CHOICE, default="all", show_default=True,
              help="Media type to count.")
@click.option("--trash", is_flag=True, help="Count trashed items instead of live ones.")
@json_option
@handle_errors
@click.pass_context
def count(ctx: click.Context, media_type: str, trash: bool, as_json: bool) -> None:
    """Print the number of records (of a type).

    Example:

        kvmedia count --type video
    """
    lib = open_library(ctx)
    n = lib.count(media_type=media_type, trash=trash)
    click.echo(_dumps({"type": "count", "media_type": media_type, "trash": trash, "count": n})
               if as_json else str(n))


@cli.command(epilog=EPILOG)
@click.argument("refs", nargs=-1, required=True)
@json_option
@handle_errors
@click.pass_context
def show(ctx: click.Context, refs: tuple[str, ...], as_json: bool) -> None:
    """Show the full record of each UUID or PATH.

    Example:

        kvmedia show /mnt/vol/photos/IMG_0001.jpg --json
    """
    from .pathbytes import display, get_field

    lib = open_library(ctx)
    missing = 0
    for ref in refs:
        try:
            rec = lib.resolve(ref if _looks_like_uuid(ref) else os.fsencode(ref))
        except E.NotFoundError as exc:
            missing += 1
            if as_json:
                click.echo(_dumps({"type": "error", "code": exc.code, "message": exc.message}),
                           err=True)
            else:
                click.echo(f"kvmedia: error: {exc.message}", err=True)
            continue
        if as_json:
            emit_json(rec)
            continue
        for key in sorted(rec):
            if key.endswith("_bytes"):
                continue
            value = rec[key]
            if key in ("path", "original_path", "name", "trash_path", "root") or (
                key + "_bytes" in rec
            ):
                value = display(get_field(rec, key))
            click.echo(f"{key:>14}: {value}")
        click.echo("")
    if missing:
        sys.exit(E.EXIT_NOT_FOUND)


def _looks_like_uuid(text: str) -> bool:
    from .library import _is_uuid

    return _is_uuid(text)


@cli.command(epilog=EPILOG)
@json_option
@handle_errors
@click.pass_context
def stats(ctx: click.Context, as_json: bool) -> None:
    """Counts and bytes per type, database size and the known scan roots.

    Example:

        kvmedia stats --json
    """
    from .pathbytes import display, get_field

    lib = open_library(ctx)
    data = lib.stats()
    if as_json:
        data["type"] = "stats"
        emit_json(data)
        return
    click.echo(f"{'type':<6} {'count':>10} {'bytes':>10} {'trash':>8}")
    for media_type, row in data["types"].items():
        click.echo(f"{media_type:<6} {row['count']:>10,} {human_size(row['bytes']):>10} "
                   f"{row['trash_count']:>8,}")
    click.echo(f"database: {human_size(data['db_bytes'])} in {data['data_dir']}")
    for root in data["roots"]:
        state = f"offline: {root.get('offline_reason')}" if root.get("offline") else "online"
        click.echo(f"root: {display(get_field(root, 'path'))} ({state}, "
                   f"last scan {root.get('last_scan_at') or '-'})")


@cli.command(epilog=EPILOG)
@click.option("--check-only", is_flag=True, help="Report problems without repairing them.")
@json_option
@handle_errors
@click.pass_context
def doctor(ctx: click.Context, check_only: bool, as_json: bool) -> None:
    """Check every record against its secondary keys and stats; repair what is wrong.

    Exit code 0 when clean or repaired, 6 when problems remain (with --check-only).

    Example:

        kvmedia doctor --json
    """
    lib = open_library(ctx)
    report = lib.doctor(repair=not check_only)
    from .pathbytes import get_field
    from .watch.limits import watch_report

    inotify = watch_report([p for p in (get_field(r, "path") for r in lib.roots()) if p])
    report["inotify"] = inotify.to_json()
    report["media_tools"] = lib.capabilities()
    from .embed.semantic import semantic_status

    report["semantic"] = semantic_status(lib.semantic.settings)
    if as_json:
        emit_json(report)
    else:
        for problem in report["problems"]:
            click.echo(f"problem: {problem}")
        for line in inotify.lines():
            click.echo(line)
        for tool in report["media_tools"]["missing"]:
            click.echo(f"missing: {tool['tool']} (gives {tool['gives']}; {tool['install']})")
        sem = report["semantic"]
        click.echo(f"semantic: embedder {sem['embedder']}, vectors {sem['vector_backend']}")
        if sem["note"]:
            click.echo(f"note: {sem['note']}")
        verdict = "clean" if report["clean"] else (
            "repaired" if report["repaired"] else "damaged")
        click.echo(f"{report['records']} records; {report['missing_keys']} missing keys, "
                   f"{report['orphan_keys']} orphan keys: {verdict}")
    if not report["clean"] and not report["repaired"]:
        sys.exit(E.EXIT_DAMAGED)


@cli.command(epilog=EPILOG)
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True,
              help="Show the newest N entries.")
@json_option
@handle_errors
@click.pass_context
def log(ctx: click.Context, limit: int, as_json: bool) -> None:
    """Show the audit log: what happened to which file, and when.

    Example:

        kvmedia log --limit 20
    """
    from .pathbytes import display, get_field

    lib = open_library(ctx)
    for entry in lib.audit_tail(limit):
        if as_json:
            emit_json(entry)
        else:
            err = f"  ({entry['error']})" if entry.get("error") else ""
            click.echo(f"{entry['at']}  {entry['status']:<7} {entry['op']:<9} "
                       f"{display(get_field(entry, 'path'))}{err}")


@cli.group(epilog=EPILOG)
def config() -> None:
    """Show and change settings (flags > KVMEDIA_* env > config file > defaults).

    Example:

        kvmedia config set scan.exclude "*.tmp,Downloads/"
    """


@config.command("show")
@json_option
@handle_errors
@click.pass_context
def config_show(ctx: click.Context, as_json: bool) -> None:
    """Print every setting, its effective value and where it came from.

    Example:

        kvmedia config show --json
    """
    from .config import Config, config_path

    cfg = Config({"data_dir": ctx.find_root().obj.get("data_dir")})
    for row in cfg.describe():
        if as_json:
            emit_json(row)
        else:
            click.echo(f"{row['key']:<18} = {row['value']!r:<30} ({row['source']})")
    if not as_json:
        click.echo(f"config file: {config_path()}", err=True)


@config.command("set")
@click.argument("key")
@click.argument("value")
@handle_errors
def config_set(key: str, value: str) -> None:
    """Set KEY to VALUE in the config file (lists: comma-separated; scan.include: ':').

    Example:

        kvmedia config set scan.include /mnt/vol/photos:/mnt/vol/music
    """
    from .config import write_setting

    click.echo(f"wrote {write_setting(key, value)}", err=True)


@config.command("unset")
@click.argument("key")
@handle_errors
def config_unset(key: str) -> None:
    """Remove KEY from the config file (back to its default).

    Example:

        kvmedia config unset scan.include
    """
    from .config import write_setting

    click.echo(f"wrote {write_setting(key, None)}", err=True)


def iter_commands(group: click.Group, prefix: str = "") -> Iterable[tuple[str, click.Command]]:
    for name, command in sorted(group.commands.items()):
        yield prefix + name, command
        if isinstance(command, click.Group):
            yield from iter_commands(command, prefix + name + " ")


COMMAND_MODULES: tuple[str, ...] = ("watch", "media", "search", "semantic", "serve", "pipeline",
                                  "fsck")
"""Modules under kvmedia/commands/ that register further commands on `cli`."""


def _load_command_modules() -> None:
    import importlib

    for name in COMMAND_MODULES:
        importlib.import_module(f"kvmedia.commands.{name}")


_load_command_modules()


def main() -> None:
    """Entry point. Usage errors are JSON objects too when `--json` was given."""
    try:
        cli.main(obj={}, standalone_mode=False)
    except click.exceptions.Abort:
        _fail("interrupted", "interrupted", E.EXIT_INTERRUPTED, "--json" in sys.argv)
    except click.ClickException as exc:
        if "--json" in sys.argv:
            _fail(exc.format_message(), "usage", E.EXIT_USAGE, True)
        exc.show()
        sys.exit(exc.exit_code)
    except BrokenPipeError:
        sys.stderr.close()
        sys.exit(0)


if __name__ == "__main__":
    main()
