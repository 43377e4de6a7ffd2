"""Media operations: trash, restore, delete, buckets, probe, hash, dupes, share IDs, backup,
export and import. Each command parses, makes one Library call and renders."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from .. import errors as E
from ..cli import (
    EPILOG,
    StopOnSignal,
    _dumps,
    cli,
    emit_json,
    handle_errors,
    human_size,
    json_option,
    open_library,
)

TYPE_CHOICE = click.Choice(["audio", "video", "image", "other", "all"])
PROGRESS_CHOICE = click.Choice(["auto", "tty", "json", "none"])


def _ref(arg: str) -> str | bytes:
    """A uuid stays text; anything else is a path, as the exact bytes the shell gave."""
    from ..library import _is_uuid

    return arg.lower() if _is_uuid(arg) else os.fsencode(arg)


def _report(results: list[Any], verb: str, as_json: bool) -> None:
    """One line per item; errors on stderr; exit with the first failing item's code."""
    from ..pathbytes import display, get_field

    first_error = 0
    for item in results:
        if item.ok:
            rec = item.record or {}
            path = get_field(rec, "path")
            if as_json:
                emit_json({"type": verb, "ref": display(item.ref), "uuid": rec.get("uuid"),
                           "path": display(path), "record": rec})
            else:
                click.echo(f"{verb}: {display(path)}")
            continue
        exc = item.error
        first_error = first_error or exc.exit_code
        if as_json:
            click.echo(_dumps({"type": "error", "ref": display(item.ref), "code": exc.code,
                               "message": exc.message}), err=True)
        else:
            click.echo(f"kvmedia: error: {display(item.ref)}: {exc.message}", err=True)
    if first_error:
        sys.exit(first_error)


def _progress(lib: Any, mode: str | None) -> Any:
    from ..progress import make_progress

    return make_progress(mode or lib.config["progress"])


# -- trash / restore / delete ------------------------------------------------------------------

@cli.command(epilog=EPILOG)
@click.argument("refs", nargs=-1, required=True)
@click.option("--older-than", default=None,
              help="With `trash empty`: only items trashed longer ago than this (30d, 12h).")
@json_option
@handle_errors
@click.pass_context
def trash(ctx: click.Context, refs: tuple[str, ...], older_than: str | None,
          as_json: bool) -> None:
    """Move files (by UUID or PATH) into `.nas-trash` at the root of their volume.

    `kvmedia trash empty [--older-than AGE]` purges the trash and its records instead
    (write `./empty` to trash a file named "empty"). Each item succeeds or fails alone;
    the exit code is the first failure's.

    Example:

        kvmedia trash /mnt/vol/photos/IMG_0001.jpg && kvmedia trash empty --older-than 30d
    """
    from ..trash import parse_age

    lib = open_library(ctx)
    if refs[0] == "empty":
        if len(refs) > 1:
            raise E.UsageError("`trash empty` takes no items; use `kvmedia delete` for those")
        age = parse_age(older_than) if older_than is not None else None
        _report(lib.empty_trash(age), "purged", as_json)
        return
    if older_than is not None:
        raise E.UsageError("--older-than only goes with `kvmedia trash empty`")
    _report(lib.trash([_ref(r) for r in refs]), "trashed", as_json)


@cli.command(epilog=EPILOG)
@click.argument("refs", nargs=-1, required=True)
@json_option
@handle_errors
@click.pass_context
def restore(ctx: click.Context, refs: tuple[str, ...], as_json: bool) -> None:
    """Put trashed files (by UUID, trash path or original PATH) back where they were.

    A taken path restores as `name (restored).ext`, `name (restored 2).ext`, ...; missing
    parent folders are recreated.

    Example:

        kvmedia restore /mnt/vol/photos/IMG_0001.jpg --json
    """
    lib = open_library(ctx)
    _report(lib.restore([_ref(r) for r in refs]), "restored", as_json)


@cli.command(epilog=EPILOG)
@click.argument("refs", nargs=-1, required=True)
@json_option
@handle_errors
@click.pass_context
def delete(ctx: click.Context, refs: tuple[str, ...], as_json: bool) -> None:
    """Delete files and their records permanently, trashed or not. There is no undo.

    Example:

        kvmedia delete 1b4e28ba-2fa1-5d9c-8c3f-3a5d3b9a1c2e
    """
    lib = open_library(ctx)
    _report(lib.delete([_ref(r) for r in refs]), "deleted", as_json)


# -- buckets -----------------------------------------------------------------------------------

@cli.command(epilog=EPILOG)
@click.option("--type", "media_type", type=TYPE_CHOICE, default="all", show_default=True,
              help="Only folders holding media of this type.")
@json_option
@handle_errors
@click.pass_context
def buckets(ctx: click.Context, media_type: str, as_json: bool) -> None:
    """Folders holding media: bucket id, item count and the 4 most recent items.

    Example:

        kvmedia buckets --type image --json
    """
    from ..pathbytes import display, get_field

    lib = open_library(ctx)
    rows = lib.buckets(media_type)
    for row in rows:
        if as_json:
            emit_json(row)
        else:
            click.echo(f"{row['id']:>10}  {row['count']:>7,}  {display(get_field(row, 'path'))}")
    if not rows:
        sys.exit(E.EXIT_NO_RESULTS)


# -- probing and hashing ---------------------------------------------------------------------

def _targets(refs: tuple[str, ...], all_: bool) -> list[str | bytes] | None:
    if all_ == bool(refs):
        raise E.UsageError("give either --all or some UUIDs/paths")
    return None if all_ else [_ref(r) for r in refs]


def _summary(summary: Any, as_json: bool, what: str) -> None:
    data = summary.to_json()
    if as_json:
        emit_json(data)
        return
    for err in data.get("errors", [])[:20]:
        click.echo(f"kvmedia: warning: {err.get('path')}: {err.get('error')}", err=True)
    counts = ", ".join(f"{v} {k}" for k, v in data.items()
                       if isinstance(v, int) and not isinstance(v, bool))
    click.echo(f"{what}: {counts}")


@cli.command(epilog=EPILOG)
@click.argument("refs", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every live audio, video and image record.")
@click.option("--force", is_flag=True, help="Probe again even when the cached answer is fresh.")
@click.option("--workers", type=click.IntRange(1, 16), default=2, show_default=True,
              help="Files probed at once (keep it low on spinning disks).")
@click.option("--progress", type=PROGRESS_CHOICE, default=None, help="Progress display.")
@json_option
@handle_errors
@click.pass_context
def probe(ctx: click.Context, refs: tuple[str, ...], all_: bool, force: bool, workers: int,
          progress: str | None, as_json: bool) -> None:
    """Fill metadata: durations, sizes, fps, codecs, EXIF, audio tags (cached per file version).

    Example:

        kvmedia probe --all --progress json
    """
    lib = open_library(ctx)
    targets = _targets(refs, all_)
    with StopOnSignal() as stop:
        summary = lib.probe(targets, force=force, workers=workers,
                            progress=_progress(lib, progress), stop=stop)
    _summary(summary, as_json, "probe")
    if summary.interrupted:
        sys.exit(E.EXIT_INTERRUPTED)


@cli.command("hash", epilog=EPILOG)
@click.argument("refs", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every live record.")
@click.option("--algo", type=click.Choice(["xxh3_128", "sha256"]), default="xxh3_128",
              show_default=True, help="Hash function.")
@click.option("--force", is_flag=True, help="Read files again even when size+mtime held.")
@click.option("--progress", type=PROGRESS_CHOICE, default=None, help="Progress display.")
@json_option
@handle_errors
@click.pass_context
def hash_cmd(ctx: click.Context, refs: tuple[str, ...], all_: bool, algo: str, force: bool,
             progress: str | None, as_json: bool) -> None:
    """Content hashes per file, reused while size and mtime are unchanged.

    Example:

        kvmedia hash --all --algo sha256
    """
    lib = open_library(ctx)
    targets = _targets(refs, all_)
    with StopOnSignal() as stop:
        summary = lib.hash_media(targets, algo=algo, force=force,
                                 progress=_progress(lib, progress), stop=stop)
    _summary(summary, as_json, "hash")
    if summary.interrupted:
        sys.exit(E.EXIT_INTERRUPTED)


@cli.command(epilog=EPILOG)
@click.option("--algo", type=click.Choice(["xxh3_128", "sha256"]), default="xxh3_128",
              show_default=True, help="Hash function.")
@click.option("--no-hash", is_flag=True, help="Use stored hashes only; read no file.")
@json_option
@handle_errors
@click.pass_context
def dupes(ctx: click.Context, algo: str, no_hash: bool, as_json: bool) -> None:
    """Sets of identical files and the bytes they waste (only same-size files are read).

    Example:

        kvmedia dupes --json
    """
    from ..pathbytes import display, get_field

    lib = open_library(ctx)
    sets = lib.dupes(algo=algo, hash_missing=not no_hash)
    for row in sets:
        if as_json:
            emit_json(row)
            continue
        click.echo(f"{row['count']} x {human_size(row['size'])} "
                   f"(wasted {human_size(row['wasted_bytes'])}) {row['content_hash']}")
        for item in row["files"]:
            click.echo(f"    {display(get_field(item, 'path'))}")
    if not sets:
        sys.exit(E.EXIT_NO_RESULTS)


# -- share IDs ------------------------------------------------------------------------------

@cli.command("share-id", epilog=EPILOG)
@click.argument("ref")
@json_option
@handle_errors
@click.pass_context
def share_id(ctx: click.Context, ref: str, as_json: bool) -> None:
    """Print an opaque, tamper-proof URL-safe token for a file (UUID or PATH).

    Example:

        kvmedia share-id /mnt/vol/videos/holiday.mp4
    """
    lib = open_library(ctx)
    token = lib.share_id(_ref(ref))
    click.echo(_dumps({"type": "share_id", "token": token}) if as_json else token)


@cli.command(epilog=EPILOG)
@click.argument("token")
@json_option
@handle_errors
@click.pass_context
def resolve(ctx: click.Context, token: str, as_json: bool) -> None:
    """Print the path a share token points at; exit 2 for an invalid or revoked token.

    Example:

        kvmedia resolve AYv1c2...  --json
    """
    from ..pathbytes import display, get_field

    lib = open_library(ctx)
    rec = lib.resolve_share(token)
    if as_json:
        emit_json({"type": "resolved", "uuid": rec["uuid"], "path": display(
            get_field(rec, "path")), "record": rec})
    else:
        sys.stdout.buffer.write((get_field(rec, "path") or b"") + b"\n")


@cli.group("share-key", epilog=EPILOG)
def share_key() -> None:
    """Manage the share-ID key.

    Example:

        kvmedia share-key rotate
    """


@share_key.command("rotate")
@json_option
@handle_errors
@click.pass_context
def share_key_rotate(ctx: click.Context, as_json: bool) -> None:
    """Make a new share key: every token handed out before stops working.

    Example:

        kvmedia share-key rotate
    """
    lib = open_library(ctx)
    lib.rotate_share_key()
    if as_json:
        emit_json({"type": "share_key", "rotated": True})
    else:
        click.echo("share key rotated: old links no longer resolve", err=True)


# -- backup / export ---------------------------------------------------------------------------

@cli.command(epilog=EPILOG)
@click.argument("dest", type=click.Path(file_okay=False))
@json_option
@handle_errors
@click.pass_context
def backup(ctx: click.Context, dest: str, as_json: bool) -> None:
    """Consistent hot copy of the library (safe while a scan or the watcher runs).

    Example:

        kvmedia backup /mnt/usb/kvmedia-backup-$(date +%F)
    """
    lib = open_library(ctx)
    info = lib.backup(dest)
    if as_json:
        emit_json(info)
    else:
        click.echo(f"backed up {info['records']} records to {info['dest']}")


@cli.command("restore-backup", epilog=EPILOG)
@click.argument("src", type=click.Path(exists=True, file_okay=False))
@json_option
@handle_errors
@click.pass_context
def restore_backup(ctx: click.Context, src: str, as_json: bool) -> None:
    """Replace the library by a backup (stop the watcher first; the old one is kept aside).

    Example:

        kvmedia restore-backup /mnt/usb/kvmedia-backup-2024-05-01
    """
    from ..config import Config
    from ..library import Library

    config = Config({"data_dir": ctx.find_root().obj.get("data_dir")})
    info = Library.restore_backup(config["data_dir"], src)
    if as_json:
        emit_json(info)
    else:
        click.echo(f"restored {info['records']} records from {info['src']}; the previous "
                   f"library is in {info['previous']}")


@cli.command(epilog=EPILOG)
@click.option("--relative-to", "relative_to", type=click.Path(path_type=bytes), default=None,
              help="Write paths under ROOT relative to it (other records are left out).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=bytes), default=None,
              help="Write to this file instead of stdout.")
@handle_errors
@click.pass_context
def export(ctx: click.Context, relative_to: bytes | None, output: bytes | None) -> None:
    """Write every record as JSON lines (a header line first).

    Example:

        kvmedia export --relative-to /mnt/vol -o library.jsonl
    """
    lib = open_library(ctx)
    if output is None:
        counts = lib.export(sys.stdout.buffer, relative_to)
        sys.stdout.buffer.flush()
    else:
        tmp = output + b".tmp"
        with open(tmp, "wb") as fh:
            counts = lib.export(fh, relative_to)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, output)
    if counts["skipped"]:
        click.echo(f"kvmedia: {counts['skipped']} records outside the root were left out",
                   err=True)


@cli.command("import", epilog=EPILOG)
@click.argument("file", type=click.File("rb"))
@click.option("--root", type=click.Path(path_type=bytes), default=None,
              help="Where the volume is now: relative paths go under it; absolute ones move "
                   "from their old scan root to it.")
@json_option
@handle_errors
@click.pass_context
def import_cmd(ctx: click.Context, file: Any, root: bytes | None, as_json: bool) -> None:
    """Load records from `kvmedia export` output, remapping paths (keeps uuids and metadata).

    Example:

        kvmedia import library.jsonl --root /mnt/newvol
    """
    lib = open_library(ctx)
    summary = lib.import_records(file, root)
    data = summary.to_json()
    if as_json:
        emit_json(data)
    else:
        for err in data["errors"][:20]:
            click.echo(f"kvmedia: warning: line {err['line']}: {err['error']}", err=True)
        click.echo(f"imported {data['imported']} records ({data['replaced']} replaced, "
                   f"{data['failed']} bad lines)")
    if data["failed"]:
        sys.exit(E.EXIT_USAGE)
