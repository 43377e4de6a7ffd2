"""Disk full during a scan, an index merge, trash operations and state writes.

The data dir (or the volume) sits on a small tmpfs filled to the brim, or the process runs
under RLIMIT_FSIZE. Each run must end promptly (a generous timeout, never a busy loop) with
the documented I/O exit code, a `{"type": "error"}` line with --json and no traceback; the
last committed state stays intact (fsck clean, every record agrees with its file) and once
space is freed the next run converges (rel_helpers.assert_consistent)."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
from rel_helpers import assert_consistent, cli_env, fs_files, make_tree, records

from kvmedia import Library
from kvmedia.errors import EXIT_IO
from kvmedia.fsck import fsck
from kvmedia.pathbytes import get_field

TIMEOUT = 180  # generous: a run that hits it is a hang or a busy loop
FILLER = ".filler"


Mount = Callable[[Path, int], Path]


@pytest.fixture
def tmpfs() -> Iterator[Mount]:
    """mount(dir, size_bytes, **opts) -> dir: a tmpfs, unmounted at teardown."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted: list[Path] = []

    def mount(where: Path, size: int, extra: str = "") -> Path:
        where.mkdir(parents=True, exist_ok=True)
        opts = f"size={size}" + (f",{extra}" if extra else "")
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "kvrel", str(where)],
                              capture_output=True)
        if proc.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
        mounted.append(where)
        return where

    try:
        yield mount
    finally:
        for where in reversed(mounted):
            subprocess.run(["umount", "-l", str(where)], capture_output=True)


def fill(where: Path, leave: int = 0) -> Path:
    """Take all free space of the file system holding `where` but `leave` bytes."""
    filler = where / FILLER
    st = os.statvfs(where)
    want = max(0, st.f_bavail * st.f_frsize - leave)
    with open(os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as fh:
        try:
            os.posix_fallocate(fh.fileno(), 0, want)
        except OSError:
            pass
        chunk = b"\0" * 65536
        try:  # posix_fallocate may round; top up byte-exactly until the fs says no
            while leave == 0:
                fh.write(chunk)
                fh.flush()
        except OSError:
            pass
    return filler


def kv(data_dir: Path, *args: str | bytes, env: dict[str, str] | None = None,
       preexec: Callable[[], None] | None = None) -> subprocess.CompletedProcess[bytes]:
    full_env = dict(cli_env(data_dir), **(env or {}))
    return subprocess.run([sys.executable, "-m", "kvmedia", *args], env=full_env,
                          capture_output=True, timeout=TIMEOUT, preexec_fn=preexec)


def assert_clean_io_error(proc: subprocess.CompletedProcess[bytes], figures) -> dict:
    """Exit 5, one JSON error object on stderr, no traceback."""
    figures.add("resources", "disk-full runs")
    assert b"Traceback" not in proc.stderr, proc.stderr.decode(errors="replace")
    figures.add("resources", "tracebacks", 0)
    assert proc.returncode == EXIT_IO, (proc.returncode, proc.stderr)
    errors = [orjson.loads(x) for x in proc.stderr.splitlines() if x.startswith(b"{")]
    errors = [e for e in errors if e.get("type") == "error"]
    assert errors and errors[-1]["code"] == "io", proc.stderr
    figures.add("resources", "typed errors")
    return errors[-1]


def check_committed(data_dir: Path, tree: Path) -> list[dict]:
    """Without scanning: fsck clean and every record names an existing file, no duplicates."""
    with Library.open(data_dir, readonly=True) as lib:
        report = fsck(lib)
        assert report["clean"], report["problems"]
        recs = records(lib)
    paths = [get_field(r, "path") for r in recs]
    assert len(paths) == len(set(paths))
    assert set(paths) <= fs_files(tree)
    return recs


def test_disk_full_during_scan(tree: Path, tmp_path: Path, tmpfs: Mount, figures) -> None:
    data_dir = tmpfs(tmp_path / "data", 32 << 20)
    make_tree(tree, 1500)
    # Space for the empty library and a few batches, not for all of them.
    assert kv(data_dir, "count").returncode == 0
    filler = fill(data_dir, leave=600 << 10)
    proc = kv(data_dir, "scan", str(tree), "--json", env={"KVMEDIA_SCAN_BATCH_FILES": "100"})
    assert_clean_io_error(proc, figures)
    kept = check_committed(data_dir, tree)
    figures.add("resources", "records kept after disk full (scan)", len(kept))
    # Still full: a second try fails the same clean way (no damage from the first one).
    assert_clean_io_error(kv(data_dir, "scan", str(tree), "--json"), figures)
    os.unlink(filler)
    proc = kv(data_dir, "scan", str(tree), "--json")
    assert proc.returncode == 0, proc.stderr
    assert_consistent(data_dir, tree)


@pytest.mark.parametrize("command", ["rebuild-index", "optimize"])
def test_disk_full_during_index_merge(tree: Path, tmp_path: Path, tmpfs: Mount, command: str,
                                      figures) -> None:
    data_dir = tmpfs(tmp_path / "data", 48 << 20)
    make_tree(tree, 1000)
    assert kv(data_dir, "scan", str(tree)).returncode == 0
    for f in make_tree(tree, 300, seed=5000):  # a delta for the merge to fold
        assert os.path.exists(f)
    assert kv(data_dir, "scan", str(tree)).returncode == 0
    with Library.open(data_dir) as lib:
        before = sorted(h["uuid"] for h in lib.search("beach", limit=None).hits)
    filler = fill(data_dir)
    proc = kv(data_dir, command, "--json")
    assert_clean_io_error(proc, figures)
    assert not [n for n in os.listdir(data_dir / "searchidx_media") if n.endswith(".tmp")]
    check_committed(data_dir, tree)
    with Library.open(data_dir, readonly=True) as lib:  # the old index still answers
        assert sorted(h["uuid"] for h in lib.search("beach", limit=None).hits) == before
    os.unlink(filler)
    proc = kv(data_dir, command, "--json")
    assert proc.returncode == 0, proc.stderr
    assert_consistent(data_dir, tree)


def test_disk_full_data_dir_during_trash(tree: Path, tmp_path: Path, tmpfs: Mount,
                                         figures) -> None:
    """Trash file after file while the data dir is full: each either moves with its record
    or fails cleanly and stays where it was; freed, every one trashes and restores."""
    data_dir = tmpfs(tmp_path / "data", 8 << 20)
    files = make_tree(tree, 400)
    assert kv(data_dir, "scan", str(tree)).returncode == 0
    filler = fill(data_dir, leave=64 << 10)
    failed = []
    for path in files[:150]:
        proc = kv(data_dir, "trash", path, "--json")
        if proc.returncode == 0:
            assert not os.path.exists(path)
            figures.add("resources", "trash ops that fit before the data dir filled")
            continue
        assert_clean_io_error(proc, figures)
        assert os.path.exists(path)  # the file did not move without its record
        failed.append(path)
        if len(failed) >= 3:
            break
    assert failed, "the data dir never filled up"
    recs = check_committed(data_dir, tree)
    for r in recs:
        assert bool(r.get("is_trash")) == (b"/.nas-trash/" in get_field(r, "path"))
    with Library.open(data_dir, readonly=True) as lib:
        assert not lib.trash_ops().pending()
    os.unlink(filler)
    assert kv(data_dir, "trash", *failed, *files[200:220]).returncode == 0
    with Library.open(data_dir, readonly=True) as lib:
        trashed = {r["uuid"]: get_field(r, "path") for r in lib.trash_ops().trashed()}
    # Restores on a full data dir: the file goes back to its trash slot when the record
    # cannot follow it.
    filler = fill(data_dir)
    stuck = []
    for uuid, tpath in trashed.items():
        proc = kv(data_dir, "restore", uuid, "--json")
        if proc.returncode == 0:
            assert not os.path.exists(tpath)
            continue
        assert_clean_io_error(proc, figures)
        assert os.path.exists(tpath)
        stuck.append(uuid)
        if len(stuck) >= 3:
            break
    # LMDB reuses the pages its earlier transactions freed, so on some runs every restore
    # still fits; whether a failure hits the intent or the record commit varies the same way.
    figures.add("resources", "restores refused on a full data dir", len(stuck))
    for r in check_committed(data_dir, tree):
        assert bool(r.get("is_trash")) == (b"/.nas-trash/" in get_field(r, "path"))
        assert r["uuid"] not in stuck or r.get("is_trash")
    os.unlink(filler)
    left = [u for u, p in trashed.items() if os.path.exists(p)]
    if left:  # none when every restore above still fitted
        assert kv(data_dir, "restore", *left).returncode == 0
    assert set(files) <= fs_files(tree)
    assert_consistent(data_dir, tree)


def test_full_volume_during_trash_and_restore(tmp_path: Path, data_dir: Path, tmpfs: Mount,
                                              figures) -> None:
    """The volume itself is out of inodes: the trash slot cannot be made, so the file stays
    (typed error); a restore needing a folder fails the same way; freed, both work."""
    vol = tmpfs(tmp_path / "vol", 4 << 20, "nr_inodes=64")
    files = make_tree(vol, 20)
    assert kv(data_dir, "scan", str(vol)).returncode == 0
    assert kv(data_dir, "trash", files[0]).returncode == 0
    os.rmdir(os.path.dirname(files[0])) if not os.listdir(os.path.dirname(files[0])) else None
    fillers = []
    try:
        while True:
            fillers.append(vol / f".inode{len(fillers)}")
            fillers[-1].touch()
    except OSError:
        fillers.pop()
    proc = kv(data_dir, "trash", files[1], "--json")
    assert_clean_io_error(proc, figures)
    assert os.path.exists(files[1])
    with Library.open(data_dir) as lib:
        uuid0 = lib.resolve(files[1])["uuid"]
        assert lib.get(uuid0)["is_trash"] is False
    if not os.path.isdir(os.path.dirname(files[0])):  # restore must recreate the folder
        proc = kv(data_dir, "restore", files[0], "--json")
        assert_clean_io_error(proc, figures)
    for f in fillers:
        f.unlink()
    assert kv(data_dir, "trash", files[1]).returncode == 0
    assert kv(data_dir, "restore", files[0], files[1]).returncode == 0
    assert set(files) <= fs_files(vol)
    assert_consistent(data_dir, vol)


_STATE_DRIVER = r"""
import sys
from kvmedia.watch.runlog import write_state
try:
    write_state(sys.argv[1], {"pid": 1, "padding": "p" * int(sys.argv[2])})
except OSError as exc:
    print("OSError", exc.errno, file=sys.stderr)
    sys.exit(5)
"""


def _limit_fsize(n: int) -> Callable[[], None]:
    def set_limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (n, n))

    return set_limit


@pytest.mark.parametrize("how", ["rlimit", "tmpfs"])
def test_state_write_on_full_disk_keeps_the_old_state(tmp_path: Path, tmpfs: Mount, how: str,
                                                      figures) -> None:
    """state.json is replaced whole or not at all: a short or failed write of the new one
    leaves the old one parsing, and no temp file behind."""
    data_dir = tmpfs(tmp_path / "data", 1 << 20) if how == "tmpfs" else tmp_path / "data"
    data_dir.mkdir(exist_ok=True)
    state = data_dir / "state.json"
    ok = subprocess.run([sys.executable, "-c", _STATE_DRIVER, str(data_dir), "10"],
                        capture_output=True, timeout=TIMEOUT)
    assert ok.returncode == 0, ok.stderr
    old = state.read_bytes()
    filler = fill(data_dir) if how == "tmpfs" else None
    preexec = _limit_fsize(4096) if how == "rlimit" else None
    proc = subprocess.run([sys.executable, "-c", _STATE_DRIVER, str(data_dir), "200000"],
                          capture_output=True, timeout=TIMEOUT, preexec_fn=preexec)
    figures.add("resources", "disk-full runs")
    assert proc.returncode == 5 and b"OSError" in proc.stderr, proc.stderr
    assert b"Traceback" not in proc.stderr
    assert state.read_bytes() == old
    assert orjson.loads(old)["pid"] == 1
    assert not [n for n in os.listdir(data_dir) if n.endswith(".tmp")]
    if filler is not None:
        filler.unlink()
