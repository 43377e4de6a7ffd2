"""The forked walk (walkproc.py): the same items in the same order as the walk in-process, a
child that dies mid-walk makes the scan incomplete (nothing removed), and a stopped scan
leaves no child behind."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import astuple
from pathlib import Path

import orjson
import pytest
from kvtest import write

from kvmedia import Library
from kvmedia.forking import can_fork
from kvmedia.pathbytes import get_field
from kvmedia.walk import Walker, WalkRules
from kvmedia.walkproc import CHUNK_ITEMS, ForkedWalk

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")


def _items(walk: object) -> list[tuple[str, tuple[object, ...]]]:
    return [(type(i).__name__, astuple(i)) for i in walk]  # type: ignore[attr-defined]


def _tree(root: Path, files: int) -> None:
    for i in range(files):
        write(root / f"d{i % 7}" / f"sub{i % 3}" / f"IMG_{i:05d}.jpg", b"x" * (i % 5))
    write(root / ".hidden" / "a.jpg")
    write(root / "skip" / ".nomedia")
    write(root / "skip" / "b.jpg")
    write(root / "@eaDir" / "c.jpg")
    write(root / "d0" / ".kvmediaignore", b"*.tmp\n")
    write(root / "d0" / "x.tmp")
    os.mkfifo(root / "d1" / "pipe.mp4")  # a warning item
    os.symlink(root / "d2", root / "d3-link")
    (root / "d4" / "bad-\xff".encode("utf-8", "surrogateescape").decode(
        "utf-8", "surrogateescape")).write_bytes(b"")


def test_forked_walk_yields_what_the_walk_yields(tmp_path: Path) -> None:
    root = tmp_path / "r"
    _tree(root, 2 * CHUNK_ITEMS + 77)  # several frames and a partial last one
    walker = Walker(os.fsencode(root), WalkRules())
    expected = _items(walker)
    forked = ForkedWalk(Walker(os.fsencode(root), WalkRules()))
    got = _items(forked)
    assert got == expected
    assert forked.complete
    assert astuple(forked.counters) == astuple(walker.counters)
    assert any(kind == "Warning_" for kind, _ in got)  # the FIFO


def test_forked_walk_of_a_missing_root_reports_like_the_walk(tmp_path: Path) -> None:
    root = os.fsencode(tmp_path / "gone")
    expected = _items(Walker(root, WalkRules()))
    forked = ForkedWalk(Walker(root, WalkRules()))
    assert _items(forked) == expected and forked.complete


def test_closing_early_reaps_the_child(tmp_path: Path) -> None:
    root = tmp_path / "r"
    _tree(root, 3 * CHUNK_ITEMS)
    forked = ForkedWalk(Walker(os.fsencode(root), WalkRules()))
    it = iter(forked)
    next(it)
    pid = forked._pid
    assert pid > 0
    forked.close()
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # already reaped: no zombie left
    assert not forked.complete


def _scan(data: Path, root: Path, **env: str) -> tuple[int, list[dict[str, object]]]:
    proc = subprocess.run(
        [sys.executable, "-m", "kvmedia", "--data-dir", str(data), "scan", "--json",
         "--progress", "none", str(root)],
        capture_output=True, env={**os.environ, **env}, timeout=120)
    lines = [orjson.loads(x) for x in proc.stdout.splitlines() + proc.stderr.splitlines()
             if x.startswith(b"{")]
    return proc.returncode, lines


def test_a_walk_process_killed_midway_removes_nothing(tmp_path: Path) -> None:
    root, data = tmp_path / "r", tmp_path / "data"
    _tree(root, 3 * CHUNK_ITEMS)
    code, _ = _scan(data, root, KVMEDIA_SCAN_WALK_PROCESS="yes")
    assert code == 0
    with Library.open(str(data)) as lib:
        before = lib.count()
    # The child is SIGKILLed after its first frame: the parent saw ~1 frame of files, the
    # rest of the tree looks "gone" to a scan that trusted the stream.
    code, lines = _scan(data, root, KVMEDIA_CRASH_AT="walkproc.frame_sent:1",
                        KVMEDIA_SCAN_WALK_PROCESS="yes")
    summary = next(x for x in lines if x.get("type") == "summary")
    assert summary["interrupted"] is True and summary["removed"] == 0
    assert any("walk process ended early" in str(x.get("message")) for x in lines)
    with Library.open(str(data)) as lib:
        assert lib.count() == before
    code, lines = _scan(data, root, KVMEDIA_SCAN_WALK_PROCESS="yes")  # the next one completes
    summary = next(x for x in lines if x.get("type") == "summary")
    assert code == 0 and not summary["interrupted"] and summary["unchanged"] == before


def test_scan_results_do_not_depend_on_the_walk_process(tmp_path: Path) -> None:
    root = tmp_path / "r"
    _tree(root, 500)
    counts = []
    for setting in ("yes", "no"):
        data = tmp_path / f"data-{setting}"
        code, lines = _scan(data, root, KVMEDIA_SCAN_WALK_PROCESS=setting)
        assert code == 0
        summary = next(x for x in lines if x.get("type") == "summary")
        with Library.open(str(data)) as lib:
            paths = sorted(get_field(r, "path") for r in lib.list_media(limit=10_000))
        counts.append((summary["added"], summary["errors"], paths))
    assert counts[0] == counts[1]


def test_can_fork_only_without_other_threads() -> None:
    import threading

    event = threading.Event()
    t = threading.Thread(target=event.wait)
    t.start()
    try:
        assert not can_fork()
    finally:
        event.set()
        t.join()


def test_auto_forks_for_roots_whose_last_scan_was_big(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """`auto`: the first scan of a root walks in-process; once a complete scan saw at least
    WALK_PROCESS_MIN_FILES, the next one forks (seen here through the child's crash point:
    only a forked walk can die while the scan goes on)."""
    import kvmedia.scan as scan_mod

    if not can_fork():
        pytest.skip("another thread runs in this test process")
    root = tmp_path / "r"
    _tree(root, 2 * CHUNK_ITEMS)
    monkeypatch.setattr(scan_mod, "WALK_PROCESS_MIN_FILES", CHUNK_ITEMS)
    monkeypatch.setenv("KVMEDIA_CRASH_AT", "walkproc.frame_sent:1")
    monkeypatch.setenv("KVMEDIA_SCAN_WALK_PROCESS", "auto")
    with Library.open(str(tmp_path / "data")) as lib:
        first = lib.scan([str(root)])[0]
        assert not first.interrupted and first.added == 2 * CHUNK_ITEMS + 1
        info = next(r for r in lib.roots() if get_field(r, "path") == os.fsencode(root))
        assert info["files"] == first.added
        second = lib.scan([str(root)])[0]
        assert second.interrupted and second.removed == 0
        assert lib.count() == first.added


def test_ctrl_c_on_a_terminal_stops_a_forked_rescan_cleanly(tmp_path: Path) -> None:
    """Ctrl-C on a terminal signals the whole process group, so the walk process dies with
    the scan: that is an interruption (exit 130, nothing removed), not a walk error; the next
    scan finishes the job."""
    import signal

    root, data = tmp_path / "r", tmp_path / "data"
    n = 24_000
    for i in range(n):
        write(root / f"d{i // 500:03d}" / f"IMG_{i:05d}.jpg", b"")
    env = dict(os.environ, KVMEDIA_DATA_DIR=str(data), KVMEDIA_CONFIG=str(tmp_path / "none"),
               KVMEDIA_SCAN_WALK_PROCESS="yes")
    scan = [sys.executable, "-m", "kvmedia", "scan", str(root), "--json", "--progress", "json"]
    subprocess.run(scan, env=env, check=True, capture_output=True, timeout=300)
    stamp = 1_500_000_000
    for i in range(n):  # every file changed: the rescan writes, slow enough to interrupt
        os.utime(root / f"d{i // 500:03d}" / f"IMG_{i:05d}.jpg", (stamp, stamp))
    proc = subprocess.Popen(scan, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        if orjson.loads(line).get("files", 0) > 0:
            break
    os.killpg(proc.pid, signal.SIGINT)  # what the terminal's Ctrl-C does
    out, _ = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the scan finished before the signal arrived")
    assert proc.returncode == 130
    summary = orjson.loads(out.splitlines()[-1])
    assert summary["interrupted"] and summary["removed"] == 0
    assert summary["errors"] == 0 and summary["warnings"] == []
    done = subprocess.run(scan, env=env, check=True, capture_output=True, timeout=300)
    summary = orjson.loads(done.stdout.splitlines()[-1])
    assert summary["updated"] + summary["unchanged"] == n and summary["removed"] == 0
    assert not summary["interrupted"] and summary["errors"] == 0
