"""The watcher past the kernel's limits: a tiny inotify queue that overflows under a burst, a
watch limit used up by many new directories; moves in, out of and within a watched tree; a
file written in pieces. In each case the watcher alone (no scan from outside) must bring the
records to the truth — every file recorded with its current size, nothing else, searchable —
within a bounded wait, and the run ends with `assert_consistent` (fsck, final scan, oracle).

Kernel limits: `fs.inotify.max_queued_events` is global and read when an inotify instance is
created, so it is lowered only until the watcher has made its instance (then restored); the
watch limit is lowered inside a user namespace of its own (`user.max_inotify_watches`), so no
other process on the machine is affected.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from rel_helpers import assert_consistent, cli_env, fs_files, run

from kvmedia import Library
from kvmedia.pathbytes import get_field
from kvmedia.watch.runlog import read_state

WAIT_S = 120.0
QUEUE_SYSCTL = Path("/proc/sys/fs/inotify/max_queued_events")


def wait_for(fn: Callable[[], Any], what: str, timeout: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


class Watch:
    """`kvmedia watch` as a subprocess (optionally behind a prefix such as `unshare`), its
    stderr in a file so a chatty watcher never blocks on a full pipe."""

    def __init__(self, data_dir: Path, tree: Path, *args: str, prefix: list[str] | None = None
                 ) -> None:
        self.data_dir = data_dir
        self.err_path = data_dir.parent / "watch.stderr"
        self.err = open(self.err_path, "wb")  # noqa: SIM115 - closed in stop()
        cmd = [sys.executable, "-m", "kvmedia", "watch", str(tree), "--debounce", "0.1",
               "--settle", "0.1", "--state-interval", "0.2", *args]
        self.proc = subprocess.Popen([*(prefix or []), *cmd], env=cli_env(data_dir),
                                     stdout=subprocess.DEVNULL, stderr=self.err)

    def log(self, name: str = "watcher.out.log") -> str:
        try:
            return (self.data_dir / "logs" / name).read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def alive(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"watcher exited {self.proc.returncode}: "
                                 f"{self.err_path.read_bytes()[-2000:]!r}")
        return True

    def wait_ready(self) -> None:
        wait_for(lambda: self.alive() and "scan-on-start:" in self.log(), "scan-on-start")

    def has_inotify_fd(self) -> bool:
        fd_dir = f"/proc/{self.proc.pid}/fd"
        try:
            return any(os.readlink(f"{fd_dir}/{fd}") == "anon_inode:inotify"
                       for fd in os.listdir(fd_dir))
        except OSError:
            return False

    def state(self) -> dict[str, Any]:
        return read_state(str(self.data_dir)) or {}

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        finally:
            self.err.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.err.close()


@pytest.fixture
def watches() -> Iterator[list[Watch]]:
    started: list[Watch] = []
    yield started
    for w in started:
        w.kill()


def truth(tree: Path) -> dict[bytes, int]:
    """Path -> size of every file the library must hold (none under a hidden directory)."""
    return {p: os.lstat(p).st_size for p in fs_files(tree) if b"/." not in p}


def recorded(data_dir: Path) -> dict[bytes, int]:
    lib = Library.open(data_dir, readonly=True)
    try:
        return {get_field(r, "path"): r["size"] for r in lib.list_media(limit=None)}
    finally:
        lib.close()


def wait_converged(data_dir: Path, tree: Path, timeout: float = WAIT_S) -> None:
    """Records == files (paths and sizes), reached by the watcher alone within `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        want, got = truth(tree), recorded(data_dir)
        if want == got:
            return
        if time.monotonic() > deadline:
            missing = sorted(set(want) - set(got))
            extra = sorted(set(got) - set(want))
            stale = sorted(p for p in set(want) & set(got) if want[p] != got[p])
            raise AssertionError(f"records never converged: {len(missing)} missing "
                                 f"{missing[:3]}, {len(extra)} extra {extra[:3]}, "
                                 f"{len(stale)} stale {stale[:3]}")
        time.sleep(0.3)


def cli_search(data_dir: Path, *words: str) -> set[bytes]:
    proc = run(data_dir, "search", *words, "--limit", "100000", "--json")
    assert proc.returncode in (0, 1), proc.stderr
    lines = [orjson.loads(line) for line in proc.stdout.splitlines()]
    return {get_field(x, "path") for x in lines if "uuid" in x}  # type: ignore[misc]


def no_errors(w: Watch) -> None:
    err = w.log("watcher.err.log")
    assert " ERROR " not in err, err[-3000:]


def churn(tree: Path, outside: Path, n: int, tag: str) -> int:
    """A burst of `n` new files over new directories, with moves within the tree, out of it
    and back in, and deletions mixed in. Returns how many operations it made."""
    ops = 0
    made: list[Path] = []
    for i in range(n):
        d = tree / f"{tag}{i % 60:02d}" / ("deep" if i % 3 else "")
        d.mkdir(parents=True, exist_ok=True)
        f = d / f"{tag} beach {i}.jpg"
        f.write_bytes(b"x" * (i % 30 + 1))
        made.append(f)
        ops += 1
        if i % 10 == 5:  # within: to another directory, a new name
            src = made.pop(0)
            dst = tree / f"{tag}{(i + 7) % 60:02d}" / f"{tag} moved {i}.png"
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.rename(src, dst)
            made.append(dst)
            ops += 1
        elif i % 10 == 7:  # out of the watched tree
            os.rename(made.pop(0), outside / f"{tag}-out-{i}.jpg")
            ops += 1
        elif i % 10 == 8:  # in from outside
            (outside / f"{tag}-in-{i}.jpg").write_bytes(b"in")
            os.rename(outside / f"{tag}-in-{i}.jpg", tree / f"{tag}00" / f"{tag} in {i}.jpg")
            ops += 1
        elif i % 10 == 9:
            made.pop(0).unlink()
            ops += 1
    return ops


# -- inotify queue overflow ----------------------------------------------------------------------

class QueueLimit:
    """fs.inotify.max_queued_events, lowered by `lower()` and put back by `restore()` (also at
    teardown, whatever happened)."""

    def __init__(self) -> None:
        self.old = QUEUE_SYSCTL.read_text()

    def lower(self, value: int) -> None:
        QUEUE_SYSCTL.write_text(f"{value}\n")

    def restore(self) -> None:
        if QUEUE_SYSCTL.read_text() != self.old:
            QUEUE_SYSCTL.write_text(self.old)


@pytest.fixture
def queue_limit() -> Iterator[QueueLimit]:
    try:
        limit = QueueLimit()
        QUEUE_SYSCTL.write_text(limit.old)
    except OSError as exc:
        pytest.skip(f"fs.inotify.max_queued_events is not writable here ({exc.strerror})")
    if int(limit.old) < 1024:  # never take another run's lowered value for the original
        pytest.skip(f"fs.inotify.max_queued_events is already lowered ({limit.old.strip()})")
    try:
        yield limit
    finally:
        limit.restore()


def _overflow_run(tree: Path, data_dir: Path, tmp_path: Path, n: int, figures,
                  queue_limit: QueueLimit, watches: list[Watch]) -> None:
    for i in range(20):
        (tree / f"old{i}" / f"old song {i}.mp3").parent.mkdir()
        (tree / f"old{i}" / f"old song {i}.mp3").write_bytes(b"s")
    outside = tmp_path / "outside"
    outside.mkdir()
    queue_limit.lower(16)
    try:
        w = Watch(data_dir, tree)
        watches.append(w)
        wait_for(lambda: w.alive() and w.has_inotify_fd(), "the watcher's inotify instance")
    finally:
        queue_limit.restore()  # the watcher keeps its 16-event queue; nobody else gets one
    w.wait_ready()
    ops = churn(tree, outside, n, "burst")
    wait_converged(data_dir, tree)
    overflows = wait_for(lambda: w.state().get("overflows"), "state.json to count overflows")
    assert "inotify queue overflowed" in w.log()
    # Directories made during the overflows are watched again: a later file in one is seen.
    late = tree / "burst17" / "deep" / "late holiday.jpg"
    late.write_bytes(b"late")
    wait_converged(data_dir, tree, timeout=30)
    assert cli_search(data_dir, "burst", "beach") == {
        p for p in truth(tree) if b"burst beach" in os.path.basename(p)}
    assert cli_search(data_dir, "late", "holiday") == {os.fsencode(late)}
    assert w.stop() == 0
    no_errors(w)
    figures.add("watcher", "queue overflows survived", overflows)
    figures.add("watcher", "file operations during overflows", ops)
    figures.add("watcher", "runs converged to the truth", 1)
    figures.add("watcher", "lost", 0)
    assert_consistent(data_dir, tree)


def test_an_overflowing_queue_converges_to_the_truth(
        tree: Path, data_dir: Path, tmp_path: Path, figures,
        queue_limit: QueueLimit, watches: list[Watch]) -> None:
    _overflow_run(tree, data_dir, tmp_path, 2000, figures, queue_limit, watches)


@pytest.mark.soak
def test_an_overflowing_queue_converges_to_the_truth_soak(
        tree: Path, data_dir: Path, tmp_path: Path, figures,
        queue_limit: QueueLimit, watches: list[Watch]) -> None:
    _overflow_run(tree, data_dir, tmp_path, 20000, figures, queue_limit, watches)


# -- watch limit used up -------------------------------------------------------------------------

def _userns_limit_works() -> bool:
    if not shutil.which("unshare"):
        return False
    try:
        probe = subprocess.run(["unshare", "-U", "-r", "sh", "-c",
                                "echo 7 > /proc/sys/user/max_inotify_watches"],
                               capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return probe.returncode == 0


def _limit_run(tree: Path, data_dir: Path, tmp_path: Path, n: int, limit: int, figures,
               watches: list[Watch]) -> None:
    if not _userns_limit_works():
        pytest.skip("needs user namespaces to lower user.max_inotify_watches for one process")
    for i in range(10):
        (tree / f"old{i}").mkdir()
        (tree / f"old{i}" / f"old clip {i}.mkv").write_bytes(b"c")
    outside = tmp_path / "outside"
    outside.mkdir()
    # The kernel limit is `limit` watches; --watch-budget lets the watcher try past it, so
    # the kernel itself refuses (ENOSPC) the directories made later.
    script = (f'echo {limit} > /proc/sys/user/max_inotify_watches && exec "$@"')
    w = Watch(data_dir, tree, "--sweep", "0.5", "--watch-budget", "100000",
              prefix=["unshare", "-U", "-r", "sh", "-c", script, "sh"])
    watches.append(w)
    w.wait_ready()
    ops = churn(tree, outside, n, "many")
    wait_converged(data_dir, tree)
    wait_for(lambda: "watch limit reached" in w.log(), "the watch-limit warning")
    assert w.log().count("watch limit reached") == 1, "said once"
    wait_for(lambda: w.state().get("sweep_paths") == [str(tree)], "the root swept")
    late = tree / "many59" / "deep" / "late sunset.jpg"  # seen by a sweep, not by inotify
    late.write_bytes(b"late")
    shutil.rmtree(tree / "many03")
    os.rename(tree / "many04", tree / "renamed dir")
    wait_converged(data_dir, tree, timeout=60)
    assert cli_search(data_dir, "late", "sunset") == {os.fsencode(late)}
    assert cli_search(data_dir, "renamed") == {
        p for p in truth(tree) if p.startswith(os.fsencode(tree / "renamed dir") + b"/")}
    dirs = sum(1 for _ in os.walk(tree))
    assert w.stop() == 0
    no_errors(w)
    figures.add("watcher", "directories beyond the watch limit", max(0, dirs - limit))
    figures.add("watcher", "file operations past the watch limit", ops)
    figures.add("watcher", "runs converged to the truth", 1)
    figures.add("watcher", "lost", 0)
    assert_consistent(data_dir, tree)


def test_a_used_up_watch_limit_converges_to_the_truth(
        tree: Path, data_dir: Path, tmp_path: Path, figures, watches: list[Watch]) -> None:
    _limit_run(tree, data_dir, tmp_path, 600, 25, figures, watches)


@pytest.mark.soak
def test_a_used_up_watch_limit_converges_to_the_truth_soak(
        tree: Path, data_dir: Path, tmp_path: Path, figures, watches: list[Watch]) -> None:
    _limit_run(tree, data_dir, tmp_path, 10000, 25, figures, watches)


# -- moves, slow writes ----------------------------------------------------------------------------

def test_single_file_moves_in_out_within_and_over_another(
        tree: Path, data_dir: Path, tmp_path: Path, figures, watches: list[Watch]) -> None:
    """File moves (directory moves are in tests/test_watch.py): within keeps the uuid, out
    removes, in adds, into/out of a hidden directory removes/adds, and a rename over another
    file leaves one record, the mover's."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (tree / "a").mkdir()
    (tree / "b").mkdir()
    (tree / ".hidden").mkdir()
    for name in ("within.jpg", "leaver.jpg", "hider.jpg", "mover.jpg", "victim.jpg"):
        (tree / "a" / name).write_bytes(name.encode())
    (outside / "comer.jpg").write_bytes(b"comer")
    (tree / ".hidden" / "shy.jpg").write_bytes(b"shy")
    w = Watch(data_dir, tree)
    watches.append(w)
    w.wait_ready()
    before = {os.path.basename(p): u for p, u in _uuids(data_dir).items()}
    os.rename(tree / "a" / "within.jpg", tree / "b" / "within moved.jpg")
    os.rename(tree / "a" / "leaver.jpg", outside / "leaver.jpg")
    os.rename(outside / "comer.jpg", tree / "b" / "comer.jpg")
    os.rename(tree / "a" / "hider.jpg", tree / ".hidden" / "hider.jpg")
    os.rename(tree / ".hidden" / "shy.jpg", tree / "a" / "shy.jpg")
    os.rename(tree / "a" / "mover.jpg", tree / "a" / "victim.jpg")
    wait_converged(data_dir, tree, timeout=60)
    after = _uuids(data_dir)
    assert after[os.fsencode(tree / "b" / "within moved.jpg")] == before[b"within.jpg"]
    assert after[os.fsencode(tree / "a" / "victim.jpg")] == before[b"mover.jpg"]
    assert before[b"victim.jpg"] not in after.values()
    assert set(after) == {os.fsencode(tree / p) for p in (
        "b/within moved.jpg", "b/comer.jpg", "a/shy.jpg", "a/victim.jpg")}
    assert cli_search(data_dir, "leaver") == set() and cli_search(data_dir, "hider") == set()
    assert w.stop() == 0
    no_errors(w)
    shutil.rmtree(tree / ".hidden")  # assert_consistent compares with every file
    figures.add("watcher", "file moves applied", 6)
    assert_consistent(data_dir, tree)


def _uuids(data_dir: Path) -> dict[bytes, str]:
    lib = Library.open(data_dir, readonly=True)
    try:
        return {get_field(r, "path"): r["uuid"] for r in lib.list_media(limit=None)}
    finally:
        lib.close()


def test_a_file_written_in_pieces_with_pauses_is_indexed_once(
        tree: Path, data_dir: Path, figures, watches: list[Watch]) -> None:
    """Pieces 0.4 s apart for ~2 s: each pause is longer than the debounce (0.1 s), so the
    path is released between pieces; the settle rule (1 s of no write) must still hold it
    until the last piece: one 'added' entry, with the final size."""
    w = Watch(data_dir, tree, "--settle", "1.0")
    watches.append(w)
    w.wait_ready()
    path = tree / "slow copy.mkv"
    piece = b"p" * 1000
    with open(path, "wb") as fh:
        for _ in range(6):
            fh.write(piece)
            fh.flush()
            time.sleep(0.4)
    wait_converged(data_dir, tree, timeout=60)
    time.sleep(1.5)  # a late second write would show now
    proc = run(data_dir, "events", "--json")
    assert proc.returncode == 0, proc.stderr
    ops = [(e["op"], e.get("size")) for e in map(orjson.loads, proc.stdout.splitlines())
           if e.get("path") == str(path)]
    assert ops == [("added", 6 * len(piece))], ops
    assert w.stop() == 0
    no_errors(w)
    figures.add("watcher", "slow writes indexed once", 1)
    assert_consistent(data_dir, tree)
