"""Shared pieces of the reliability suite: a varied media tree, the CLI as a killable
subprocess, and `assert_consistent` — the check every crash and corruption test ends with."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from kvmedia import Library
from kvmedia.fsck import fsck
from kvmedia.index.docs import doc_from_record
from kvmedia.pathbytes import get_field
from kvmedia.search import oracle
from kvmedia.search.query import apply_options, parse_query
from kvmedia.store.recordstore import RecordStore

QUERIES = ["", "beach", "song", "beach 2023", "holiday -beach", "type:image", "ext:mp3",
           "~beech", "a", "trash:true", "trash:any sunset"]


def make_tree(root: Path, n: int, *, seed: int = 0) -> list[bytes]:
    """`n` small files with searchable names over a few folders (some non-UTF-8)."""
    words = ["beach", "song", "holiday", "sunset", "2023", "clip", "a", "family"]
    exts = ["jpg", "mp3", "mkv", "png", "txt", "flac"]
    out = []
    for i in range(n):
        k = i + seed
        folder = os.path.join(os.fsencode(root), b"d%d" % (k % 7), words[k % 5].encode())
        name = b"%s %s %d.%s" % (words[k % 8].encode(), words[(k // 8) % 8].encode(), k,
                                 exts[k % 6].encode())
        if k % 13 == 0:
            name = b"bad\xff" + name
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, name)
        with open(path, "wb") as fh:
            fh.write(b"x" * (k % 50 + 1))
        out.append(path)
    return out


def fs_files(root: Path) -> set[bytes]:
    """Every regular file under `root` (trash folders included)."""
    out = set()
    for dirpath, _dirs, names in os.walk(os.fsencode(root)):
        out.update(os.path.join(dirpath, n) for n in names)
    return out


def cli_env(data_dir: Path, crash_at: str | None = None) -> dict[str, str]:
    env = dict(os.environ, KVMEDIA_DATA_DIR=str(data_dir),
               KVMEDIA_CONFIG=str(data_dir) + ".toml")
    env.pop("KVMEDIA_CRASH_AT", None)
    if crash_at:
        env["KVMEDIA_CRASH_AT"] = crash_at
    return env


def run(data_dir: Path, *args: str | bytes, crash_at: str | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "kvmedia", *args],
                          env=cli_env(data_dir, crash_at), capture_output=True, timeout=timeout)


def spawn(data_dir: Path, *args: str | bytes) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "kvmedia", *args], env=cli_env(data_dir),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def oracle_uuids(lib: Library, query: str, **opts: Any) -> tuple[int, list[str]]:
    q = apply_options(parse_query(query), **opts)
    with lib.env.read() as txn:
        rows = [doc_from_record(r) for r in RecordStore.iter_records(txn)]
    total, hits = oracle.scan(rows, q)
    end = None if q.limit is None else q.offset + q.limit
    return total, [row.uuid for _k, row in hits[q.offset:end]]


def assert_search_correct(lib: Library, queries: list[str] = QUERIES) -> int:
    """Every query answers exactly what the brute-force oracle answers; returns how many."""
    for query in queries:
        result = lib.search(query, limit=None)
        want = oracle_uuids(lib, query, limit=None)
        got = (result.total, [h["uuid"] for h in result.hits])
        assert got == want, (query, result.mode)
    return len(queries)


def records(lib: Library) -> list[dict[str, Any]]:
    with lib.env.read() as txn:
        return list(RecordStore.iter_records(txn))


def assert_consistent(data_dir: Path, tree: Path) -> dict[str, int]:
    """After a crash: the next open recovers, fsck is clean, a scan makes the records equal
    the file system with no duplicates, fsck is still clean and searches equal the oracle.
    Returns {"lost": .., "duplicated": ..} (both asserted 0)."""
    with Library.open(data_dir) as lib:
        report = fsck(lib)
        assert report["clean"], report["problems"]
        lib.scan([tree])
        recs = records(lib)
        paths = [get_field(r, "path") for r in recs]
        files = fs_files(tree)
        lost = len(files - set(paths))
        duplicated = len(paths) - len(set(paths))
        extra = set(paths) - files
        assert (lost, duplicated, extra) == (0, 0, set()), (lost, duplicated, extra)
        assert len({r["uuid"] for r in recs}) == len(recs)
        report = fsck(lib)
        assert report["clean"], report["problems"]
        assert_search_correct(lib)
    return {"lost": lost, "duplicated": duplicated}
