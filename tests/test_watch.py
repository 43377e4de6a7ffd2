"""The watcher end to end: a real `kvmedia watch` subprocess with real inotify (watchdog) on
real temp trees; what it does is checked from other processes (this one, through a read-only
Library, and the `kvmedia` CLI). Waits are bounded generously; no test asserts a duration.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest

from kvmedia import Library
from kvmedia.pathbytes import get_field

T = TypeVar("T")
WAIT_S = 30.0


def cli_env(data_dir: Path) -> dict[str, str]:
    return dict(os.environ, KVMEDIA_DATA_DIR=str(data_dir),
                KVMEDIA_CONFIG=str(data_dir) + ".toml")


class WatcherProc:
    """`kvmedia watch` in a subprocess, started and ready (its scan-on-start done)."""

    def __init__(self, data_dir: Path, *args: str | bytes, debounce: float = 0.1,
                 settle: float | None = None, ready: bool = True) -> None:
        self.data_dir = data_dir
        settle_args = ["--settle", str(settle if settle is not None else debounce)]
        self._scans_before = self.log_text().count("scan-on-start:")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kvmedia", "watch", "--debounce", str(debounce),
             *settle_args, *args],
            env=cli_env(data_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if ready:
            self.wait_ready()

    @property
    def out_log(self) -> Path:
        return self.data_dir / "logs" / "watcher.out.log"

    def log_text(self) -> str:
        try:
            return self.out_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_ready(self) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"watcher exited {self.proc.returncode}: "
                                     f"{self.proc.stderr.read()!r}")  # type: ignore[union-attr]
            return self.log_text().count("scan-on-start:") > self._scans_before

        wait_for(ready, "the watcher's scan-on-start")

    def terminate(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=WAIT_S)
        finally:
            for stream in (self.proc.stdout, self.proc.stderr):
                if stream is not None:
                    stream.close()

    def kill9(self) -> None:
        self.terminate(signal.SIGKILL)


def wait_for(fn: Callable[[], T], what: str, timeout: float = WAIT_S) -> T:
    """Poll `fn` until it returns something truthy; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Reader:
    """A read-only view of the library from the test process (another process than the
    watcher)."""

    def __init__(self, data_dir: Path) -> None:
        self.lib = Library.open(data_dir, readonly=True)

    def close(self) -> None:
        self.lib.close()

    def by_path(self) -> dict[bytes, dict[str, Any]]:
        return {get_field(r, "path"): r for r in self.lib.list_media(sort="name")}

    def record(self, path: Path | bytes) -> dict[str, Any] | None:
        return self.lib.find_by_path(os.fsencode(path))

    def wait_record(self, path: Path | bytes, check: Callable[[dict[str, Any]], bool]
                    = lambda r: True) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            rec = self.record(path)
            return rec if rec is not None and check(rec) else None

        return wait_for(found, f"a record for {path!r}")

    def wait_gone(self, path: Path | bytes) -> None:
        wait_for(lambda: self.record(path) is None, f"{path!r} to leave the library")


def events(data_dir: Path, since: int = 0) -> list[dict[str, Any]]:
    proc = subprocess.run([sys.executable, "-m", "kvmedia", "events", "--since", str(since),
                           "--json"], env=cli_env(data_dir), capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [orjson.loads(line) for line in proc.stdout.splitlines()]


def search(data_dir: Path, *words: str) -> set[bytes]:
    """Paths `kvmedia search WORDS` finds, run in another process (exit 1 means none)."""
    code, lines = cli_json(data_dir, "search", *words)
    assert code in (0, 1), lines
    return {get_field(x, "path") for x in lines if "uuid" in x}  # type: ignore[misc]


def cli_json(data_dir: Path, *args: str | bytes) -> tuple[int, list[dict[str, Any]]]:
    proc = subprocess.run([sys.executable, "-m", "kvmedia", *args, "--json"],
                          env=cli_env(data_dir), capture_output=True, timeout=60)
    return proc.returncode, [orjson.loads(line) for line in proc.stdout.splitlines()]


# -- tests -------------------------------------------------------------------------------------

def _write(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def reader(data_dir: Path) -> Iterator[Callable[[], Reader]]:
    made: list[Reader] = []

    def make() -> Reader:
        made.append(Reader(data_dir))
        return made[-1]

    yield make
    for r in made:
        r.close()


@pytest.fixture
def watchers() -> Iterator[list[WatcherProc]]:
    started: list[WatcherProc] = []
    yield started
    for w in started:
        if w.proc.poll() is None:
            w.kill9()


def test_files_created_modified_renamed_deleted_are_seen_by_other_processes(
        tree: Path, data_dir: Path, reader: Callable[[], Reader],
        watchers: list[WatcherProc]) -> None:
    old = _write(tree / "old.jpg", b"1")
    watchers.append(WatcherProc(data_dir, os.fsencode(tree)))
    r = reader()
    first = r.wait_record(old)  # scan-on-start

    new = _write(tree / "sub" / "clip.mp4", b"video")
    odd = _write(Path(os.fsdecode(os.fsencode(tree) + b"/caf\xe9.jpg")), b"latin-1 name")
    r.wait_record(new)
    r.wait_record(odd)

    old.write_bytes(b"grown to a longer size")
    r.wait_record(old, lambda rec: rec["size"] == len(b"grown to a longer size"))

    moved = tree / "sub" / "renamed.jpg"
    os.rename(old, moved)
    rec = r.wait_record(moved)
    assert rec["uuid"] == first["uuid"], "a renamed file keeps its uuid"
    r.wait_gone(old)

    assert search(data_dir, "renamed") == {os.fsencode(moved)}
    assert search(data_dir, "old") == set(), "the old name is gone from the search index"
    assert search(data_dir, "clip") == {os.fsencode(new)}

    new.unlink()
    r.wait_gone(new)
    assert search(data_dir, "clip") == set()

    # Another process running the CLI sees the same thing.
    code, shown = cli_json(data_dir, "show", os.fsencode(moved))
    assert code == 0 and shown[0]["uuid"] == first["uuid"]
    code, listed = cli_json(data_dir, "list")
    assert {get_field(x, "path") for x in listed} == {os.fsencode(moved), os.fsencode(odd)}

    ops = [(e["op"], e.get("path")) for e in events(data_dir)]
    assert ("added", str(new)) in ops and ("deleted", str(new)) in ops
    assert ("moved", str(moved)) in ops
    assert ("modified", str(old)) in ops
    assert watchers[0].terminate() == 0


def test_directory_moves_keep_uuids_and_deletes_remove_everything_under(
        tree: Path, data_dir: Path, tmp_path: Path, reader: Callable[[], Reader],
        watchers: list[WatcherProc]) -> None:
    album = tree / "album"
    files = [_write(album / name, name.encode()) for name in ("a.jpg", "b.jpg", "deep/c.mp3")]
    watchers.append(WatcherProc(data_dir, os.fsencode(tree)))
    r = reader()
    uuids = {f.relative_to(album): r.wait_record(f)["uuid"] for f in files}

    os.rename(album, tree / "renamed")  # within the watched tree
    for rel, uuid in uuids.items():
        rec = r.wait_record(tree / "renamed" / rel)
        assert rec["uuid"] == uuid, "files in a moved directory keep their uuids"
    for f in files:
        assert r.record(f) is None
    assert search(data_dir, "album") == set()
    assert len(search(data_dir, "renamed")) == 3

    outside = tmp_path / "outside"
    os.rename(tree / "renamed", outside)  # moved out: gone from the library
    for rel in uuids:
        r.wait_gone(tree / "renamed" / rel)

    os.rename(outside, tree / "back")  # moved in from outside: added again
    for rel in uuids:
        r.wait_record(tree / "back" / rel)

    shutil.rmtree(tree / "back")
    wait_for(lambda: not r.by_path(), "every record under the deleted directory to go")
    assert search(data_dir, "back") == set()
    feed_ops = [e["op"] for e in events(data_dir)]
    assert feed_ops.count("moved") >= 3 and feed_ops.count("deleted") >= 6


def test_a_burst_of_thousands_of_files_is_applied_in_a_few_transactions(
        tree: Path, data_dir: Path, reader: Callable[[], Reader],
        watchers: list[WatcherProc]) -> None:
    debounce = 0.5
    w = WatcherProc(data_dir, os.fsencode(tree), debounce=debounce)
    watchers.append(w)
    n = 3000
    started = time.monotonic()
    for i in range(n):
        _write(tree / f"dcim{i % 10}" / f"IMG_{i:05d}.jpg", b"%d" % i)
    creating_s = time.monotonic() - started
    r = reader()
    wait_for(lambda: r.lib.count() == n, f"{n} records")
    assert len(search(data_dir, "IMG_02999")) == 1
    batches = [line for line in w.log_text().splitlines() if "] batch:" in line]
    # At most one transaction per debounce interval while the burst lasts, plus the tail;
    # never anywhere near one per file.
    assert 1 <= len(batches) <= max(10, creating_s / debounce + 3), batches
    assert w.terminate() == 0


def test_a_second_watcher_is_refused_with_exit_code_4(
        tree: Path, data_dir: Path, watchers: list[WatcherProc]) -> None:
    first = WatcherProc(data_dir, os.fsencode(tree))
    watchers.append(first)
    second = subprocess.run([sys.executable, "-m", "kvmedia", "watch", os.fsencode(tree)],
                            env=cli_env(data_dir), capture_output=True, timeout=60)
    assert second.returncode == 4
    assert b"already running" in second.stderr and b"pid %d" % first.proc.pid in second.stderr
    assert first.proc.poll() is None, "the running watcher is unaffected"
    code, status = cli_json(data_dir, "status")
    assert code == 0 and status[0]["running"] and status[0]["state"]["pid"] == first.proc.pid


def test_kill9_then_restart_loses_nothing(tree: Path, data_dir: Path,
                                          reader: Callable[[], Reader],
                                          watchers: list[WatcherProc]) -> None:
    keep = _write(tree / "keep.jpg", b"keep")
    doomed = _write(tree / "doomed.jpg", b"doomed")
    w = WatcherProc(data_dir, os.fsencode(tree))
    watchers.append(w)
    r = reader()
    keep_uuid = r.wait_record(keep)["uuid"]
    r.wait_record(doomed)
    # Changes in flight when the watcher dies, and more while it is down.
    burst = [_write(tree / "inflight" / f"f{i}.png", b"%d" % i) for i in range(200)]
    w.kill9()
    later = _write(tree / "while-down.mp4", b"down")
    doomed.unlink()
    os.rename(keep, tree / "kept.jpg")

    w2 = WatcherProc(data_dir, os.fsencode(tree))  # the lock died with the killed process
    watchers.append(w2)
    got = r.by_path()
    expected = {os.fsencode(p) for p in (*burst, later, tree / "kept.jpg")}
    assert set(got) == expected
    assert got[os.fsencode(tree / "kept.jpg")]["uuid"] == keep_uuid
    assert w2.terminate() == 0


def test_state_json_is_always_valid_while_being_rewritten(
        tree: Path, data_dir: Path, watchers: list[WatcherProc]) -> None:
    w = WatcherProc(data_dir, os.fsencode(tree), "--state-interval", "0.01")
    watchers.append(w)
    state_file = data_dir / "state.json"
    for i in range(200):
        _write(tree / f"s{i}.jpg")
    seen = set()
    reads = 0
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline or reads < 100:
        reads += 1
        raw = state_file.read_bytes()
        state = orjson.loads(raw)  # never torn: written to a temp file and renamed over
        seen.add(state["updated_at"])
        for key in ("pid", "started_at", "processed_count", "last_processed_at",
                    "last_processed_path", "last_error", "watch_paths", "debounce_seconds",
                    "queue_length", "mode"):
            assert key in state
    assert len(seen) > 5, "the file was rewritten while being read"
    assert w.terminate() == 0


def test_poll_mode_sees_changes(tree: Path, data_dir: Path, reader: Callable[[], Reader],
                                watchers: list[WatcherProc]) -> None:
    a = _write(tree / "a.jpg", b"a")
    w = WatcherProc(data_dir, os.fsencode(tree), "--poll", "0.2")
    watchers.append(w)
    r = reader()
    uuid = r.wait_record(a)["uuid"]
    b = _write(tree / "new" / "deep" / "b.mp3", b"b")
    r.wait_record(b)
    os.rename(a, tree / "new" / "a2.jpg")
    assert r.wait_record(tree / "new" / "a2.jpg")["uuid"] == uuid
    r.wait_gone(a)
    shutil.rmtree(tree / "new" / "deep")
    r.wait_gone(b)
    state = orjson.loads((data_dir / "state.json").read_bytes())
    assert state["mode"] == "poll"
    assert w.terminate() == 0


def test_sigterm_exits_0_after_writing_state_and_releasing_the_lock(
        tree: Path, data_dir: Path, reader: Callable[[], Reader],
        watchers: list[WatcherProc]) -> None:
    w = WatcherProc(data_dir, os.fsencode(tree))
    watchers.append(w)
    f = _write(tree / "x.jpg")
    reader().wait_record(f)
    assert w.terminate(signal.SIGTERM) == 0
    state = orjson.loads((data_dir / "state.json").read_bytes())
    assert state["running"] is False and state["processed_count"] >= 1
    assert state["last_processed_path"] == str(f)
    code, status = cli_json(data_dir, "status")
    assert code == 1 and status[0]["running"] is False
    text = w.log_text()
    assert "starting" in text and "scan-on-start: 0 files" in text
    assert f"processed {f} in " in text
    again = WatcherProc(data_dir, os.fsencode(tree))  # the lock was released
    watchers.append(again)
    assert again.terminate(signal.SIGINT) == 0


def test_notify_applies_at_once_through_the_watcher_or_directly(
        tree: Path, data_dir: Path, reader: Callable[[], Reader],
        watchers: list[WatcherProc]) -> None:
    direct = _write(tree / "direct.jpg")
    code, out = cli_json(data_dir, "notify", os.fsencode(direct))
    assert code == 0 and out[0]["via"] == "direct" and out[0]["added"] == 1
    r = reader()
    assert r.record(direct) is not None

    # A long debounce: only `notify` can make the change visible this soon.
    w = WatcherProc(data_dir, os.fsencode(tree), debounce=60, settle=60)
    watchers.append(w)
    pushed = _write(tree / "pushed" / "p.mp4")
    code, out = cli_json(data_dir, "notify", os.fsencode(tree / "pushed"))
    assert code == 0 and out[0] == {"type": "notify", "via": "watcher", "paths": 1,
                                    "applied": True}
    assert r.record(pushed) is not None, "visible as soon as notify returns"
    direct.unlink()
    code, out = cli_json(data_dir, "notify", os.fsencode(direct))
    assert code == 0 and r.record(direct) is None
    sock = data_dir / "watcher.sock"
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    assert w.terminate() == 0
    assert not sock.exists()


def test_a_file_still_being_written_is_indexed_once_settled(
        tree: Path, data_dir: Path, reader: Callable[[], Reader],
        watchers: list[WatcherProc]) -> None:
    w = WatcherProc(data_dir, os.fsencode(tree), debounce=0.1, settle=1.5)
    watchers.append(w)
    path = tree / "copying.mkv"
    chunk = b"z" * 4096
    with open(path, "wb") as fh:
        for _ in range(40):  # a slow copy: a write every 50 ms, quieter than the debounce
            fh.write(chunk)
            fh.flush()
            time.sleep(0.05)
    rec = reader().wait_record(path)
    assert rec["size"] == 40 * len(chunk)
    ops = [(e["op"], e["size"]) for e in events(data_dir) if e.get("path") == str(path)]
    assert ops == [("added", 40 * len(chunk))], "never recorded half-written"
    assert w.terminate() == 0


def test_hidden_files_and_the_data_dir_are_ignored(
        tree: Path, reader: Callable[[], Reader], watchers: list[WatcherProc]) -> None:
    data_dir = tree / ".kvmedia"  # a data dir inside the watched tree must not feed itself
    w = WatcherProc(data_dir, os.fsencode(tree))
    watchers.append(w)
    _write(tree / ".hidden.jpg")
    _write(tree / "@eaDir" / "thumb.jpg")
    _write(tree / ".partial" / "x.jpg")
    marker = _write(tree / "visible.jpg")
    r = Reader(data_dir)
    try:
        r.wait_record(marker)
        time.sleep(0.5)
        assert set(r.by_path()) == {os.fsencode(marker)}
    finally:
        r.close()
    assert w.terminate() == 0


def test_roots_beyond_the_watch_budget_are_swept_and_said_so(
        tree: Path, data_dir: Path, reader: Callable[[], Reader],
        watchers: list[WatcherProc]) -> None:
    for i in range(3):
        (tree / f"d{i}").mkdir()
    w = WatcherProc(data_dir, os.fsencode(tree), "--watch-budget", "2", "--sweep", "0.2")
    watchers.append(w)
    f = _write(tree / "d1" / "late.jpg")
    reader().wait_record(f)
    text = w.log_text()
    assert text.count("watch limit:") == 1
    state = orjson.loads((data_dir / "state.json").read_bytes())
    assert state["mode"] == "inotify+sweep" and state["sweep_paths"] == [str(tree)]
    assert w.terminate() == 0


def test_logs_rotate_by_size(tree: Path, data_dir: Path, reader: Callable[[], Reader],
                             watchers: list[WatcherProc]) -> None:
    w = WatcherProc(data_dir, os.fsencode(tree), "--log-max-bytes", "2048")
    watchers.append(w)
    for i in range(150):
        _write(tree / f"rot{i:03d}.jpg")
    r = reader()
    wait_for(lambda: r.lib.count() == 150, "150 records")
    logs = data_dir / "logs"
    assert (logs / "watcher.out.log.1").exists()
    assert all(p.stat().st_size <= 4096 for p in logs.iterdir())
    assert len(list(logs.glob("watcher.out.log*"))) <= 4
    assert w.terminate() == 0


def test_a_root_that_vanishes_is_marked_offline_and_its_records_kept(
        tree: Path, data_dir: Path, tmp_path: Path, reader: Callable[[], Reader],
        watchers: list[WatcherProc]) -> None:
    f = _write(tree / "sub" / "kept.jpg")
    w = WatcherProc(data_dir, os.fsencode(tree), "--state-interval", "0.1", "--sweep", "0.3")
    watchers.append(w)
    r = reader()
    r.wait_record(f)
    os.rename(tree, tmp_path / "unplugged")  # the volume goes away: no inotify event for us
    wait_for(lambda: any(e["op"] == "offline" for e in events(data_dir)), "an offline entry")
    assert r.record(f) is not None, "an offline root keeps its records"
    assert "vanished" in w.log_text()
    os.rename(tmp_path / "unplugged", tree)  # back again: swept from now on
    g = _write(tree / "sub" / "after.jpg")
    r.wait_record(g)
    assert w.terminate() == 0


def test_daemon_mode_detaches_and_stops_on_sigterm(tree: Path, data_dir: Path,
                                                   reader: Callable[[], Reader]) -> None:
    proc = subprocess.run([sys.executable, "-m", "kvmedia", "watch", os.fsencode(tree),
                           "--daemon", "--debounce", "0.1"], env=cli_env(data_dir),
                          capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    code, status = cli_json(data_dir, "status")
    assert code == 0 and status[0]["running"]
    pid = status[0]["state"]["pid"]
    try:
        f = _write(tree / "d.jpg")
        reader().wait_record(f)
    finally:
        os.kill(pid, signal.SIGTERM)
    wait_for(lambda: cli_json(data_dir, "status")[0] == 1, "the daemon to stop")


def test_doctor_reports_the_watches_the_library_needs(tree: Path, data_dir: Path) -> None:
    for name in ("a/b/c", "a/d", "e"):
        (tree / name).mkdir(parents=True)
    _write(tree / "a" / "x.jpg")
    subprocess.run([sys.executable, "-m", "kvmedia", "scan", os.fsencode(tree)],
                   env=cli_env(data_dir), check=True, capture_output=True, timeout=60)
    code, (report,) = cli_json(data_dir, "doctor")
    assert code == 0
    inotify = report["inotify"]
    assert inotify["needed"] == 6  # the root and its five directories
    assert inotify["roots"] == [{"root": str(tree), "dirs": 6}]
    assert inotify["max_user_watches"] == int(
        Path("/proc/sys/fs/inotify/max_user_watches").read_text())
    assert inotify["recommended_max_user_watches"] >= 6
    text = subprocess.run([sys.executable, "-m", "kvmedia", "doctor"], env=cli_env(data_dir),
                          capture_output=True, timeout=60).stdout.decode()
    assert "the watcher needs 6 watches" in text


def _userns_works() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-U", "-r", "sh", "-c",
                            "echo 7 > /proc/sys/user/max_inotify_watches"],
                           capture_output=True, timeout=30)
    return probe.returncode == 0


@pytest.mark.skipif(not _userns_works(), reason="needs unprivileged user namespaces")
def test_when_the_kernel_refuses_watches_the_root_is_swept(
        tree: Path, data_dir: Path, reader: Callable[[], Reader]) -> None:
    # A user namespace whose watch limit is 5: the root and two directories fit, the
    # directories made later do not (the kernel answers ENOSPC, which watchdog would skip).
    for name in ("a", "b"):
        (tree / name).mkdir()
    script = ('echo 5 > /proc/sys/user/max_inotify_watches && exec "$0" -m kvmedia watch '
              '"$1" --debounce 0.1 --settle 0.1 --sweep 0.3 --watch-budget 1000 '
              '--state-interval 0.1')
    proc = subprocess.Popen(["unshare", "-U", "-r", "sh", "-c", script, sys.executable,
                             str(tree)], env=cli_env(data_dir), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    w = WatcherProc.__new__(WatcherProc)
    w.data_dir, w.proc, w._scans_before = data_dir, proc, 0
    try:
        w.wait_ready()
        files = [_write(tree / f"new{i}" / "deeper" / f"f{i}.jpg") for i in range(4)]
        r = reader()
        for f in files:
            r.wait_record(f)
        wait_for(lambda: "watch limit reached" in w.log_text(), "the watch-limit warning")
        assert w.log_text().count("watch limit reached") == 1
        wait_for(lambda: orjson.loads((data_dir / "state.json").read_bytes())["sweep_paths"]
                 == [str(tree)], "the root in state.json's sweep_paths")
        late = _write(tree / "new9" / "late.jpg")  # seen by a sweep, not by inotify
        r.wait_record(late)
    finally:
        assert w.terminate() == 0


def test_the_watcher_analyzes_and_embeds_new_files_in_the_background(
        tree: Path, data_dir: Path, reader: Callable[[], Reader],
        watchers: list[WatcherProc], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KVMEDIA_EMBEDDER", "hashing")  # fast and always installed
    watchers.append(WatcherProc(data_dir, os.fsencode(tree), "--analyze"))
    r = reader()
    photo = _write(tree / "Beach Holiday" / "sunset at the sea.jpg", b"jpeg")
    rec = r.wait_record(photo, lambda rec: bool(rec.get("embed_model")))
    assert "sunset" in rec["keywords"] and "beach" in rec["keywords"].lower()
    assert "sunset" in rec["embed_source"]


def test_directories_made_later_never_push_the_watcher_past_its_share(
        tree: Path, data_dir: Path, reader: Callable[[], Reader],
        watchers: list[WatcherProc]) -> None:
    """The 80% share holds after start-up too: once new directories take the watcher past its
    allowance, the root moves to sweeping (said once) and changes are still found."""
    (tree / "d0").mkdir()
    w = WatcherProc(data_dir, os.fsencode(tree), "--watch-budget", "4", "--sweep", "0.2")
    watchers.append(w)
    assert "watch limit:" not in w.log_text()  # 2 directories fit in 4 watches
    for i in range(1, 8):
        (tree / f"d{i}").mkdir()
    wait_for(lambda: "inotify watches in use" in w.log_text(), "the watch-share warning")
    f = _write(tree / "d7" / "late.jpg")
    reader().wait_record(f)
    state = orjson.loads((data_dir / "state.json").read_bytes())
    assert state["sweep_paths"] == [str(tree)]
    assert w.log_text().count("inotify watches in use") == 1
    assert w.terminate() == 0
