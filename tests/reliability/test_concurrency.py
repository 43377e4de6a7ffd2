"""Readers in other processes search and list while a writer scans, merges and rebuilds;
a reader killed while holding a read transaction does not block the writer. No reader ever
sees an error, and every answer is self-consistent (each hit is a live record matching the
query's word).

At scale (5k files in CI, 100k under --soak): the same readers plus the watcher applying a
stream of changes, a map that starts at 1 MiB and grows under them, readers killed while
holding transactions and a second `kvmedia scan` while the watcher writes; afterwards the
watcher alone must have brought the records to the file system (no lost update)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from rel_helpers import assert_consistent, cli_env, fs_files, make_tree, records, run

from kvmedia import Library
from kvmedia.pathbytes import get_field
from kvmedia.watch.runlog import read_state

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


# -- at scale: readers, a scanning writer, the watcher and a second scan together -------------

_LOOP_READER = r"""
import os, subprocess, sys, time
data, stop, mode = sys.argv[1], sys.argv[2], sys.argv[3]
n = 0
if mode == "lib":
    from kvmedia import Library
    from kvmedia.pathbytes import get_field
    lib = Library.open(data, readonly=True)
    if os.environ.get("HOLD"):
        with lib.env.read():
            print("holding", flush=True)
            time.sleep(3600)
    while not os.path.exists(stop):
        for word in ("beach", "song", "holiday"):
            result = lib.search(word, limit=None)
            for rec in result.hits:
                assert word.encode() in (get_field(rec, "path") or b"").lower(), rec
            assert result.total == len(result.hits)
            n += 1
        lib.list_media(limit=50)
else:
    while not os.path.exists(stop):
        for args in (["search", "beach", "--json"], ["list", "--limit", "50", "--json"]):
            proc = subprocess.run([sys.executable, "-m", "kvmedia", *args],
                                  capture_output=True, timeout=120)
            assert proc.returncode in (0, 1), (args, proc.returncode, proc.stderr[-2000:])
            assert b"Traceback" not in proc.stderr, proc.stderr[-2000:]
            n += args[0] == "search"
print(n, flush=True)
"""

MAP0 = 1 << 20
"""The map the scale run starts from (KVMEDIA_LMDB_MAP_SIZE): far too small, so it grows."""


def _loop_reader(data_dir: Path, stop: Path, mode: str, hold: bool = False
                 ) -> subprocess.Popen[bytes]:
    env = dict(cli_env(data_dir), HOLD="1" if hold else "")
    return subprocess.Popen([sys.executable, "-c", _LOOP_READER, str(data_dir), str(stop), mode],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def _growth_steps(start: int, end: int) -> int:
    """How many `Env._grow` steps lead from a map of `start` bytes to one of `end`."""
    steps = 0
    while start < end:
        start = max(start * 2, start + (64 << 20))
        steps += 1
    return steps


class _Mutator(threading.Thread):
    """Creates, rewrites, renames and deletes files under `tree` until stopped: the watcher's
    work while the scans and readers run."""

    def __init__(self, tree: Path, outside: Path) -> None:
        super().__init__(daemon=True)
        self.tree, self.outside = os.fsencode(tree), os.fsencode(outside)
        self.halt = threading.Event()
        self.ops = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        rng = random.Random(7)
        mine: list[bytes] = []
        try:
            while not self.halt.is_set():
                i = self.ops
                kind = i % 6
                if kind in (0, 1) or len(mine) < 4:
                    d = os.path.join(self.tree, b"live%d" % (i % 11))
                    os.makedirs(d, exist_ok=True)
                    path = os.path.join(d, b"beach live %d.jpg" % i)
                    with open(path, "wb") as fh:
                        fh.write(b"n" * (i % 40 + 1))
                    mine.append(path)
                elif kind == 2:
                    path = rng.choice(mine)
                    with open(path, "ab") as fh:
                        fh.write(b"more")
                elif kind == 3:
                    path = mine.pop(rng.randrange(len(mine)))
                    dst = os.path.join(os.path.dirname(path), b"song moved %d.mp3" % i)
                    os.rename(path, dst)
                    mine.append(dst)
                elif kind == 4:
                    os.unlink(mine.pop(rng.randrange(len(mine))))
                else:  # out of the watched tree and back in under a new name
                    path = mine.pop(rng.randrange(len(mine)))
                    away = os.path.join(self.outside, b"away%d" % i)
                    os.rename(path, away)
                    back = os.path.join(self.tree, b"live%d" % (i % 11), b"holiday back %d.png" % i)
                    os.rename(away, back)
                    mine.append(back)
                self.ops += 1
                time.sleep(0.01)
        except BaseException as exc:  # reported by the test
            self.error = exc


def _wait_records_equal_files(lib: Library, tree: Path, timeout: float) -> None:
    """The watcher converges on its own (no scan helps): every file has a record of its
    current size and no record lacks a file."""
    deadline = time.monotonic() + timeout
    while True:
        files = {p: os.lstat(p).st_size for p in fs_files(tree)}
        recs = {get_field(r, "path"): r["size"] for r in records(lib)}
        if recs == files:
            return
        if time.monotonic() > deadline:
            missing = sorted(set(files) - set(recs))[:5]
            extra = sorted(set(recs) - set(files))[:5]
            stale = sorted(p for p in set(files) & set(recs) if files[p] != recs[p])[:5]
            raise AssertionError(f"records != files: missing {missing}, extra {extra}, "
                                 f"stale sizes {stale}")
        time.sleep(0.2)


def _scale_run(tree: Path, data_dir: Path, tmp_path: Path, n: int, figures,
               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KVMEDIA_LMDB_MAP_SIZE", str(MAP0))  # every process starts small
    make_tree(tree, n)
    outside = tmp_path / "outside"
    outside.mkdir()
    stop = tmp_path / "stop-readers"
    with Library.open(data_dir) as lib:
        map_before = lib.env.map_size()
        disk_before = lib.env.disk_bytes()
        watcher_err = open(tmp_path / "watcher.stderr", "wb")  # noqa: SIM115 - closed below
        watcher = subprocess.Popen(
            [sys.executable, "-m", "kvmedia", "watch", os.fsencode(tree), "--debounce", "0.2",
             "--settle", "0.2", "--no-scan", "--state-interval", "0.2"],
            env=cli_env(data_dir), stdout=subprocess.DEVNULL, stderr=watcher_err)
        try:
            deadline = time.monotonic() + 60
            while not (read_state(str(data_dir)) or {}).get("running"):
                assert watcher.poll() is None, (tmp_path / "watcher.stderr").read_bytes()
                assert time.monotonic() < deadline, "the watcher did not start"
                time.sleep(0.05)
            readers = [_loop_reader(data_dir, stop, mode) for mode in ("lib", "lib", "cli", "cli")]
            holders = [_loop_reader(data_dir, stop, "lib", hold=True) for _ in range(2)]
            for proc in holders:
                assert proc.stdout is not None and proc.stdout.readline().strip() == b"holding"
            mutator = _Mutator(tree, outside)
            mutator.start()
            scan = threading.Thread(target=lambda: lib.scan([tree]))
            scan.start()  # the writer: the whole tree, while the watcher applies changes
            time.sleep(1.0)
            for proc in holders:  # killed while holding a read transaction
                proc.send_signal(signal.SIGKILL)
                proc.wait()
            figures.add("concurrency", "readers killed holding a transaction", len(holders))
            scan.join()
            # A burst for the watcher, and `kvmedia scan` started while it applies the burst.
            for i in range(300):
                with open(os.path.join(os.fsencode(tree), b"d1", b"burst song %d.mp3" % i),
                          "wb") as fh:
                    fh.write(b"b" * (i + 1))
            second = run(data_dir, "scan", os.fsencode(tree), timeout=600)
            assert second.returncode == 0, second.stderr[-2000:]
            lib.scan([tree])  # the writer goes on after its readers were killed
            mutator.halt.set()
            mutator.join()
            assert mutator.error is None, mutator.error
            figures.add("concurrency", "watched file changes during scans", mutator.ops)
            _wait_records_equal_files(lib, tree, timeout=120)  # no update lost
            stop.touch()
            for proc in readers:
                out, err = proc.communicate(timeout=300)
                assert proc.returncode == 0, err.decode()[-2000:]
                figures.add("concurrency", "reader searches", int(out.split()[-1]))
            figures.add("concurrency", "reader processes", len(readers))
            map_after, disk_after = lib.env.map_size(), lib.env.disk_bytes()
        finally:
            stop.touch()
            if watcher.poll() is None:
                watcher.send_signal(signal.SIGTERM)
            watcher.wait(timeout=60)
            watcher_err.close()
    assert watcher.returncode == 0, (tmp_path / "watcher.stderr").read_bytes()[-3000:]
    err_log = (data_dir / "logs" / "watcher.err.log").read_text(errors="replace")
    assert " ERROR " not in err_log, err_log[-3000:]
    assert map_after > map_before and disk_after > disk_before
    figures.add("concurrency", "map growths under readers", _growth_steps(map_before, map_after))
    figures.max("concurrency", "map size reached (MiB)", map_after >> 20)
    figures.max("concurrency", "data.mdb size reached (MiB)", disk_after >> 20)
    figures.max("concurrency", "files in the scale run", n)
    assert_consistent(data_dir, tree)


def test_scale_readers_writer_watcher_and_a_second_scan(
        tree: Path, data_dir: Path, tmp_path: Path, figures,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """4 reader processes (2 Library loops, 2 CLI loops) while the writer scans 5k files from
    a 1 MiB map, the watcher applies a stream of changes, readers holding transactions are
    killed and `kvmedia scan` runs while the watcher writes: no errors, no lost update."""
    _scale_run(tree, data_dir, tmp_path, 5000, figures, monkeypatch)


@pytest.mark.soak
def test_scale_readers_writer_watcher_and_a_second_scan_100k(
        tree: Path, data_dir: Path, tmp_path: Path, figures,
        monkeypatch: pytest.MonkeyPatch) -> None:
    _scale_run(tree, data_dir, tmp_path, 100_000, figures, monkeypatch)


class _ChangeMidWalk:
    """A scan's progress hook that, once the walk has looked at the first files, changes them
    on disk and has another process record the change (`kvmedia notify`, the watcher's own
    write) before the scan commits its batch."""

    def __init__(self, data_dir: Path, tree: Path) -> None:
        self.data_dir, self.tree, self.fired = data_dir, tree, False

    def update(self, fields: dict[str, object]) -> None:
        if self.fired or fields.get("phase") != "scan":
            return
        self.fired = True
        t = self.tree
        (t / "a-grown.jpg").write_bytes(b"three")
        (t / "b-gone.jpg").unlink()
        os.rename(t / "c-renamed.jpg", t / "zz-renamed.jpg")
        proc = run(self.data_dir, "notify", *(os.fsencode(t / n) for n in (
            "a-grown.jpg", "b-gone.jpg", "c-renamed.jpg", "zz-renamed.jpg")))
        assert proc.returncode == 0, proc.stderr

    def done(self, fields: dict[str, object]) -> None:
        pass


def test_a_scan_never_commits_an_older_look_than_another_writer_recorded(
        tree: Path, data_dir: Path, figures) -> None:
    """A scan commits a batch up to a second after its walk looked at the files. A newer state
    recorded meanwhile by another process (the watcher) must not be overwritten by that older
    look: no stale size, no record for a file deleted or renamed away since."""
    for i in range(300):
        (tree / f"y{i:03d}.jpg").write_bytes(b"y")
    (tree / "a-grown.jpg").write_bytes(b"1")
    with Library.open(data_dir) as lib:
        lib.scan([tree])
        (tree / "a-grown.jpg").write_bytes(b"22")  # the scan will see it changed...
        (tree / "b-gone.jpg").write_bytes(b"b")  # ...and these two new
        (tree / "c-renamed.jpg").write_bytes(b"c")
        hook = _ChangeMidWalk(data_dir, tree)
        lib.scan([tree], progress=hook)
        assert hook.fired
        files = {p: os.lstat(p).st_size for p in fs_files(tree)}
        recs = {get_field(r, "path"): r["size"] for r in records(lib)}
        assert recs == files, (set(recs) ^ set(files),
                               {p for p in files if recs.get(p) != files[p]})
    figures.add("concurrency", "scan/watcher races tried", 3)
    assert_consistent(data_dir, tree)



_KEEPER = r"""
import sys, time
from kvmedia import Library
lib = Library.open(sys.argv[1], readonly=True)
print("open", flush=True)
time.sleep(3600)
"""


def _grow_by_rewrites(data_dir: Path, tree: Path, kill_a_holder: bool) -> tuple[int, str]:
    """Rewrite and rescan the same files while another process (a watcher, say) keeps the
    environment open. Returns data.mdb's size and the lock table as LMDB reports it."""
    make_tree(tree, 200)
    with Library.open(data_dir) as lib:
        lib.scan([tree])
    keeper = subprocess.Popen([sys.executable, "-c", _KEEPER, str(data_dir)],
                              stdout=subprocess.PIPE, env=cli_env(data_dir))
    try:
        assert keeper.stdout is not None and keeper.stdout.readline().strip() == b"open"
        dead = 0
        if kill_a_holder:
            (holder,) = _readers(data_dir, 1, 0.1, hold=True)
            assert holder.stdout is not None and holder.stdout.readline().strip() == b"holding"
            holder.send_signal(signal.SIGKILL)
            holder.wait()
            dead = holder.pid
        with Library.open(data_dir) as lib:
            for i in range(12):
                make_tree(tree, 200, seed=1000 * (i + 1))
                lib.scan([tree])
            table = lib.env.env.readers()
            size = lib.env.disk_bytes()
        if dead:
            assert f"{dead} " not in table and f" {dead}\n" not in table, table
        return size, table
    finally:
        keeper.kill()
        keeper.wait()


def test_a_killed_readers_slot_is_cleared_so_pages_are_reused(tmp_path: Path, figures) -> None:
    """A reader killed inside a read transaction leaves its slot in LMDB's lock table; while
    any process keeps the environment open (a watcher: for days) that stale snapshot would pin
    every page freed since, and the file would grow with every write. The writer clears such
    slots: the dead pid leaves the table and the file grows no more than without the kill."""
    size_clean, _ = _grow_by_rewrites(tmp_path / "a-data", tmp_path / "a-vol", False)
    size_killed, table = _grow_by_rewrites(tmp_path / "b-data", tmp_path / "b-vol", True)
    figures.add("concurrency", "killed readers", 1)
    figures.max("concurrency", "data.mdb growth with a killed reader (%)",
                round(100 * size_killed / size_clean))
    assert size_killed <= size_clean * 1.25, (size_killed, size_clean, table)
