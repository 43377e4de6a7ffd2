"""A full index build on two processes (index/parallel.py: the upper half of the documents
added in a child, the folder dictionary built in another while the names are written) writes
the very segment a single process writes, also when a child dies, and leaves no child
behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from search_helpers import assert_same, delete_uuids, gen_corpus, put_paths

from kvmedia import Library
from kvmedia.forking import can_fork
from kvmedia.index import manifest as M
from kvmedia.index import parallel

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
FORKS = [0]
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_parent=lambda: FORKS.__setitem__(0, FORKS[0] + 1))

ODD_NAMES = [
    b"/mnt/vol1/Nh\xe1\xba\xa1c/b\xc3\xa3i bi\xe1\xbb\x83n.mp3",       # Vietnamese
    b"/mnt/vol1/\xff\xfe raw/not utf-8 \xe9t\xe9.jpg",                   # not UTF-8
    b"/mnt/vol1/\xe6\x9d\xb1\xe4\xba\xac/\xe5\xa4\x9c\xe3\x81\xab.flac",  # CJK
    b"/mnt/vol1/no-extension",
    b"/top.mkv",
]


def _build(data_dir: Path, *, fork: bool, monkeypatch: pytest.MonkeyPatch) -> bytes:
    """Rebuild the index of the library in `data_dir`; the segment's bytes."""
    monkeypatch.setattr(parallel, "PARALLEL_MIN_DOCS", 0 if fork else 1 << 62)
    with Library.open(data_dir) as lib:
        report = lib.search_engine.maintainer.merge(full=True)
        assert report.segments == 1
        index_dir = lib.search_engine.maintainer.index_dir
        (entry,) = M.read_manifest(index_dir).segments
        with open(os.path.join(index_dir, entry.file), "rb") as fh:
            return fh.read()


def _library(data_dir: Path) -> None:
    with Library.open(data_dir) as lib:
        gen_corpus.write_records(lib, 3000, seed=5)
        put_paths(lib, [(p, 100 + i, 1_700_000_000_000_000_000 + i)
                        for i, p in enumerate(ODD_NAMES)], first_ino=900_000)


def _no_children() -> bool:
    try:
        os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


@pytest.fixture
def forkable() -> None:
    if not can_fork():
        pytest.skip("another thread runs in this test process")


@pytest.mark.usefixtures("forkable")
def test_two_processes_write_the_same_segment_as_one(data_dir: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    _library(data_dir)
    forks = FORKS[0]
    one = _build(data_dir, fork=False, monkeypatch=monkeypatch)
    assert FORKS[0] == forks
    two = _build(data_dir, fork=True, monkeypatch=monkeypatch)
    assert FORKS[0] == forks + 2  # the half of the documents, the folder dictionary
    assert two == one
    assert _no_children()
    with Library.open(data_dir) as lib:
        for query in ("bai bien", "ete", "東京", "img", "no-extension", "top"):
            assert_same(lib, query)


@pytest.mark.usefixtures("forkable")
@pytest.mark.parametrize("point", ["index.parallel_child", "index.folders_child"])
def test_a_child_that_dies_costs_time_not_records(data_dir: Path, point: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    _library(data_dir)
    one = _build(data_dir, fork=False, monkeypatch=monkeypatch)
    monkeypatch.setenv("KVMEDIA_CRASH_AT", f"{point}:1")  # SIGKILL in that child
    forks = FORKS[0]
    assert _build(data_dir, fork=True, monkeypatch=monkeypatch) == one
    assert FORKS[0] == forks + 2
    assert _no_children()


def test_small_libraries_and_threaded_processes_build_in_process(
        data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Below PARALLEL_MIN_DOCS, or with another thread running, nothing is forked."""
    import threading

    _library(data_dir)
    forks = FORKS[0]
    with Library.open(data_dir) as lib:
        assert lib.search_engine.maintainer.merge(full=True).docs == 3000 + len(ODD_NAMES)
    monkeypatch.setattr(parallel, "PARALLEL_MIN_DOCS", 0)
    release = threading.Event()
    other = threading.Thread(target=release.wait)
    other.start()
    try:
        with Library.open(data_dir) as lib:
            assert lib.search_engine.maintainer.merge(full=True).docs == 3000 + len(ODD_NAMES)
    finally:
        release.set()
        other.join()
    assert FORKS[0] == forks


@pytest.mark.usefixtures("forkable")
def test_a_merge_of_the_delta_on_two_processes_writes_the_same_segment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The end of a first scan: every new document is in the delta; a merge folds it."""
    rows = list(gen_corpus.paths(3000, seed=9))
    segments = []
    for fork in (False, True):
        data_dir = tmp_path / f"data-{fork}"
        monkeypatch.setattr(parallel, "PARALLEL_MIN_DOCS", 0 if fork else 1 << 62)
        with Library.open(data_dir) as lib:
            uuids = put_paths(lib, rows)
            put_paths(lib, [(p, 100 + i, 1_700_000_000_000_000_000 + i)
                            for i, p in enumerate(ODD_NAMES)], first_ino=900_000)
            delete_uuids(lib, uuids[::7])  # tombstones in the delta too
            forks = FORKS[0]
            report = lib.search_engine.maintainer.merge()
            assert report.kind == "merge" and report.segments == 1
            assert FORKS[0] == forks + 2 * fork
            index_dir = lib.search_engine.maintainer.index_dir
            (entry,) = M.read_manifest(index_dir).segments
            with open(os.path.join(index_dir, entry.file), "rb") as fh:
                segments.append(fh.read())
            for query in ("bai bien", "ete", "東京", "img", "top"):
                assert_same(lib, query)
    assert segments[0] == segments[1]
    assert _no_children()
