"""Asset pipeline commands: deps, thumbs, reprocess, persist-ids. Each parses, makes one
Library call and renders."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from .. import errors as E
from ..cli import EPILOG, StopOnSignal, cli, emit_json, handle_errors, json_option, open_library

PROGRESS_CHOICE = click.Choice(["auto", "tty", "json", "none"])


def _ref(arg: str) -> str | bytes:
    from ..library import _is_uuid

    return arg.lower() if _is_uuid(arg) else os.fsencode(arg)


def _node_line(node: dict[str, Any]) -> str:
    from ..pathbytes import display, get_field

    what = node.get("sidecar_kind") or node.get("media_type") or node["kind"]
    gone = "" if node.get("exists") else "  (gone)"
    return f"  {node['kind']:<7} {what:<8} {display(get_field(node, 'path'))}{gone}"


@cli.command(epilog=EPILOG)
@click.argument("ref")
@json_option
@handle_errors
@click.pass_context
def deps(ctx: click.Context, ref: str, as_json: bool) -> None:
    """Show what item REF (uuid or path) depends on, and what depends on it.

    Dependencies are sidecar files (.xmp, subtitles, .lrc, .cue, .nfo, .aae) and the other
    half of a Live Photo. A change to any of them re-derives the item, and then whatever
    depends on the item.

    Example:

        kvmedia deps /mnt/vol/photos/IMG_1234.HEIC
    """
    from ..pathbytes import display, get_field

    out = open_library(ctx).deps(_ref(ref))
    if as_json:
        emit_json(out)
        return
    click.echo(f"{display(get_field(out, 'path'))}  ({out['uuid']})"
               + ("  dirty" if out["dirty"] else ""))
    click.echo(f"depends on ({len(out['depends_on'])}):")
    for node in out["depends_on"]:
        click.echo(_node_line(node))
    click.echo(f"needed by ({len(out['needed_by'])}):")
    for node in out["needed_by"]:
        click.echo(_node_line(node))


@cli.command(epilog=EPILOG)
@click.argument("refs", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every image, video and audio item.")
@click.option("--force", is_flag=True, help="Rebuild even the thumbnails that are fresh.")
@click.option("--progress", type=PROGRESS_CHOICE, default=None, help="Progress on stderr.")
@json_option
@handle_errors
@click.pass_context
def thumbs(ctx: click.Context, refs: tuple[str, ...], all_: bool, force: bool,
           progress: str | None, as_json: bool) -> None:
    """Build thumbnails for REFS (uuids or paths), or --all.

    Thumbnails live in the data dir's `thumbs/` cache, keyed by uuid with a validity stamp:
    a changed file gets a new one, a deleted item loses its own, and past the size budget
    (`thumbs.max_mb`) the least recently used are evicted.

    Example:

        kvmedia thumbs --all --progress json
    """
    from ..progress import make_progress

    if bool(refs) == all_:
        raise E.UsageError("name items or pass --all (not both); e.g. kvmedia thumbs --all")
    lib = open_library(ctx)
    with StopOnSignal() as stop:
        report = lib.build_thumbnails([_ref(r) for r in refs] if refs else None, force=force,
                                      progress=make_progress(progress or lib.config["progress"]),
                                      stop=stop)
    if as_json:
        emit_json(report.to_json())
    else:
        usage = lib.thumbs.cache.usage()
        click.echo(f"thumbnails: {report.built} built, {report.cached} fresh, {report.none} "
                   f"without a picture, {report.evicted} evicted, {len(report.errors)} errors; "
                   f"cache {usage['bytes'] >> 10} KiB of {usage['max_bytes'] >> 20} MiB")
        for err in report.errors:
            click.echo(f"kvmedia: warning: {err['uuid']}: {err['error']}", err=True)
    if report.interrupted:
        sys.exit(E.EXIT_INTERRUPTED)


@cli.command(epilog=EPILOG)
@click.option("--extractor", "name", default=None,
              help="The extractor to rerun (see --list).")
@click.option("--list", "list_", is_flag=True,
              help="List extractors with their versions and how many items are stale.")
@click.option("--force", is_flag=True, help="Redo every item it applies to, stale or not.")
@click.option("--dry-run", is_flag=True, help="Only count the items that would be redone.")
@click.argument("refs", nargs=-1)
@json_option
@handle_errors
@click.pass_context
def reprocess(ctx: click.Context, name: str | None, list_: bool, force: bool, dry_run: bool,
              refs: tuple[str, ...], as_json: bool) -> None:
    """Redo one extractor's outputs where its version changed (or --force), for REFS or all.

    Extractors: `probe` (metadata), each analyzer (`offline`, `remote`, plugins),
    `sidecars` (XMP/subtitles/Live Photos), `thumbnail`, and entry-point plugins
    (group `kvmedia.extractors`). Each record keeps the version that made its outputs.

    Example:

        kvmedia reprocess --extractor sidecars
    """
    lib = open_library(ctx)
    if list_ or name is None:
        if name is None and not list_:
            raise E.UsageError("name an extractor with --extractor, or pass --list")
        from ..pipeline.registry import stale

        recs = lib._records([_ref(r) for r in refs] if refs else None)
        for info in lib.extractors().info():
            ex = lib.extractors().get(info.name)
            row = {"type": "extractor", **info.to_json(),
                   "stale": sum(1 for r in recs if stale(ex, r))}
            if as_json:
                emit_json(row)
            else:
                click.echo(f"{info.name:<12} v{info.version:<3} {info.kind:<9} "
                           f"{row['stale']:>8} stale  ({info.source})")
        return
    out = lib.reprocess(name, [_ref(r) for r in refs] if refs else None, force=force,
                        dry_run=dry_run)
    if as_json:
        emit_json(out)
    else:
        verb = "would redo" if dry_run else "redone"
        click.echo(f"{out['extractor']} v{out['version']}: {out['stale']} of "
                   f"{out['considered']} items {verb}")


@cli.command("persist-ids", epilog=EPILOG)
@click.argument("refs", nargs=-1)
@json_option
@handle_errors
@click.pass_context
def persist_ids(ctx: click.Context, refs: tuple[str, ...], as_json: bool) -> None:
    """Store each item's uuid in its file's `user.kvmedia.uuid` xattr (REFS or all).

    For items scanned before `scan.persist_ids = "xattr"` was set. With the attribute, a
    rebuilt data dir gets the same uuids back, and a copy made with its xattrs is told apart
    from the original. A filesystem without user xattrs is reported and skipped.

    Example:

        kvmedia persist-ids
    """
    lib = open_library(ctx)
    out = lib.persist_ids([_ref(r) for r in refs] if refs else None)
    if as_json:
        emit_json({"type": "summary", "op": "persist-ids", **out})
    else:
        click.echo(f"ids: {out['written']} written, {out['present']} already there, "
                   f"{out['failed']} not possible")
