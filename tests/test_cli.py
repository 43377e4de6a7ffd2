"""The `kvmedia` command as a real subprocess: help texts, JSON output, errors and exit codes,
Ctrl-C in the middle of a scan, readers running while a scan writes, and map growth."""

from __future__ import annotations

import base64
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import orjson
import pytest
from kvtest import run_cli, write

from kvmedia.cli import cli, iter_commands

RECORD_FIELDS = {"uuid", "name", "type", "size", "mtime", "is_trash"}


def cli_env(data_dir: Path, **extra: str) -> dict[str, str]:
    return dict(os.environ, KVMEDIA_DATA_DIR=str(data_dir),
                KVMEDIA_CONFIG=str(data_dir) + ".toml", **extra)


def json_lines(raw: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in raw.splitlines() if line.strip()]


def field_bytes(obj: dict[str, Any], field: str) -> bytes:
    """The exact bytes of a path-like JSON field: text, or `<field>_bytes` base64."""
    if field + "_bytes" in obj:
        assert field not in obj
        return base64.b64decode(obj[field + "_bytes"])
    return obj[field].encode("utf-8")


def make_files(root: Path, n: int, per_dir: int = 500) -> None:
    """`n` empty files (one mknod each: the cheapest real regular file to make)."""
    for i in range(n):
        d = root / f"d{i // per_dir:03d}"
        if i % per_dir == 0:
            d.mkdir(parents=True, exist_ok=True)
        os.mknod(d / f"f{i:06d}.jpg", 0o644 | stat.S_IFREG)


# -- help --------------------------------------------------------------------------------

def test_every_command_has_help_with_an_example(data_dir: Path) -> None:
    names = [name for name, _cmd in iter_commands(cli)]
    assert {"scan", "list", "count", "show", "stats", "doctor", "log", "config show"} <= set(names)
    for name, command in iter_commands(cli):  # the real click commands, rendered in-process
        text = command.get_help(click.Context(command, info_name=name))
        assert "Example:" in text, f"`kvmedia {name} --help` has no Example:"
    for args in ([], ["scan"], ["config", "show"]):  # and the real binary
        out = run_cli(data_dir, *args, "--help", check=True).stdout
        assert b"Example:" in out and b"Exit codes" in out or args == ["config", "show"]


# -- JSON output ---------------------------------------------------------------------------

def test_json_output_round_trips_bytes(data_dir: Path, tree: Path) -> None:
    names = [b"caf\xe9 \xff.jpg", "ok-\u00e9t\u00e9.mp4".encode(), b"ctl\x1b\n.mp3", b"plain.txt"]
    root = bytes(tree)
    paths = {os.path.join(root, b"s\xfeub", n) for n in names}
    for p in paths:
        write(p, b"abc")
    scan = run_cli(data_dir, "scan", root, "--json", check=True)
    (summary,) = json_lines(scan.stdout)
    assert summary["type"] == "summary" and summary["added"] == 4
    assert field_bytes(summary, "root") == root
    listed = json_lines(run_cli(data_dir, "list", "--json", check=True).stdout)
    assert {field_bytes(r, "path") for r in listed} == paths
    for rec in listed:
        assert RECORD_FIELDS - {"name"} <= set(rec) and ("name" in rec or "name_bytes" in rec)
        assert field_bytes(rec, "name") == os.path.basename(field_bytes(rec, "path"))
        assert rec["size"] == 3 and rec["is_trash"] is False
    # show by uuid and by the raw bytes path give the same records
    by_uuid = run_cli(data_dir, "show", *[r["uuid"] for r in listed], "--json", check=True)
    by_path = run_cli(data_dir, "show", *[field_bytes(r, "path") for r in listed], "--json",
                      check=True)
    assert json_lines(by_uuid.stdout) == json_lines(by_path.stdout) == listed
    human = run_cli(data_dir, "list", check=True).stdout
    assert b"\x1b" not in human, "control characters are escaped for terminals"
    count = json_lines(run_cli(data_dir, "count", "--json", check=True).stdout)
    assert count == [{"type": "count", "media_type": "all", "trash": False, "count": 4}]
    assert run_cli(data_dir, "count", "--type", "video", check=True).stdout.strip() == b"1"
    stats = json_lines(run_cli(data_dir, "stats", "--json", check=True).stdout)[0]
    assert stats["type"] == "stats" and stats["types"]["all"]["count"] == 4
    assert stats["types"]["image"]["bytes"] == 3
    doctor = json_lines(run_cli(data_dir, "doctor", "--json", check=True).stdout)[0]
    assert doctor["clean"] and doctor["records"] == 4
    log = json_lines(run_cli(data_dir, "log", "--json", check=True).stdout)
    assert log[-1]["op"] == "scan"
    assert {field_bytes(e, "path") for e in log if e["op"] == "added"} == paths


def test_list_orders_limit_and_offset(data_dir: Path, tree: Path) -> None:
    for i, name in enumerate(["b.jpg", "A.jpg", "c.mp4", "a.mp3"]):
        f = write(tree / name, b"x" * (i + 1))
        os.utime(f, ns=(10**18 + i, 10**18 + i))
    run_cli(data_dir, "scan", str(tree), check=True)

    def names(*args: str) -> list[str]:
        out = run_cli(data_dir, "list", "--json", *args, check=True).stdout
        return [r["name"] for r in json_lines(out)]

    by_name = names("--sort", "name")
    assert by_name in (["A.jpg", "a.mp3", "b.jpg", "c.mp4"], ["a.mp3", "A.jpg", "b.jpg", "c.mp4"])
    assert names("--sort", "namedesc") == by_name[::-1]
    assert names("--sort", "mod") == ["b.jpg", "A.jpg", "c.mp4", "a.mp3"]
    assert names("--sort", "sizedesc", "--limit", "2", "--offset", "1") == ["c.mp4", "A.jpg"]
    assert names("--type", "image", "--sort", "size") == ["b.jpg", "A.jpg"]


# -- errors and exit codes -----------------------------------------------------------------

def test_errors_and_exit_codes(data_dir: Path, tree: Path) -> None:
    write(tree / "a.jpg")
    run_cli(data_dir, "scan", str(tree), check=True)
    missing = "00000000-0000-5000-8000-000000000000"
    p = run_cli(data_dir, "show", missing, "--json")
    assert p.returncode == 3 and p.stdout == b""
    (err,) = json_lines(p.stderr)
    assert err["type"] == "error" and err["code"] == "not_found" and err["message"]
    p = run_cli(data_dir, "show", str(tree / "nope.jpg"))
    assert p.returncode == 3 and b"error" in p.stderr and b"scan" in p.stderr
    p = run_cli(data_dir, "scan", str(tree / "no-such-dir"), "--json")
    assert p.returncode == 3
    assert json_lines(p.stderr)[-1]["type"] == "error"
    for args in (["list", "--sort", "bogus"], ["frobnicate"], ["show"]):
        p = run_cli(data_dir, *args)
        assert p.returncode == 2, args
        assert p.stdout == b""


# -- Ctrl-C --------------------------------------------------------------------------------

def test_sigint_mid_scan_then_resume(data_dir: Path, tree: Path) -> None:
    n = 20_000
    make_files(tree, n)
    proc = subprocess.Popen(
        [sys.executable, "-m", "kvmedia", "scan", str(tree), "--json", "--progress", "json"],
        env=cli_env(data_dir),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    seen = 0
    for line in proc.stderr:  # progress lines: wait for some real progress
        event = orjson.loads(line)
        if event.get("type") == "progress" and event.get("files", 0) > 0:
            seen = event["files"]
            break
    assert seen, "the scan reported progress"
    proc.send_signal(signal.SIGINT)
    out, _err = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("the scan finished before the signal arrived")
    assert proc.returncode == 130
    summary = json_lines(out)[-1]
    assert summary["interrupted"] and summary["removed"] == 0
    partial = json_lines(run_cli(data_dir, "count", "--json", check=True).stdout)[0]["count"]
    assert 0 < partial < n, "committed work stays"
    done = run_cli(data_dir, "scan", str(tree), "--json", check=True, timeout=300)
    summary = json_lines(done.stdout)[-1]
    assert summary["added"] + summary["unchanged"] == n and summary["removed"] == 0
    records = json_lines(run_cli(data_dir, "list", "--json", "--sort", "name",
                                 check=True).stdout)
    paths = [r["path"] for r in records]
    assert len(paths) == len(set(paths)) == n, "no lost or duplicate records"
    assert len({r["uuid"] for r in records}) == n


# -- many processes ------------------------------------------------------------------------

READER = r"""
import os, sys
from kvmedia import Library
lib = Library.open(sys.argv[1])
stop_file, loops, last = sys.argv[2], 0, 0
while not os.path.exists(stop_file) or loops < 5:
    n = lib.count()
    assert n >= last, (n, last)  # committed records never vanish from a reader's view
    last = n
    page = [r["name"] for r in lib.list_media(sort="name", limit=50)]
    assert len(page) >= min(50, n) and page == sorted(page), page
    loops += 1
print(loops, last)
"""


def test_readers_while_a_scan_writes_with_a_tiny_map(data_dir: Path, tree: Path) -> None:
    """Two reader processes (one long-lived, one a loop of CLI calls) while a third scans; the
    map starts at 1 MiB (KVMEDIA_LMDB_MAP_SIZE), so the scanner grows it many times under the
    readers' feet and no MapFullError may reach anyone."""
    make_files(tree, 4000, per_dir=250)
    env = cli_env(data_dir, KVMEDIA_LMDB_MAP_SIZE="1048576", KVMEDIA_SCAN_BATCH_FILES="250")
    run_cli_env = dict(env)
    run_cli(data_dir, "count", check=True)  # create the library first
    stop_file = str(data_dir) + ".stop"
    long_reader = subprocess.Popen([sys.executable, "-c", READER, str(data_dir), stop_file],
                                   env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    shell_reader = subprocess.Popen(
        ["sh", "-c", 'i=0; while [ ! -e "$1" ] || [ $i -lt 3 ]; do '
         '"$2" -m kvmedia count --json >/dev/null || exit 11; '
         '"$2" -m kvmedia list --limit 20 --json >/dev/null || exit 12; '
         'i=$((i+1)); done; echo $i', "reader", stop_file, sys.executable],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        scan = subprocess.run([sys.executable, "-m", "kvmedia", "scan", str(tree), "--json"],
                              env=run_cli_env, capture_output=True, timeout=300)
    finally:
        Path(stop_file).touch()
    out1, err1 = long_reader.communicate(timeout=120)
    out2, err2 = shell_reader.communicate(timeout=120)
    assert scan.returncode == 0, scan.stderr
    assert b"MapFull" not in scan.stderr
    assert long_reader.returncode == 0, err1
    assert shell_reader.returncode == 0, err2
    assert json_lines(scan.stdout)[-1]["added"] == 4000
    assert int(out1.split()[0]) >= 5 and int(out2) >= 3
    stats = json_lines(run_cli(data_dir, "stats", "--json", check=True).stdout)[0]
    assert stats["types"]["image"]["count"] == 4000
    assert stats["db_bytes"] > 1 << 20, "the map grew past its 1 MiB start"


def test_startup_does_not_import_heavy_modules(data_dir: Path) -> None:
    """`kvmedia count` stays cheap: numpy and the search/index layers load lazily."""
    code = ("import sys; from kvmedia.cli import main; sys.argv=['kvmedia','count'];\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('numpy', 'faiss', 'PIL') if m in sys.modules))")
    p = subprocess.run([sys.executable, "-c", code], env=cli_env(data_dir),
                       capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[-1] == b"[]"


def test_usage_errors_are_json_objects_in_json_mode(data_dir: Path) -> None:
    proc = run_cli(data_dir, "list", "--json", "--sort", "bogus")
    assert proc.returncode == 2
    err = orjson.loads(proc.stderr.decode().strip().splitlines()[-1])
    assert err["type"] == "error" and err["code"] == "usage" and "bogus" in err["message"]
    plain = run_cli(data_dir, "list", "--sort", "bogus")
    assert plain.returncode == 2 and b"Error:" in plain.stderr
