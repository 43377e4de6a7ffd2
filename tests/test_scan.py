"""Scan & sync on real trees: byte-exact names, skip rules, special files, unreadable and
vanishing directories, root boundaries, offline roots, no-op rescans, kept metadata, audit."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from kvtest import write

from kvmedia import Library
from kvmedia.config import Config
from kvmedia.pathbytes import get_field
from kvmedia.store import keys as K
from kvmedia.store.audit import P_AUDIT, AuditLog


@pytest.fixture(autouse=True)
def _no_user_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KVMEDIA_CONFIG", str(tmp_path / "no-config.toml"))
    for var in ("KVMEDIA_SCAN_INCLUDE", "KVMEDIA_SCAN_EXCLUDE", "KVMEDIA_LMDB_MAP_SIZE"):
        monkeypatch.delenv(var, raising=False)


class OnItem(threading.Event):
    """A stop event that runs `action(n)` each time the scan checks it (once per walk item),
    so a test can change the tree at an exact point of the walk."""

    def __init__(self, action: Callable[[int], None]) -> None:
        super().__init__()
        self.action = action
        self.calls = 0

    def is_set(self) -> bool:
        self.calls += 1
        self.action(self.calls)
        return super().is_set()


def all_paths(lib: Library) -> set[bytes]:
    return {get_field(r, "path") for r in lib.list_media(sort="name")}


def snapshot(lib: Library) -> dict[bytes, bytes]:
    """Every record, key and stat (not roots or the audit log)."""
    with lib.env.read() as txn:
        return {k: v for k, v in txn.cursor()
                if k.startswith(b"media:") and not k.startswith(K.P_ROOT)}


# -- names -----------------------------------------------------------------------------------

BAD_NAMES = [b"\xff\xfe.jpg", b"caf\xe9.mp3", b"new\nline.mp4", b"tab\there.png",
             b"esc\x1b[31m.wav", "日本語.mkv".encode(), b"x" * 251 + b".jpg", b"back\\slash.flac",
             b"sp ace .jpg", b"-dash.jpg"]


def test_non_utf8_names_round_trip(lib: Library, tree: Path) -> None:
    root = bytes(tree)
    made = {os.path.join(root, b"d\xe9r", n) for n in BAD_NAMES} | {os.path.join(root, n)
                                                                   for n in BAD_NAMES}
    for p in made:
        write(p, p)
    (s,) = lib.scan([root])
    assert s.added == len(made) and s.errors == 0
    assert all_paths(lib) == made
    for p in made:
        rec = lib.find_by_path(p)
        assert get_field(rec, "path") == p
        assert get_field(rec, "name") == os.path.basename(p)
        assert get_field(rec, "original_path") == p
        assert rec["size"] == len(p)
        # The stored JSON holds the reversible form; the path key holds the raw bytes.
        with lib.env.read() as txn:
            assert K.PathValue.unpack(txn.get(K.path_key(p))).uuid == rec["uuid"]
            stored = orjson.loads(txn.get(K.uuid_key(rec["uuid"])))
        assert get_field(stored, "path") == p
        try:
            p.decode("utf-8")
        except UnicodeDecodeError:
            assert "path" not in stored and "path_bytes" in stored
    (s,) = lib.scan([root])
    assert s.unchanged == len(made)
    for p in made:
        os.unlink(p)
    (s,) = lib.scan([root])
    assert s.removed == len(made) and lib.count() == 0


def test_types_by_extension(lib: Library, tree: Path) -> None:
    want = {"a.JPG": "image", "b.cr3": "image", "c.dng": "image", "d.jxl": "image",
            "e.m2ts": "video", "f.vob": "video", "g.MTS": "video", "h.dsf": "audio",
            "i.aiff": "audio", "j.mka": "audio", "k.txt": "other", "noext": "other",
            "l.tar.gz": "other"}
    for name in want:
        write(tree / name)
    lib.scan([tree])
    got = {r["path"].rsplit("/", 1)[1]: r["type"] for r in lib.list_media()}
    assert got == want
    for media_type in ("image", "video", "audio", "other"):
        assert lib.count(media_type=media_type) == sum(v == media_type for v in want.values())


# -- skip rules ------------------------------------------------------------------------------

def test_skip_rules(lib: Library, tree: Path) -> None:
    keep = [tree / "a.jpg", tree / "sub" / "b.mp4", tree / "music" / "c.flac",
            tree / "music" / "live" / "d.flac", tree / "sub" / "tmpdir.jpg"]
    skip = [tree / ".hidden.jpg", tree / ".hid" / "e.jpg", tree / "@eaDir" / "f.jpg",
            tree / "#recycle" / "g.jpg", tree / "#snapshot" / "h.jpg",
            tree / ".@__thumb" / "i.jpg", tree / ".AppleDouble" / "j.jpg", tree / ".DS_Store",
            tree / "Thumbs.db", tree / "sub" / "@eaDir" / "k.jpg", tree / ".nas-trash" / "l.jpg",
            tree / "nomedia" / "m.jpg", tree / "nomedia" / "deep" / "n.jpg",
            tree / "music" / "o.tmp", tree / "music" / "live" / "p.tmp",
            tree / "music" / "cache" / "q.flac", tree / "sub" / "tmpdir" / "r.jpg",
            tree / "music" / "live" / "cache" / "s.flac"]
    for p in keep + skip:
        write(p)
    write(tree / "nomedia" / ".nomedia", b"")
    # gitignore syntax, applying to its directory and below; "cache/" only matches dirs.
    write(tree / "music" / ".kvmediaignore", b"# comment\n*.tmp\ncache/\n")
    write(tree / "sub" / ".kvmediaignore", b"tmpdir/\n")
    (s,) = lib.scan([tree])
    assert all_paths(lib) == {bytes(p) for p in keep}
    assert s.errors == 0


def test_include_and_exclude_config(tree: Path, data_dir: Path) -> None:
    for p in ("photos/a.jpg", "photos/raw/b.dng", "music/c.mp3", "video/d.mp4",
              "photos/e.tmp", "photos10/f.jpg"):
        write(tree / p)
    config = Config({"scan.include": [str(tree / "photos"), str(tree / "music")],
                     "scan.exclude": ["*.tmp", "raw/"]})
    with Library.open(data_dir, config=config) as lib:
        lib.scan([tree])
        assert all_paths(lib) == {bytes(tree / "photos/a.jpg"), bytes(tree / "music/c.mp3")}


def test_records_of_newly_ignored_files_are_removed(lib: Library, tree: Path) -> None:
    """Adding a .nomedia or a .kvmediaignore pattern later takes those files out."""
    a, b, c = write(tree / "x" / "a.jpg"), write(tree / "y" / "b.tmp"), write(tree / "c.jpg")
    lib.scan([tree])
    assert lib.count() == 3
    write(tree / "x" / ".nomedia", b"")
    write(tree / ".kvmediaignore", b"*.tmp\n")
    (s,) = lib.scan([tree])
    assert all_paths(lib) == {bytes(c)}
    assert s.removed == 2
    assert os.path.exists(a) and os.path.exists(b)


def test_fifo_symlinks_and_loops_are_skipped(lib: Library, tree: Path) -> None:
    real = write(tree / "real.jpg")
    os.mkfifo(tree / "pipe.mp3")
    os.symlink(real, tree / "link.jpg")
    os.symlink(tree / "nowhere.jpg", tree / "dangling.jpg")
    os.symlink(tree, tree / "loop")  # a directory symlink back to the root
    (tree / "d").mkdir()
    os.symlink("../d", tree / "d" / "up")
    (s,) = lib.scan([tree])
    assert all_paths(lib) == {bytes(real)}
    assert any(b"pipe.mp3" in p for p, _m in s.warnings)


def test_scan_root_through_a_symlink_is_resolved(lib: Library, tree: Path, tmp_path: Path
                                                 ) -> None:
    f = write(tree / "a.jpg")
    os.symlink(tree, tmp_path / "alias")
    lib.scan([tmp_path / "alias"])
    assert all_paths(lib) == {bytes(f)}


# -- unreadable and vanishing directories ----------------------------------------------------

def test_vanished_directory_keeps_its_records_until_the_next_full_scan(lib: Library, tree: Path
                                                                       ) -> None:
    write(tree / "a" / "1.jpg")
    gone = [write(tree / "b" / f"{i}.jpg") for i in range(3)]
    lib.scan([tree])

    def remove_b(n: int) -> None:
        if n == 1:  # while the walk is in a/, before it lists b/
            shutil.rmtree(tree / "b")

    (s,) = lib.scan([tree], stop=OnItem(remove_b))
    assert s.removed == 0 and not s.interrupted
    assert {bytes(p) for p in gone} <= all_paths(lib)
    (s,) = lib.scan([tree])
    assert s.removed == 3 and lib.count() == 1


def test_file_vanishing_mid_walk(lib: Library, tree: Path) -> None:
    files = [write(tree / f"{i}.jpg") for i in range(4)]

    def remove_last(n: int) -> None:
        if n == 1:  # the directory is listed, its entries are not stat'ed yet
            os.unlink(files[-1])

    (s,) = lib.scan([tree], stop=OnItem(remove_last))
    assert s.errors == 0
    assert all_paths(lib) == {bytes(p) for p in files[:-1]}


@pytest.fixture
def nobody_tree() -> Iterator[Path]:
    """A tree and data dir owned by uid 65534, for scans that root could not be stopped in."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run a scan as another user")
    probe = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                            sys.executable, "-c", "import lmdb, numpy, orjson"],
                           capture_output=True, timeout=60, cwd="/")
    if probe.returncode != 0:  # e.g. the interpreter's packages sit under a 0700 /root
        pytest.skip("uid 65534 cannot import this interpreter's packages: "
                    + probe.stderr.decode(errors="replace").strip().splitlines()[-1])
    base = Path(tempfile.mkdtemp(prefix="kvm-nobody-"))
    os.chmod(base, 0o755)
    try:
        yield base
    finally:
        for d, _dirs, _files in os.walk(base):
            os.chmod(d, 0o755)
        shutil.rmtree(base)


def scan_as_nobody(base: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = dict(os.environ, KVMEDIA_DATA_DIR=str(base / "data"),
               KVMEDIA_CONFIG=str(base / "none.toml"), HOME=str(base))
    return subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
         sys.executable, "-m", "kvmedia", "scan", str(base / "vol"), "--json", *args],
        env=env, capture_output=True, timeout=60)


def test_unreadable_directory_keeps_its_records(nobody_tree: Path) -> None:
    vol = nobody_tree / "vol"
    for p in ("open/a.jpg", "locked/b.jpg", "locked/deep/c.jpg", "z.jpg"):
        write(vol / p)
    (nobody_tree / "data").mkdir()
    for d, dirs, files in os.walk(nobody_tree):
        for name in [*dirs, *files, "."]:
            os.chown(os.path.join(d, name), 65534, 65534)
    first = scan_as_nobody(nobody_tree)
    assert first.returncode == 0, first.stderr
    os.chmod(vol / "locked", 0)
    os.unlink(vol / "z.jpg")
    second = scan_as_nobody(nobody_tree)
    assert second.returncode == 0, second.stderr
    summary = [orjson.loads(x) for x in second.stdout.splitlines()][-1]
    assert summary["removed"] == 1 and summary["errors"] >= 1
    assert b"locked" in second.stderr and b"warning" in second.stderr
    os.chmod(vol / "locked", 0o755)
    with Library.open(nobody_tree / "data") as lib:
        assert all_paths(lib) == {bytes(vol / p) for p in
                                  ("open/a.jpg", "locked/b.jpg", "locked/deep/c.jpg")}


# -- roots -----------------------------------------------------------------------------------

def test_root_boundary_usb1_vs_usb10(lib: Library, tmp_path: Path) -> None:
    usb1, usb10 = tmp_path / "mnt" / "usb1", tmp_path / "mnt" / "usb10"
    a = write(usb1 / "a.jpg")
    b, c = write(usb10 / "b.jpg"), write(usb10 / "c.jpg")
    lib.scan([usb1, usb10])
    os.unlink(c)  # gone from usb10, but only a scan of usb10 may notice
    (s,) = lib.scan([usb1])
    assert s.removed == 0
    assert all_paths(lib) == {bytes(a), bytes(b), bytes(c)}
    os.unlink(a)
    (s,) = lib.scan([usb1])  # usb1 now empty: offline, not wiped
    assert s.offline
    (s,) = lib.scan([usb10])
    assert s.removed == 1 and all_paths(lib) == {bytes(a), bytes(b)}


def test_missing_root_is_offline_and_comes_back(lib: Library, tmp_path: Path) -> None:
    vol = tmp_path / "usb"
    files = [write(vol / "d" / f"{i}.jpg") for i in range(5)]
    lib.scan([vol])
    uuids = {r["uuid"] for r in lib.list_media()}
    os.rename(vol, tmp_path / "unplugged")
    (s,) = lib.scan([vol])
    assert s.offline and "missing" in (s.offline_reason or "") and s.removed == 0
    assert lib.count() == 5
    assert any(r.get("offline") for r in lib.roots())
    os.rename(tmp_path / "unplugged", vol)
    (s,) = lib.scan([vol])
    assert not s.offline and s.added == 0 and s.removed == 0
    assert {r["uuid"] for r in lib.list_media()} == uuids
    assert not any(r.get("offline") for r in lib.roots())
    assert all_paths(lib) == {bytes(p) for p in files}


def test_empty_mount_point_is_offline_unless_forced(lib: Library, tmp_path: Path) -> None:
    vol = tmp_path / "vol"
    files = [write(vol / f"{i}.mp3") for i in range(3)]
    lib.scan([vol])
    for p in files:
        os.unlink(p)
    (s,) = lib.scan([vol])
    assert s.offline and "empty" in (s.offline_reason or "")
    assert lib.count() == 3
    (s,) = lib.scan([vol], force=True)
    assert s.removed == 3 and lib.count() == 0


def test_root_on_another_filesystem_is_offline(lib: Library, tree: Path) -> None:
    write(tree / "a.jpg")
    lib.scan([tree])
    key = K.P_ROOT + bytes(tree)

    def swap_fs(txn: Any) -> None:  # as if another disk were now mounted there
        info = orjson.loads(txn.get(key))
        info["fs_uuid"] = "another-disk"
        txn.put(key, orjson.dumps(info))

    lib.env.write(swap_fs)
    os.unlink(tree / "a.jpg")
    write(tree / "b.jpg")
    (s,) = lib.scan([tree])
    assert s.offline and "another filesystem" in (s.offline_reason or "")
    assert all_paths(lib) == {bytes(tree / "a.jpg")}


def test_unknown_missing_root_is_not_found(lib: Library, tmp_path: Path) -> None:
    from kvmedia.errors import NotFoundError

    with pytest.raises(NotFoundError):
        lib.scan([tmp_path / "never-existed"])


# -- writes ----------------------------------------------------------------------------------

def test_unchanged_rescan_writes_nothing(data_dir: Path, tree: Path) -> None:
    for i in range(3000):
        write(tree / f"d{i % 7}" / f"f{i}.jpg", b"%d" % i)
    config = Config({"scan.batch_files": 500})
    with Library.open(data_dir, config=config) as lib:
        lib.scan([tree])
        before = snapshot(lib)
        txn_before = lib.env.env.info()["last_txnid"]
        seq_before = lib.audit_tail(1)[0]["seq"]
        (s,) = lib.scan([tree])
        assert s.unchanged == 3000 and (s.added, s.updated, s.moved, s.removed) == (0, 0, 0, 0)
        assert snapshot(lib) == before, "no record, key or stat rewritten"
        # Only the root's bookkeeping and the one scan summary entry are written; batches
        # with no change commit no pages at all.
        assert lib.env.env.info()["last_txnid"] - txn_before <= 2
        tail = lib.audit_tail(5)
        assert tail[-1]["seq"] == seq_before + 1 and tail[-1]["op"] == "scan"


def test_rescan_keeps_fields_the_scanner_does_not_own(lib: Library, tree: Path) -> None:
    f = write(tree / "clip.mp4", b"v1")
    lib.scan([tree])
    rec = lib.find_by_path(bytes(f))

    def add_metadata(txn: Any) -> None:
        w = lib.store.writer(txn)
        new = dict(rec, duration_sec=12.5, width=1920, tags=["beach"])
        w.put(new, rec)
        w.finish()

    lib.env.write(add_metadata)
    write(f, b"version two")  # modified in place
    (s,) = lib.scan([tree])
    assert s.updated == 1
    after = lib.find_by_path(bytes(f))
    assert after["uuid"] == rec["uuid"] and after["size"] == len(b"version two")
    assert (after["duration_sec"], after["width"], after["tags"]) == (12.5, 1920, ["beach"])
    os.rename(f, tree / "renamed.mp4")
    lib.scan([tree])
    moved = lib.find_by_path(bytes(tree / "renamed.mp4"))
    assert moved["uuid"] == rec["uuid"] and moved["duration_sec"] == 12.5


def test_mtime_keeps_nanoseconds(lib: Library, tree: Path) -> None:
    f = write(tree / "a.jpg")
    os.utime(f, ns=(1_700_000_000_123_456_789, 1_700_000_000_123_456_789))
    old = write(tree / "old.jpg")
    os.utime(old, ns=(-86_400_123_456_789, -86_400_123_456_789))  # before 1970
    lib.scan([tree])
    assert lib.find_by_path(bytes(f))["mtime_ns"] == 1_700_000_000_123_456_789
    assert lib.find_by_path(bytes(old))["mtime_ns"] == -86_400_123_456_789
    assert [r["path"] for r in lib.list_media(sort="mod")] == [str(old), str(f)]


def test_long_paths(lib: Library, tree: Path) -> None:
    deep = tree.joinpath(*(["d" * 120] * 4))
    files = [write(deep / f"{i}.jpg") for i in range(3)] + [write(tree / "short.jpg")]
    assert all(len(bytes(p)) > K.PATH_KEY_MAX for p in files[:3])
    (s,) = lib.scan([tree])
    assert s.added == 4 and all_paths(lib) == {bytes(p) for p in files}
    (s,) = lib.scan([tree])
    assert s.unchanged == 4
    os.rename(files[0], deep / "renamed.jpg")
    os.unlink(files[1])
    (s,) = lib.scan([tree])
    assert (s.moved, s.removed) == (1, 1)
    assert all_paths(lib) == {bytes(deep / "renamed.jpg"), bytes(files[2]), bytes(files[3])}
    assert lib.doctor(repair=False)["clean"]


def test_interrupted_scan_removes_nothing_and_resumes(lib: Library, tree: Path) -> None:
    files = [write(tree / f"d{i % 5}" / f"{i}.jpg") for i in range(40)]
    lib.scan([tree])
    os.unlink(files[-1])
    for i in range(10):
        write(tree / "new" / f"{i}.jpg")

    def stop_early(n: int) -> None:
        if n == 20:
            stop.set()

    stop = OnItem(stop_early)
    (s,) = lib.scan([tree], stop=stop)
    assert s.interrupted and s.removed == 0
    assert bytes(files[-1]) in all_paths(lib)
    (s,) = lib.scan([tree])
    on_disk = {bytes(p) for p in tree.rglob("*.jpg")}
    assert all_paths(lib) == on_disk and lib.count() == len(on_disk) == 49
    assert lib.doctor(repair=False)["clean"]


def test_audit_log_is_bounded(lib: Library, tree: Path) -> None:
    lib.audit.max_entries = 25
    for i in range(60):
        write(tree / f"{i}.jpg")
    lib.scan([tree])
    with lib.env.read() as txn:
        keys = [k for k, _ in lib.store.iter_prefix(txn, P_AUDIT)]
    assert len(keys) == 25
    tail = lib.audit_tail(100)
    assert [e["seq"] for e in tail] == sorted(e["seq"] for e in tail)
    assert tail[-1]["op"] == "scan" and tail[-1]["added"] == 60
    assert {e["status"] for e in tail} == {"ok"}


def test_audit_entries_carry_path_status_and_time(tmp_path: Path) -> None:
    with Library.open(tmp_path / "lib") as lib:
        log = AuditLog(max_entries=3)
        for i in range(5):
            lib.env.write(lambda txn, i=i: log.append(
                txn, path=b"/v/\xff%d" % i, status="failed" if i else "ok", op="t",
                error="boom" if i else None))
        with lib.env.read() as txn:
            tail = AuditLog.tail(txn, 10)
    assert [e["seq"] for e in tail] == [2, 3, 4]
    assert get_field(tail[0], "path") == b"/v/\xff2"
    assert tail[-1]["status"] == "failed" and tail[-1]["error"] == "boom" and tail[-1]["at"]


def test_reopen_verifies_and_rebuilds_secondary_keys(data_dir: Path, tree: Path) -> None:
    for i in range(5):
        write(tree / f"{i}.jpg")
    with Library.open(data_dir) as lib:
        lib.scan([tree])
        want = snapshot(lib)

        def damage(txn: Any) -> None:  # lose every type key and the schema marker
            for key, _ in list(lib.store.iter_prefix(txn, K.P_TYPE)):
                txn.delete(key)
            txn.delete(K.K_SCHEMA)

        lib.env.write(damage)
        assert not lib.doctor(repair=False)["clean"]
    with Library.open(data_dir) as lib:
        assert snapshot(lib) == want
        assert lib.doctor(repair=False)["clean"]


def test_doctor_finds_and_repairs_every_kind_of_damage(lib: Library, tree: Path) -> None:
    for i in range(6):
        write(tree / f"{i}.jpg", b"x" * i)
    lib.scan([tree])
    want = snapshot(lib)
    victim = lib.list_media(sort="name")[0]
    path = get_field(victim, "path")

    def damage(txn: Any) -> None:
        txn.delete(K.path_key(path))  # a missing path key
        txn.put(K.path_key(b"/nowhere/x.jpg"), victim["uuid"].encode())  # an orphan path key
        txn.put(K.type_key("video", False, "name", b"ghost", 0, 0, victim["uuid"]), b"")
        txn.put(K.fid_key("fs-ghost", 1, 2), b"00000000-0000-5000-8000-000000000000")
        txn.put(K.stats_key("image", False), K.pack_stats(99, 99))  # wrong stats

    lib.env.write(damage)
    report = lib.doctor(repair=False)
    assert not report["clean"] and not report["repaired"]
    assert report["missing_keys"] >= 2 and report["orphan_keys"] == 3
    assert snapshot(lib) != want, "a check-only run changes nothing"
    assert lib.doctor(repair=True)["repaired"]
    assert snapshot(lib) == want
    assert lib.doctor(repair=False)["clean"]


def test_upsert_paths_applies_the_rules_of_parent_directories(lib: Library, tree: Path) -> None:
    """Paths pushed one by one (watcher, `kvmedia notify`) skip what a scan of the root skips:
    ignore patterns of parent directories, `.nomedia` above them, hidden components."""
    write(tree / ".kvmediaignore", b"*.tmp\nskipdir/\n")
    write(tree / "quiet" / ".nomedia", b"")
    write(tree / "seed.jpg")
    lib.scan([tree])
    arrivals = [tree / "new" / "a.jpg", tree / "new" / "b.tmp", tree / "quiet" / "c.jpg",
                tree / "skipdir" / "d.jpg", tree / "e.tmp", tree / ".hidden" / "f.jpg",
                tree / "new" / "deeper" / "g.jpg"]
    for path in arrivals:
        write(path)
    lib.upsert_paths([tree / "new", tree / "quiet" / "c.jpg", tree / "skipdir", tree / "e.tmp",
                      tree / ".hidden" / "f.jpg"])
    pushed = {r["name"] for r in lib.list_media()}
    assert pushed == {"seed.jpg", "a.jpg", "g.jpg"}
    lib.scan([tree])
    assert {r["name"] for r in lib.list_media()} == pushed, "a full scan agrees"


def test_a_sidecar_earlier_in_the_same_batch_reaches_its_media_file(tmp_path: Path) -> None:
    """The pipeline listener answers "nothing to derive" for a new file from a per-folder
    cache; a sidecar ingested earlier in the same transaction must invalidate it. Walk order
    here: 0.mp3 (fills the cache), IMG_1.xmp (sidecar), IMG_1.zip (its media file)."""
    from tests.test_pipeline_sidecars import xmp

    vol = tmp_path / "vol"
    write(vol / "0.mp3")
    write(vol / "IMG_1.xmp", xmp("4", ("Beach",)))
    write(vol / "IMG_1.zip")
    with Library.open(tmp_path / "data") as lib:
        lib.scan([vol])
        rec = lib.find_by_path(os.fsencode(vol / "IMG_1.zip"))
        assert rec is not None and rec.get("rating") == 4
        assert rec.get("user_tags") == ["Beach"]
        assert lib.find_by_path(os.fsencode(vol / "0.mp3")).get("rating") is None


def test_one_batch_writes_one_feed_and_audit_entry_per_file_in_walk_order(
        tmp_path: Path) -> None:
    """Feed and audit entries of a batch are appended together at its end: consecutive seqs,
    walk (path) order, one per file, nothing lost between batches."""
    vol = tmp_path / "vol"
    names = [f"f{i:03d}.jpg" for i in range(25)]
    for name in names:
        write(vol / name)
    with Library.open(tmp_path / "data") as lib:
        from kvmedia.scan import Scanner

        scanner = Scanner(lib.env, lib.store, lib.audit, batch_files=7)
        summary = scanner.scan(os.fsencode(vol))
        assert summary.added == 25
        feed = lib.events(0).entries
        assert [e["seq"] for e in feed] == list(range(1, 26))
        assert [os.path.basename(get_field(e, "path")) for e in feed] == [
            n.encode() for n in names]
        with lib.env.read() as txn:
            audit = AuditLog.tail(txn, 100)
        per_file = [e for e in audit if e["op"] == "added"]
        assert [os.path.basename(get_field(e, "path")) for e in per_file] == [
            n.encode() for n in names]
        seqs = [e["seq"] for e in audit]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))


class _StopAfter(threading.Event):
    """Reports itself set after `n` checks: the scan checks once per walk item."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def is_set(self) -> bool:
        self.n -= 1
        return self.n < 0 or super().is_set()


def test_new_file_at_a_moved_files_path_survives_an_interrupted_scan(tmp_path: Path) -> None:
    """a.jpg moved into a/ and a new a.jpg created: a scan stopped right after a.jpg (before
    it reaches a/a.jpg) must not leave two records claiming a.jpg; the next scan moves the
    old record (same uuid) and adds the new file."""
    vol = tmp_path / "vol"
    write(vol / "a.jpg", b"old")
    (vol / "a").mkdir()
    with Library.open(tmp_path / "data") as lib:
        lib.scan([vol])
        old_uuid = lib.find_by_path(os.fsencode(vol / "a.jpg"))["uuid"]
        os.rename(vol / "a.jpg", vol / "a" / "a.jpg")
        write(vol / "a.jpg", b"newer")
        (summary,) = lib.scan([vol], stop=_StopAfter(1))
        assert summary.interrupted and summary.removed == 0
        paths = [get_field(r, "path") for r in lib.list_media()]
        assert len(paths) == len(set(paths)), "two records for one path"
        assert lib.count() == 1  # the old record is kept, nothing lost
        (summary,) = lib.scan([vol])
        assert (summary.added, summary.moved, summary.removed) == (1, 1, 0)
        moved = lib.find_by_path(os.fsencode(vol / "a" / "a.jpg"))
        assert moved is not None and moved["uuid"] == old_uuid
        new = lib.find_by_path(os.fsencode(vol / "a.jpg"))
        assert new is not None and new["uuid"] != old_uuid and new["size"] == 5
        assert lib.count() == 2


def test_a_first_scan_writes_at_most_batch_writes_files_per_transaction(tmp_path: Path) -> None:
    """LMDB keeps the buffers of a transaction's dirty pages for reuse, so the largest batch
    sets the scan's heap: new files go in transactions of at most BATCH_WRITES, however many
    files a batch may compare."""
    from kvmedia.scan import BATCH_WRITES

    vol = tmp_path / "vol"
    n = 2 * BATCH_WRITES + 500
    for i in range(n):
        write(vol / f"d{i // 500:02d}" / f"IMG_{i:05d}.jpg", b"")
    per_txn: dict[int, int] = {}

    def count(writer: Any, old: Any, new: Any) -> None:
        per_txn[id(writer.txn)] = per_txn.get(id(writer.txn), 0) + 1

    with Library.open(tmp_path / "data",
                      config=Config({"scan.batch_files": 10 * BATCH_WRITES})) as lib:
        lib.store.listeners.append(count)
        (summary,) = lib.scan([vol])
    assert summary.added == n
    assert sum(per_txn.values()) == n
    assert max(per_txn.values()) <= BATCH_WRITES
    assert len(per_txn) >= 3


def test_batch_size_follows_the_last_batch(lib: Library) -> None:
    """Compares are cheap and fill a whole batch; writes are capped by count and by time."""
    from kvmedia.scan import BATCH_WRITES, MIN_BATCH_FILES, Scanner

    def size(batch_files: int, entries: int, seconds: float, written: int) -> int:
        scanner = Scanner(lib.env, lib.store, lib.audit, batch_files=batch_files)
        return scanner._next_batch_size(entries, seconds, {
            "added": written, "updated": 0, "moved": 0, "unchanged": entries - written})

    assert size(8000, 8000, 0.05, 0) == 8000                    # unchanged rescan
    assert size(8000, 8000, 0.05, 80) == 8000                   # 1% changed
    assert size(8000, 3000, 0.3, 3000) == BATCH_WRITES          # first scan, fast disk
    assert size(8000, 3000, 3.0, 3000) == 1000                  # first scan, 1 ms a file
    assert size(8000, 3000, 300.0, 3000) == MIN_BATCH_FILES     # a very slow disk
    assert size(7, 7, 0.01, 7) == 7                             # a tiny configured batch
