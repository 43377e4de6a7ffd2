"""`kvmedia search`, `kvmedia rebuild-index`, `kvmedia optimize`."""

from __future__ import annotations

import sys

import click

from ..cli import (
    EPILOG,
    StopOnSignal,
    emit_json,
    handle_errors,
    json_option,
    open_library,
    record_line,
)

SORTS = ["relevance", "mod", "moddesc", "name", "namedesc", "size", "sizedesc"]


@click.command("search", epilog=EPILOG)
@click.argument("query", nargs=-1)
@click.option("--type", "media_type", type=click.Choice(["audio", "video", "image", "other",
              "all"]), default=None, help="Only this media type.")
@click.option("--trash", type=click.Choice(["true", "false", "any"]), default=None,
              help="Trashed items (true), live ones (false, the default) or both (any).")
@click.option("--path-prefix", default=None,
              help="Only under these folders, separated by | (component boundaries).")
@click.option("--sort", type=click.Choice(SORTS), default="relevance", show_default=True,
              help="Order: relevance (exact > prefix > substring > fuzzy, then newest), or a "
                   "field; *desc reverses.")
@click.option("--limit", type=click.IntRange(min=0), default=100, show_default=True,
              help="At most N hits.")
@click.option("--offset", type=click.IntRange(min=0), default=0, help="Skip the first K hits.")
@click.option("--explain", is_flag=True, help="Print the parsed query and the plan as JSON.")
@json_option
@handle_errors
@click.pass_context
def search(ctx: click.Context, query: tuple[str, ...], media_type: str | None,
           trash: str | None, path_prefix: str | None, sort: str, limit: int, offset: int,
           explain: bool, as_json: bool) -> None:
    """Find files by name or folder path. Exit 0 with hits, 1 with none, 2 on a bad query.

    Words must all match (in the name or the path), as whole words, prefixes or anywhere
    inside; "quoted phrases", -exclude, a | b, ~typo, and filters type: ext: trash: path:
    name: size: mtime: dur: width: height: ids: (see `kvmedia/search/query.py`). With --json,
    the first line is {"type": "total", ...}, then one record per line.

    Example:

        kvmedia search 'beach 2023 -draft type:image size:>1M' --sort moddesc --limit 20
    """
    lib = open_library(ctx)
    trash_value: bool | None | str = "keep" if trash is None else (
        None if trash == "any" else trash == "true")
    result = lib.search(" ".join(query), media_type=media_type, trash=trash_value,
                        path_prefix=path_prefix, sort=sort, limit=limit, offset=offset,
                        explain=explain)
    if explain:
        emit_json({"type": "explain", **(result.plan or {}), "total": result.total})
    if as_json:
        emit_json(result.summary())
        for rec in result.hits:
            emit_json(rec)
    else:
        for rec in result.hits:
            click.echo(record_line(rec))
        click.echo(f"{result.total} result{'s' if result.total != 1 else ''} "
                   f"({result.mode}, {result.seconds * 1000:.1f} ms)", err=True)
    if result.total == 0:
        sys.exit(1)


@click.command("rebuild-index", epilog=EPILOG)
@click.argument("paths", nargs=-1, type=click.Path(path_type=bytes))
@json_option
@handle_errors
@click.pass_context
def rebuild_index(ctx: click.Context, paths: tuple[bytes, ...], as_json: bool) -> None:
    """Rescan PATHS (default: every known root) and write the search index again.

    Searches keep answering from the old index until the new one is switched in.

    Example:

        kvmedia rebuild-index /mnt/vol1
    """
    lib = open_library(ctx)
    with StopOnSignal() as stop:
        out = lib.rebuild_index(list(paths) or None, stop=stop)
    report = out["index"]
    if as_json:
        for summary in out["scans"]:
            emit_json(summary.to_json())
        emit_json(report.to_json())
    else:
        click.echo(f"index rebuilt: {report.docs} docs in {report.segments} segment(s), "
                   f"{report.seconds:.2f}s")


@click.command("optimize", epilog=EPILOG)
@json_option
@handle_errors
@click.pass_context
def optimize(ctx: click.Context, as_json: bool) -> None:
    """Merge the index delta and all segments into one segment (fastest searches).

    Example:

        kvmedia optimize
    """
    lib = open_library(ctx)
    report = lib.optimize()
    if as_json:
        emit_json(report.to_json())
    else:
        click.echo(f"index optimized: {report.docs} docs in {report.segments} segment(s), "
                   f"{report.seconds:.2f}s")


def _register() -> None:
    from ..cli import cli

    for command in (search, rebuild_index, optimize):
        cli.add_command(command)


_register()
