"""The watcher's parts on their own: debounce queue, sweeps, lock, state file, event mapping,
and the overflow path of a Watcher running in this process."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest

from kvmedia import Library
from kvmedia.errors import BusyError
from kvmedia.lockfile import DataDirLock, holder_pid, is_locked
from kvmedia.watch import Watcher, WatchOptions
from kvmedia.watch.debounce import DebounceQueue, SettleRule
from kvmedia.watch.observe import QueueingHandler, ignored
from kvmedia.watch.runlog import read_state, write_state
from kvmedia.watch.sweep import DirSweeper, stored_children


class Clock:
    """A hand-moved clock: the queue takes its time sources as parameters. `wall` (compared
    with file ctimes by the settle rule) moves with `now`."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.start_wall = time.time()

    def __call__(self) -> float:
        return self.now

    def wall(self) -> float:
        return self.start_wall + self.now - 1000.0


def _write(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _queue(clock: Clock, debounce: float = 1.0, interval: float = 5.0) -> DebounceQueue:
    return DebounceQueue(debounce, batch_interval_s=interval, settle=SettleRule(base_s=0.0,
                         per_gib_s=0.0), clock=clock, wall_clock=clock.wall)


# -- debounce queue -------------------------------------------------------------------------

def test_events_coalesce_per_path_and_release_together_once_quiet(tmp_path: Path) -> None:
    clock = Clock()
    q = _queue(clock)
    paths = [os.fsencode(_write(tmp_path / f"{i}.jpg")) for i in range(100)]
    for _ in range(3):
        for p in paths:
            q.put(p)
            clock.now += 0.001
    assert len(q) == 100
    assert not q.take().groups, "not quiet yet"
    clock.now += 1.0
    released = q.take()
    assert sorted(p for g in released.groups for p in g) == sorted(paths)
    assert len(q) == 0


def test_continuous_activity_releases_quiet_paths_each_interval(tmp_path: Path) -> None:
    clock = Clock()
    q = _queue(clock, debounce=1.0, interval=5.0)
    early = os.fsencode(_write(tmp_path / "early.jpg"))
    busy = os.fsencode(_write(tmp_path / "busy.jpg"))
    q.put(early)
    for _ in range(60):  # busy keeps getting events every 0.1 s: the queue is never quiet
        clock.now += 0.1
        q.put(busy)
        released = q.take()
        if released.groups:
            break
    assert released.groups == [[early]], "quiet paths are not starved by a busy one"
    assert len(q) == 1


def test_a_removal_waits_for_its_new_half_in_a_partial_release(tmp_path: Path) -> None:
    clock = Clock()
    q = _queue(clock, debounce=1.0, interval=0.5)
    busy = os.fsencode(_write(tmp_path / "busy.jpg"))
    gone = os.fsencode(tmp_path / "gone.jpg")  # a cross-root move: old half seen first...
    new = os.fsencode(_write(tmp_path / "new.jpg"))
    q.put(gone)
    clock.now += 0.01
    q.put(new)  # ...new half a moment later, unpaired
    released_new_at = released_gone_at = None
    for step in range(80):
        clock.now += 0.05
        q.put(busy)
        for group in q.take().groups:
            if new in group:
                released_new_at = step
            if gone in group:
                released_gone_at = step
    assert released_new_at is not None and released_gone_at is not None
    assert released_new_at <= released_gone_at


def test_move_halves_are_held_until_both_are_ready(tmp_path: Path) -> None:
    clock = Clock()
    q = DebounceQueue(1.0, batch_interval_s=100, settle=SettleRule(base_s=5.0, per_gib_s=0),
                      clock=clock, wall_clock=clock.wall)
    dest = _write(tmp_path / "dest.jpg")  # just renamed: its ctime is now, not settled
    src = os.fsencode(tmp_path / "src.jpg")
    q.put_group([os.fsencode(dest), src])
    clock.now += 1.5
    assert not q.take().groups, "the old half must not go alone"
    clock.now += 1.0
    assert not q.take().groups, "still settling"
    clock.now += 5
    (group,) = q.take().groups
    assert set(group) == {os.fsencode(dest), src}


def test_groups_merge_when_they_share_a_path(tmp_path: Path) -> None:
    clock = Clock()
    q = _queue(clock)
    a, b, c = (os.fsencode(tmp_path / n) for n in ("a", "b", "c"))
    _write(tmp_path / "c")
    q.put_group([b, a])  # a -> b
    q.put_group([c, b])  # b -> c
    clock.now += 2
    (group,) = q.take().groups
    assert set(group) == {a, b, c}


def test_an_urgent_path_skips_debounce_and_settle(tmp_path: Path) -> None:
    clock = Clock()
    q = DebounceQueue(30.0, settle=SettleRule(base_s=30.0), clock=clock, wall_clock=clock.wall)
    fresh = os.fsencode(_write(tmp_path / "fresh.jpg"))
    done = threading.Event()
    q.put(os.fsencode(tmp_path / "other.jpg"))
    q.put_group([fresh], urgent=True, waiter=done)
    released = q.take()
    assert released.groups == [[fresh]] and released.waiters == [done]
    assert len(q) == 1


def test_big_files_settle_longer() -> None:
    rule = SettleRule(base_s=1.0, per_gib_s=2.0, max_s=10.0)
    assert rule.seconds(0) == 1.0
    assert rule.seconds(1 << 30) == 3.0
    assert rule.seconds(100 << 30) == 10.0


# -- event mapping ---------------------------------------------------------------------------

def test_ignored_paths() -> None:
    root, data = b"/vol", b"/vol/.kvmedia"
    assert not ignored(b"/vol/a/b.jpg", root, data)
    assert ignored(b"/vol/.hidden/b.jpg", root, data)
    assert ignored(b"/vol/a/@eaDir/b.jpg", root, data)
    assert ignored(b"/vol/.kvmedia/media.lmdb/data.mdb", root, data)
    assert not ignored(b"/vol", root, data)


def test_handler_maps_moves_to_groups() -> None:
    from watchdog.events import (
        DirCreatedEvent,
        DirMovedEvent,
        FileClosedEvent,
        FileMovedEvent,
        FileOpenedEvent,
    )

    got: list[tuple[list[bytes], bool]] = []
    gone: list[bytes] = []
    h = QueueingHandler(b"/vol", b"/data", lambda paths, walk: got.append((paths, walk)),
                        gone.append)
    h.dispatch(FileMovedEvent(b"/vol/a.jpg", b"/vol/b.jpg"))
    h.dispatch(DirMovedEvent(b"/vol/d", b"/vol/e"))
    h.dispatch(FileMovedEvent(b"/vol/d/x", b"/vol/e/x", is_synthetic=True))
    h.dispatch(FileMovedEvent(b"/vol/.tmp123", b"/vol/final.jpg"))
    h.dispatch(FileOpenedEvent(b"/vol/r.jpg"))
    h.dispatch(DirCreatedEvent(b"/vol/new"))
    h.dispatch(FileClosedEvent(b"/vol/w.jpg"))
    h.dispatch(DirMovedEvent(b"/vol", b"/elsewhere"))
    assert got == [([b"/vol/b.jpg", b"/vol/a.jpg"], False), ([b"/vol/e", b"/vol/d"], True),
                   ([b"/vol/final.jpg"], False), ([b"/vol/w.jpg"], False)]
    assert gone == [b"/vol"]


# -- sweeps ----------------------------------------------------------------------------------

def test_sweep_finds_changed_directories_only(lib: Library, tree: Path) -> None:
    keep = _write(tree / "a" / "keep.jpg")
    doomed = _write(tree / "b" / "doomed.jpg")
    _write(tree / "c" / "d" / "e.jpg")
    lib.scan([tree])
    sweeper = DirSweeper(os.fsencode(tree))
    sweeper.baseline()
    assert sweeper.changed(lib.env.read) == []
    new = _write(tree / "a" / "new.jpg")
    doomed.unlink()
    fresh_dir = _write(tree / "c" / "fresh" / "deep" / "f.jpg")
    import shutil

    shutil.rmtree(tree / "c" / "d")
    found = set(sweeper.changed(lib.env.read) or [])
    assert os.fsencode(new) in found and os.fsencode(keep) in found
    assert os.fsencode(doomed) in found
    assert os.fsencode(tree / "c" / "fresh") in found  # walked whole
    assert os.fsencode(fresh_dir) not in found
    assert os.fsencode(tree / "c" / "d") in found  # gone: its records go
    lib.upsert_paths(sorted(found))
    paths = {r["path"] for r in lib.list_media()}
    assert paths == {str(keep), str(new), str(fresh_dir)}


def test_sweep_refuses_to_judge_an_unmounted_root(lib: Library, tree: Path,
                                                  tmp_path: Path) -> None:
    _write(tree / "a.jpg")
    sweeper = DirSweeper(os.fsencode(tree))
    sweeper.baseline()
    os.rename(tree, tmp_path / "away")
    tree.mkdir()  # the empty mount point
    assert sweeper.changed(lib.env.read) is None


def test_stored_children_skips_subtrees(lib: Library, tree: Path) -> None:
    for name in ("x.jpg", "sub/1.jpg", "sub/2.jpg", "sub/deeper/3.jpg", "sub-2/4.jpg"):
        _write(tree / name)
    lib.scan([tree])
    with lib.env.read() as txn:
        got = stored_children(txn, os.fsencode(tree))
    assert got == {os.fsencode(tree / n) for n in ("x.jpg", "sub", "sub-2")}


# -- lock and state file ---------------------------------------------------------------------

def test_lock_is_exclusive_and_dies_with_its_process(tmp_path: Path) -> None:
    first = DataDirLock(str(tmp_path))
    first.acquire()
    assert is_locked(str(tmp_path)) and holder_pid(first.path) == os.getpid()
    with pytest.raises(BusyError) as err:
        DataDirLock(str(tmp_path)).acquire()
    assert err.value.exit_code == 4 and f"pid {os.getpid()}" in err.value.message
    first.release()
    assert not is_locked(str(tmp_path))
    # A holder killed with SIGKILL leaves a file but no lock.
    child = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from kvmedia.lockfile import DataDirLock; "
        f"DataDirLock({str(tmp_path)!r}).acquire(); print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE)
    assert child.stdout is not None and child.stdout.readline() == b"held\n"
    assert is_locked(str(tmp_path))
    child.kill()
    child.wait()
    child.stdout.close()
    with DataDirLock(str(tmp_path)) as again:
        assert again.held


def test_state_file_is_never_torn(tmp_path: Path) -> None:
    stop = threading.Event()
    big = {"pid": 1, "watch_paths": ["/x" * 500] * 50}

    def writer() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            write_state(str(tmp_path), {**big, "n": n})

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        seen = set()
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            try:
                raw = (tmp_path / "state.json").read_bytes()
            except FileNotFoundError:
                continue
            seen.add(orjson.loads(raw)["n"])
    finally:
        stop.set()
        thread.join()
    assert len(seen) > 3
    assert read_state(str(tmp_path))["pid"] == 1  # type: ignore[index]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# -- overflow: a Watcher in this process -----------------------------------------------------

def test_a_queue_overflow_is_logged_once_and_rescanned(data_dir: Path, tree: Path) -> None:
    present = _write(tree / "present.jpg")
    lib = Library.open(data_dir)
    watcher = Watcher(lib, WatchOptions(paths=[os.fsencode(tree)], debounce_s=0.05,
                                        echo=False))
    thread = threading.Thread(target=watcher.run)
    thread.start()
    reader = lib  # LMDB allows one handle per process: read through the watcher's own
    try:
        deadline = time.monotonic() + 30
        while reader.find_by_path(os.fsencode(present)) is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        # A change whose events the kernel dropped: the record is gone, the file is not.
        rec = reader.find_by_path(os.fsencode(present))

        def drop(txn: object) -> None:
            w = lib.store.writer(txn)  # type: ignore[arg-type]
            w.delete(rec)  # type: ignore[arg-type]
            w.finish()

        lib.env.write(drop)
        watcher._on_overflow()
        while reader.find_by_path(os.fsencode(present)) is None:
            assert time.monotonic() < deadline, "the rescan did not restore the record"
            time.sleep(0.05)
    finally:
        watcher.stop.set()
        thread.join(timeout=30)
        lib.close()
    assert not thread.is_alive()
    log = (data_dir / "logs" / "watcher.out.log").read_text()
    assert log.count("inotify queue overflowed") == 1
    assert "inotify queue overflowed" in (data_dir / "logs" / "watcher.err.log").read_text()
    state = read_state(str(data_dir))
    assert state is not None and state["overflows"] == 1 and state["running"] is False
