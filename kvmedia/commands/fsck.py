"""`kvmedia fsck`: check (and with --repair fix) everything in the data dir (kvmedia/fsck.py)."""

from __future__ import annotations

import os
import sys

import click

from ..cli import EPILOG, cli, emit_json, handle_errors, json_option


@cli.command("fsck", epilog=EPILOG)
@click.option("--repair", is_flag=True,
              help="Fix what is wrong (keys, index rebuild, damaged caches), then check again.")
@json_option
@handle_errors
@click.pass_context
def fsck_cmd(ctx: click.Context, repair: bool, as_json: bool) -> None:
    """Check record keys, the search index, vector ids and files, state.json and unfinished
    trash operations. Exit 0 when clean or repaired, 6 when damage remains.

    Without --repair nothing is changed (the library is opened read-only).

    Example:

        kvmedia fsck --repair --json
    """
    from .. import errors as E
    from ..config import Config
    from ..fsck import fsck_data_dir

    config = Config({"data_dir": ctx.find_root().obj.get("data_dir")})
    report = fsck_data_dir(os.path.abspath(config["data_dir"]), config, repair=repair)
    if as_json:
        emit_json(report)
    else:
        for problem in report["found"]:
            click.echo(f"problem: {problem}")
        click.echo(f"{report.get('records', 0)} records, {report.get('index_docs', 0)} indexed: "
                   f"{report['verdict']}")
    if report["verdict"] == "damaged":
        sys.exit(E.EXIT_DAMAGED)
