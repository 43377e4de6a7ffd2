"""Readers in other processes search and list while a writer scans, merges and rebuilds;
a reader killed while holding a read transaction does not block the writer. No reader ever
sees an error, and every answer is self-consistent (each hit is a live record matching the
query's word)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from rel_helpers import assert_consistent, make_tree

from kvmedia import Library

_READER = r"""
import os, sys, time
from kvmedia import Library
from kvmedia.pathbytes import get_field
data, seconds = sys.argv[1], float(sys.argv[2])
lib = Library.open(data, readonly=True)
n = 0
end = time.monotonic() + seconds
while time.monotonic() < end:
    for word in ("beach", "song", "holiday"):
        result = lib.search(word, limit=None)
        for rec in result.hits:
            text = (get_field(rec, "path") or b"").lower()
            assert word.encode() in text, (word, text)
        assert result.total == len(result.hits)
        n += 1
    lib.list_media(limit=50)
    if os.environ.get("HOLD"):
        with lib.env.read():
            print("holding", flush=True)
            time.sleep(3600)
print(n, flush=True)
"""


def _readers(data_dir: Path, count: int, seconds: float, hold: bool = False
             ) -> list[subprocess.Popen[bytes]]:
    env = dict(os.environ, HOLD="1" if hold else "")
    return [subprocess.Popen([sys.executable, "-c", _READER, str(data_dir), str(seconds)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
            for _ in range(count)]


def _writer_work(lib: Library, tree: Path, rounds: int) -> None:
    maint = lib.search_engine.maintainer
    for i in range(rounds):
        make_tree(tree, 60, seed=1000 * (i + 1))
        lib.scan([tree])
        if i % 2:
            maint.merge()
        else:
            lib.optimize()
    lib.rebuild_index()


def _run(tree: Path, data_dir: Path, readers: int, rounds: int, figures) -> None:
    make_tree(tree, 100)
    with Library.open(data_dir) as lib:
        lib.scan([tree])
        procs = _readers(data_dir, readers, 4.0 + rounds)
        _writer_work(lib, tree, rounds)
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()[-2000:]
        figures.add("concurrency", "reader searches", int(out.split()[-1]))
    figures.add("concurrency", "reader processes", readers)
    assert_consistent(data_dir, tree)


def test_readers_during_scans_and_merges(tree: Path, data_dir: Path, figures) -> None:
    _run(tree, data_dir, 2, 3, figures)


@pytest.mark.soak
def test_readers_during_scans_and_merges_soak(tree: Path, data_dir: Path, figures) -> None:
    _run(tree, data_dir, 4, 30, figures)


def test_killed_reader_holding_a_transaction(tree: Path, data_dir: Path, figures) -> None:
    make_tree(tree, 30)
    with Library.open(data_dir) as lib:
        lib.scan([tree])
    (proc,) = _readers(data_dir, 1, 0.1, hold=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"holding"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    figures.add("concurrency", "killed readers")
    with Library.open(data_dir) as lib:
        _writer_work(lib, tree, 2)  # LMDB clears the dead reader's slot: writes go on
    assert_consistent(data_dir, tree)
