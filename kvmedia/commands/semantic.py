"""`kvmedia analyze`, `kvmedia embed`, `kvmedia similar`, and `--semantic` / `--mode` for
`kvmedia search` (added to the search command when it is registered; text search is its
default and stays untouched)."""

from __future__ import annotations

import sys
from typing import Any

import click

from ..cli import (
    EPILOG,
    StopOnSignal,
    cli,
    emit_json,
    handle_errors,
    json_option,
    open_library,
    record_line,
)
from ..errors import EXIT_INTERRUPTED, EXIT_NO_RESULTS, UsageError

PROGRESS = click.Choice(["auto", "tty", "json", "none"])


def _resolve_ids(lib: Any, refs: tuple[str, ...]) -> list[str]:
    import os

    from ..cli import _looks_like_uuid

    return [lib.resolve(r if _looks_like_uuid(r) else os.fsencode(r))["uuid"] for r in refs]


def _lower_priority(level: int) -> None:
    import os

    try:
        os.nice(level)
    except OSError:
        pass


def _print_report(report: Any, as_json: bool) -> None:
    data = report.to_json()
    if as_json:
        emit_json(data)
        return
    for error in data.get("errors") or []:
        click.echo(f"kvmedia: warning: {error}", err=True)
    fields = {k: v for k, v in data.items()
              if k not in ("type", "op", "errors", "index") and not isinstance(v, bool)}
    click.echo(f"{data['op']}: " + ", ".join(f"{v} {k.replace('_', ' ')}"
                                             for k, v in fields.items()))
    if data.get("index"):
        idx = data["index"]
        click.echo(f"vector index: {idx['count']} vectors ({idx['kind']}, {idx['backend']})")


@cli.command(epilog=EPILOG)
@click.argument("refs", nargs=-1)
@click.option("--all", "everything", is_flag=True,
              help="Every item whose analysis is missing or stale (plus the due queue).")
@click.option("--progress", type=PROGRESS, default=None, help="Progress display on stderr.")
@click.option("--nice", "nice_level", type=click.IntRange(0, 19), default=10, show_default=True,
              help="Lower this process's CPU priority: searches and scans come first.")
@json_option
@handle_errors
@click.pass_context
def analyze(ctx: click.Context, refs: tuple[str, ...], everything: bool, progress: str | None,
            nice_level: int, as_json: bool) -> None:
    """Describe items (REFS: uuids or paths) as summary, tags, transcript and keywords.

    With no REFS and no --all, works through the queue (new files and earlier failures).
    Remote results are cached by content hash: renamed, moved or rescanned files cost no
    new API call. Failures leave the item queued with a retry time; Ctrl-C stops cleanly
    and the next run continues.

    Example:

        kvmedia analyze --all --progress json
    """
    from ..progress import make_progress

    if refs and everything:
        raise UsageError("give item REFS or --all, not both")
    _lower_priority(nice_level)
    lib = open_library(ctx)
    uuids = _resolve_ids(lib, refs) if refs else None
    with StopOnSignal() as stop:
        report = lib.semantic.analyze(uuids, everything=everything, stop=stop,
                                      progress=make_progress(progress or lib.config["progress"]))
    _print_report(report, as_json)
    if report.interrupted:
        sys.exit(EXIT_INTERRUPTED)


@cli.command(epilog=EPILOG)
@click.argument("refs", nargs=-1)
@click.option("--all", "everything", is_flag=True,
              help="Every item whose vector is missing or stale (the default with no REFS).")
@click.option("--rebuild-index", is_flag=True,
              help="Only write the vector index again from stored embeddings (no embedding).")
@click.option("--progress", type=PROGRESS, default=None, help="Progress display on stderr.")
@click.option("--nice", "nice_level", type=click.IntRange(0, 19), default=10, show_default=True,
              help="Lower this process's CPU priority: searches and scans come first.")
@json_option
@handle_errors
@click.pass_context
def embed(ctx: click.Context, refs: tuple[str, ...], everything: bool, rebuild_index: bool,
          progress: str | None, nice_level: int, as_json: bool) -> None:
    """Embed item descriptions (REFS: uuids or paths; default: all that need it).

    Uses the configured embedder (`semantic.embedder`; `kvmedia doctor` shows which one).
    Vectors are cached by text, so unchanged descriptions are never embedded twice, and the
    vector index under the data dir is rebuilt from them.

    Example:

        kvmedia embed --all --progress json
    """
    from ..progress import make_progress

    if refs and everything:
        raise UsageError("give item REFS or --all, not both")
    _lower_priority(nice_level)
    lib = open_library(ctx)
    if rebuild_index:
        out = lib.semantic.rebuild_index()
        if as_json:
            emit_json({"type": "summary", "op": "rebuild-vectors", **out})
        else:
            click.echo(f"vector index: {out['count']} vectors ({out['kind']}, {out['backend']})")
        return
    uuids = _resolve_ids(lib, refs) if refs else None
    with StopOnSignal() as stop:
        report = lib.semantic.embed(uuids, stop=stop,
                                    progress=make_progress(progress or lib.config["progress"]))
    _print_report(report, as_json)
    if report.interrupted:
        sys.exit(EXIT_INTERRUPTED)


def _print_hits(result: Any, as_json: bool) -> None:
    if as_json:
        emit_json(result.summary())
        for rec, score in zip(result.hits, result.scores, strict=True):
            emit_json({**rec, "score": round(float(score), 6)})
    else:
        for rec, score in zip(result.hits, result.scores, strict=True):
            click.echo(f"{score:6.3f}  {record_line(rec)}")
        click.echo(f"{len(result.hits)} shown of {result.total} ({result.mode}, "
                   f"{result.model}, {result.seconds * 1000:.1f} ms)", err=True)
    if not result.hits:
        if not as_json:
            click.echo("nothing found; files become searchable by meaning after "
                       "`kvmedia analyze --all` and `kvmedia embed`", err=True)
        sys.exit(EXIT_NO_RESULTS)


@cli.command(epilog=EPILOG)
@click.argument("ref")
@click.argument("query", nargs=-1)
@click.option("--limit", type=click.IntRange(min=0), default=20, show_default=True,
              help="At most N items.")
@click.option("--offset", type=click.IntRange(min=0), default=0, help="Skip the first K.")
@json_option
@handle_errors
@click.pass_context
def similar(ctx: click.Context, ref: str, query: tuple[str, ...], limit: int, offset: int,
            as_json: bool) -> None:
    """Items most like REF (a uuid or path), nearest first; QUERY may add filters.

    Example:

        kvmedia similar /mnt/vol/photos/IMG_0042.jpg type:image --limit 10
    """
    lib = open_library(ctx)
    uuid = _resolve_ids(lib, (ref,))[0]
    result = lib.semantic.similar(uuid, " ".join(query), limit=limit, offset=offset)
    _print_hits(result, as_json)


# -- search --semantic / --mode ------------------------------------------------------------------

def _semantic_search(ctx: click.Context, mode: str, kwargs: dict[str, Any]) -> None:
    if kwargs.get("explain"):
        raise UsageError("--explain describes text search only; drop it with --mode "
                         f"{mode}")
    if kwargs.get("sort") not in (None, "relevance"):
        raise UsageError(f"--sort orders text search only; --mode {mode} ranks by meaning: "
                         "drop --sort")
    trash = kwargs.get("trash")
    trash_value: bool | None | str = "keep" if trash is None else (
        None if trash == "any" else trash == "true")
    lib = open_library(ctx)
    options = {"media_type": kwargs.get("media_type"), "trash": trash_value,
               "path_prefix": kwargs.get("path_prefix"), "limit": kwargs.get("limit"),
               "offset": kwargs.get("offset")}
    query = " ".join(kwargs.get("query") or ())
    run = lib.semantic.search if mode == "semantic" else lib.semantic.hybrid
    _print_hits(run(query, **options), bool(kwargs.get("as_json")))


def extend_search_command() -> bool:
    """Give `kvmedia search` the options --semantic and --mode; False when it is missing."""
    command = cli.commands.get("search")
    if command is None or any(p.name == "mode" for p in command.params):
        return command is not None
    command.params.append(click.Option(
        ["--mode"], type=click.Choice(["text", "semantic", "hybrid"]), default="text",
        show_default=True,
        help="text: names and paths; semantic: K-NN over descriptions; hybrid: both, fused "
             "by reciprocal rank."))
    command.params.append(click.Option(["--semantic"], is_flag=True,
                                       help="Same as --mode semantic."))
    text_search = command.callback
    assert text_search is not None

    @handle_errors
    @click.pass_context
    def callback(ctx: click.Context, mode: str = "text", semantic: bool = False,
                 **kwargs: Any) -> Any:
        if semantic:
            mode = "semantic"
        if mode == "text":
            return ctx.invoke(text_search, **kwargs)
        return _semantic_search(ctx, mode, kwargs)

    command.callback = callback
    note = ("--semantic (or --mode semantic) finds files by meaning, from their descriptions "
            "(`kvmedia analyze`, `kvmedia embed`); --mode hybrid fuses both rankings.")
    if command.help and "--semantic" not in command.help:
        head, sep, tail = command.help.partition("Example:")
        indent = head[len(head.rstrip(" ")):]  # keep the docstring's indentation
        command.help = (f"{head}{note}\n\n{indent}{sep}{tail}" if sep
                        else f"{head}\n\n{note}")
    return True


extend_search_command()
