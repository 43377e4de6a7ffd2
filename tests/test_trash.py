"""Trash, restore, delete: real files in temp trees, the CLI in other processes, crashes at
every named point, and path tricks (symlinked parents, swapped files, tampered records)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import lmdb
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from kvtest import run_cli, write

from kvmedia import Library, NotFoundError, StorageError, UsageError
from kvmedia.pathbytes import get_field, set_field
from kvmedia.trash import P_INTENT, TRASH_DIR, restore_names


def _b(p: Path | str) -> bytes:
    return os.fsencode(p)


def scanned(lib: Library, tree: Path, *names: str) -> list[dict]:
    for i, name in enumerate(names):
        write(tree / name, b"data-%d" % i)
    lib.scan([tree])
    return [lib.resolve(_b(tree / n)) for n in names]


def one(results: list) -> dict:
    assert len(results) == 1
    assert results[0].ok, results[0].error
    return results[0].record


def put_record(lib: Library, new: dict) -> None:
    """Overwrite a record through the one write path (used to plant tampered fields)."""
    def fn(txn: lmdb.Transaction) -> None:
        w = lib.store.writer(txn)
        w.put(new, lib.store.get(txn, new["uuid"]))
        w.finish()

    lib.env.write(fn)


def test_trash_restore_roundtrip(lib: Library, tree: Path) -> None:
    (rec,) = scanned(lib, tree, "photos/2021/a.jpg")
    trashed = one(lib.trash([_b(tree / "photos/2021/a.jpg")]))
    tpath = _b(tree) + b"/.nas-trash/" + rec["uuid"].encode() + b"/a.jpg"
    assert trashed["uuid"] == rec["uuid"]
    assert trashed["is_trash"] is True and trashed["deleted_at"]
    assert get_field(trashed, "path") == get_field(trashed, "trash_path") == tpath
    assert get_field(trashed, "original_path") == _b(tree / "photos/2021/a.jpg")
    assert not (tree / "photos/2021/a.jpg").exists() and os.path.isfile(tpath)
    assert lib.count() == 0 and lib.count(trash=True) == 1
    # A scan never treats a trashed record as gone, and never walks .nas-trash.
    summary = lib.scan([tree])[0]
    assert (summary.added, summary.removed) == (0, 0)
    assert lib.get(rec["uuid"])["is_trash"] is True
    restored = one(lib.restore([_b(tree / "photos/2021/a.jpg")]))  # by original path
    assert restored["uuid"] == rec["uuid"] and restored["is_trash"] is False
    assert get_field(restored, "path") == _b(tree / "photos/2021/a.jpg")
    assert restored["trash_path"] is None and restored["deleted_at"] is None
    assert (tree / "photos/2021/a.jpg").read_bytes() == b"data-0"
    assert os.listdir(tree / ".nas-trash") == []
    summary = lib.scan([tree])[0]
    assert (summary.added, summary.updated, summary.removed, summary.unchanged) == (0, 0, 0, 1)
    assert lib.doctor(repair=False)["clean"]


def test_restore_onto_taken_path_and_missing_parents(lib: Library, tree: Path) -> None:
    recs = scanned(lib, tree, "d/song.mp3", "e/x.tar.gz")
    one(lib.trash([recs[0]["uuid"]]))
    write(tree / "d/song.mp3", b"new")
    lib.scan([tree])
    restored = one(lib.restore([recs[0]["uuid"]]))
    assert get_field(restored, "path") == _b(tree / "d/song (restored).mp3")
    assert sorted(os.listdir(tree / "d")) == ["song (restored).mp3", "song.mp3"]
    assert (tree / "d/song (restored).mp3").read_bytes() == b"data-0"
    assert (tree / "d/song.mp3").read_bytes() == b"new"
    assert lib.resolve(_b(tree / "d/song.mp3"))["uuid"] != recs[0]["uuid"]
    # Missing parent folders are recreated.
    one(lib.trash([recs[1]["uuid"]]))
    os.rmdir(tree / "e")
    back = one(lib.restore([recs[1]["uuid"]]))
    assert get_field(back, "path") == _b(tree / "e/x.tar.gz")
    assert (tree / "e/x.tar.gz").read_bytes() == b"data-1"
    assert lib.doctor(repair=False)["clean"]


def test_restored_names_follow_the_sequence(lib: Library, tree: Path) -> None:
    (rec,) = scanned(lib, tree, "a.jpg")
    one(lib.trash([rec["uuid"]]))
    write(tree / "a.jpg", b"1")
    write(tree / "a (restored).jpg", b"2")
    assert get_field(one(lib.restore([rec["uuid"]])), "name") == b"a (restored 2).jpg"


@given(st.binary(min_size=1, max_size=255).filter(lambda b: b"/" not in b and b"\0" not in b))
def test_restore_names_are_distinct_and_fit(name: bytes) -> None:
    seen = []
    for candidate in restore_names(name):
        seen.append(candidate)
        if len(seen) == 30:
            break
    assert seen[0] == name
    assert len(set(seen)) == len(seen)
    assert all(0 < len(c) <= 255 and b"/" not in c for c in seen)
    dot = name.rfind(b".")
    if dot > 0 and len(name) - dot < 200:
        assert all(c.endswith(name[dot:]) for c in seen)
    if name.isascii() or _utf8(name):
        assert all(_utf8(c) for c in seen)


def _utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def test_delete_trashed_and_live(lib: Library, tree: Path) -> None:
    a, b = scanned(lib, tree, "a.jpg", "sub/b.mp4")
    one(lib.trash([a["uuid"]]))
    deleted = one(lib.delete([a["uuid"], ]))
    assert deleted["uuid"] == a["uuid"]
    one(lib.delete([_b(tree / "sub/b.mp4")]))
    assert not (tree / "sub/b.mp4").exists()
    assert os.listdir(tree / ".nas-trash") == []
    assert lib.get(a["uuid"]) is None and lib.get(b["uuid"]) is None
    assert lib.count() == 0 and lib.count(trash=True) == 0
    assert lib.doctor(repair=False)["clean"]


def test_empty_trash_older_than(lib: Library, tree: Path) -> None:
    a, b, c = scanned(lib, tree, "a.jpg", "b.jpg", "c.jpg")
    for rec in (a, b):
        one(lib.trash([rec["uuid"]]))
    old = lib.get(a["uuid"])
    put_record(lib, dict(old, deleted_at="2020-01-01T00:00:00+00:00"))
    assert lib.empty_trash(30 * 86400)[0].record["uuid"] == a["uuid"]
    assert lib.get(a["uuid"]) is None and lib.get(b["uuid"])["is_trash"]
    assert [r.record["uuid"] for r in lib.empty_trash()] == [b["uuid"]]
    assert lib.count(trash=True) == 0 and lib.get(c["uuid"]) is not None
    assert not os.listdir(tree / ".nas-trash")


def test_per_item_errors_never_half_apply(lib: Library, tree: Path) -> None:
    a, b = scanned(lib, tree, "a.jpg", "b.jpg")
    # A stray file already sits in b's trash slot: b fails, a and the unknown id are separate.
    write(tree / ".nas-trash" / b["uuid"] / "b.jpg", b"stray")
    results = lib.trash([a["uuid"], "00000000-0000-0000-0000-000000000000", b["uuid"]])
    assert [r.ok for r in results] == [True, False, False]
    assert isinstance(results[1].error, NotFoundError)
    assert isinstance(results[2].error, UsageError) and "already exists" in results[2].error.message
    assert (tree / "b.jpg").read_bytes() == b"data-1"
    assert lib.get(b["uuid"])["is_trash"] is False
    assert (tree / ".nas-trash" / b["uuid"] / "b.jpg").read_bytes() == b"stray"
    # Restore when the trash copy vanished: a clear error, the record stays trashed.
    os.unlink(tree / ".nas-trash" / a["uuid"] / "a.jpg")
    (res,) = lib.restore([a["uuid"]])
    assert isinstance(res.error, NotFoundError) and "gone" in res.error.message
    assert lib.get(a["uuid"])["is_trash"] is True
    # Wrong state: restoring a live file, trashing a trashed one.
    assert isinstance(lib.restore([b["uuid"]])[0].error, UsageError)
    assert isinstance(lib.trash([a["uuid"]])[0].error, UsageError)
    assert lib.doctor(repair=False)["clean"]
    assert not lib.trash_ops().pending()


def test_symlinked_parent_is_never_followed(lib: Library, tree: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    write(outside / "a.jpg", b"victim")
    (rec,) = scanned(lib, tree, "dir/a.jpg")
    # The folder is swapped for a symlink to a place outside the volume.
    os.rename(tree / "dir", tree / "dir.real")
    os.symlink(outside, tree / "dir")
    (res,) = lib.trash([rec["uuid"]])
    assert isinstance(res.error, UsageError) and "symlink" in res.error.message
    assert (outside / "a.jpg").read_bytes() == b"victim"
    (res,) = lib.delete([rec["uuid"]])
    assert isinstance(res.error, UsageError)
    assert (outside / "a.jpg").read_bytes() == b"victim"
    # Restore when a parent became a symlink: refused too.
    os.unlink(tree / "dir")
    os.rename(tree / "dir.real", tree / "dir")
    one(lib.trash([rec["uuid"]]))
    os.rmdir(tree / "dir")
    os.symlink(outside, tree / "dir")
    os.unlink(outside / "a.jpg")
    (res,) = lib.restore([rec["uuid"]])
    assert isinstance(res.error, UsageError)
    assert os.listdir(outside) == []
    assert lib.get(rec["uuid"])["is_trash"] is True


def test_swapped_trash_file_is_never_unlinked(lib: Library, tree: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"keep me")
    (rec,) = scanned(lib, tree, "a.jpg")
    trashed = one(lib.trash([rec["uuid"]]))
    tpath = get_field(trashed, "path")
    os.unlink(tpath)
    os.symlink(victim, tpath)
    (res,) = lib.delete([rec["uuid"]])
    assert not res.ok and "not a regular file" in res.error.message
    assert victim.read_bytes() == b"keep me" and os.path.islink(tpath)


@pytest.mark.parametrize("field,value", [
    ("original_path", b"/../../etc/passwd"),
    ("original_path", b"/etc/passwd"),
    ("trash_path", b"/tmp/.nas-trash/x/a.jpg"),
])
def test_tampered_stored_paths_are_refused(lib: Library, tree: Path, field: str,
                                           value: bytes) -> None:
    (rec,) = scanned(lib, tree, "a.jpg")
    trashed = one(lib.trash([rec["uuid"]]))
    bad = dict(trashed)
    if field == "original_path" and value.startswith(b"/../"):
        value = _b(tree) + b"/sub/../../escape.jpg"
    set_field(bad, field, value)
    put_record(lib, bad)
    (res,) = lib.restore([rec["uuid"]])
    assert isinstance(res.error, UsageError), res
    assert not os.path.exists(_b(tree).rsplit(b"/", 1)[0] + b"/escape.jpg")
    assert os.path.isfile(get_field(trashed, "path"))


def _can_mount() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.fixture
def mounted(tree: Path):  # type: ignore[no-untyped-def]
    """A tmpfs mounted inside the scan root (skipped where mounting is not allowed)."""
    target = tree / "usb"
    target.mkdir()
    if not _can_mount() or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "kvtest",
                                           str(target)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root / CAP_SYS_ADMIN)")
    yield target
    subprocess.run(["umount", "-l", str(target)], capture_output=True)


def test_mount_between_root_and_file(lib: Library, tree: Path, mounted: Path) -> None:
    from kvmedia.identity import FsUuidResolver

    lib._resolver = FsUuidResolver()  # the mount table changed after the library opened
    write(mounted / "clips/v.mp4", b"video")
    write(tree / "top.jpg", b"img")
    lib.scan([tree])
    rec = one(lib.trash([_b(mounted / "clips/v.mp4")]))
    assert get_field(rec, "path").startswith(_b(mounted) + b"/.nas-trash/")
    top = one(lib.trash([_b(tree / "top.jpg")]))
    assert get_field(top, "path").startswith(_b(tree) + b"/.nas-trash/")
    one(lib.restore([rec["uuid"]]))
    assert (mounted / "clips/v.mp4").read_bytes() == b"video"


def test_trash_on_another_filesystem_is_refused(lib: Library, tree: Path) -> None:
    (rec,) = scanned(lib, tree, "a.jpg")
    trash_dir = tree / ".nas-trash"
    trash_dir.mkdir()
    if not _can_mount() or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "kvtest",
                                           str(trash_dir)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root / CAP_SYS_ADMIN)")
    try:
        (res,) = lib.trash([rec["uuid"]])
        assert isinstance(res.error, StorageError) and "file system" in res.error.message
        assert (tree / "a.jpg").read_bytes() == b"data-0"
        assert lib.get(rec["uuid"])["is_trash"] is False
    finally:
        subprocess.run(["umount", "-l", str(trash_dir)], capture_output=True)


def test_cli_other_processes_see_every_step(tree: Path, data_dir: Path) -> None:
    write(tree / "a b.jpg", b"a")
    write(tree / "sub/c.mp3", b"c")
    bad = _b(tree) + b"/bad\xff.jpg"
    write(bad, b"x")
    run_cli(data_dir, "scan", str(tree), check=True)
    out = run_cli(data_dir, "trash", "--json", str(tree / "a b.jpg"), os.fsdecode(bad),
                  check=True).stdout.splitlines()
    uuids = [orjson.loads(line)["uuid"] for line in out]
    listed = run_cli(data_dir, "list", "--trash", "--json", check=True).stdout.splitlines()
    assert sorted(orjson.loads(line)["uuid"] for line in listed) == sorted(uuids)
    live = run_cli(data_dir, "list", "--json", check=True).stdout.splitlines()
    assert [get_field(orjson.loads(x), "path") for x in live] == [_b(tree / "sub/c.mp3")]
    shown = orjson.loads(run_cli(data_dir, "show", "--json", uuids[1], check=True).stdout)
    assert shown["is_trash"] and get_field(shown, "original_path") == bad
    proc = run_cli(data_dir, "restore", os.fsdecode(bad), "00000000-0000-0000-0000-000000000000")
    assert proc.returncode == 3 and b"not in the library" in proc.stderr
    assert os.path.isfile(bad)
    shown = orjson.loads(run_cli(data_dir, "show", "--json", os.fsdecode(bad), check=True).stdout)
    assert shown["is_trash"] is False and shown["uuid"] == uuids[1]
    run_cli(data_dir, "delete", str(tree / "sub/c.mp3"), check=True)
    assert run_cli(data_dir, "show", str(tree / "sub/c.mp3")).returncode == 3
    purged = run_cli(data_dir, "trash", "empty", "--json", check=True).stdout.splitlines()
    assert [orjson.loads(x)["uuid"] for x in purged] == [uuids[0]]
    assert run_cli(data_dir, "count", "--trash", check=True).stdout.strip() == b"0"
    assert run_cli(data_dir, "count", check=True).stdout.strip() == b"1"
    assert run_cli(data_dir, "trash", "empty", "x").returncode == 2
    assert run_cli(data_dir, "trash", "--older-than", "1d", "a").returncode == 2


CRASH_POINTS = {
    "trash.before_rename": ("trash", "orig"),
    "trash.after_rename": ("trash", "trash"),
    "restore.before_rename": ("restore", "trash"),
    "restore.after_rename": ("restore", "orig"),
    "delete.before_unlink": ("delete", "trash"),
    "delete.after_unlink": ("delete", "gone"),
}


@pytest.mark.parametrize("point", sorted(CRASH_POINTS))
def test_crash_between_move_and_record(tree: Path, data_dir: Path, point: str) -> None:
    """SIGKILL at each named point: the next open leaves file and record in agreement."""
    verb, where = CRASH_POINTS[point]
    write(tree / "d/a.jpg", b"payload")
    run_cli(data_dir, "scan", str(tree), check=True)
    if verb in ("restore", "delete"):
        run_cli(data_dir, "trash", str(tree / "d/a.jpg"), check=True)
    env = dict(os.environ, KVMEDIA_DATA_DIR=str(data_dir), KVMEDIA_CRASH_AT=f"{point}:1")
    proc = subprocess.run([sys.executable, "-m", "kvmedia", verb, str(tree / "d/a.jpg")],
                          env=env, capture_output=True, timeout=60)
    assert proc.returncode == -9, proc.stderr
    with Library.open(data_dir) as lib:  # opening settles the intent
        assert not lib.trash_ops().pending()
        recs = lib.list_media() + lib.list_media(trash=True)
        files = [p for p in _files(tree) if b"/.nas-trash/" in p or p.endswith(b"a.jpg")]
        if where == "gone":
            assert recs == [] and files == []
        else:
            assert len(recs) == 1 and len(files) == 1
            rec = recs[0]
            assert get_field(rec, "path") == files[0]
            assert rec["is_trash"] == (where == "trash")
            assert (TRASH_DIR in files[0]) == (where == "trash")
            assert open(files[0], "rb").read() == b"payload"
        assert lib.doctor(repair=False)["clean"]
        summary = lib.scan([tree])[0]
        assert (summary.added, summary.removed) == (0, 0)
        # The operation works again afterwards.
        if recs:
            op = lib.restore if recs[0]["is_trash"] else lib.trash
            one(op([recs[0]["uuid"]]))


def _files(root: Path) -> list[bytes]:
    out = []
    for dirpath, _dirs, names in os.walk(_b(root)):
        out.extend(os.path.join(dirpath, n) for n in names)
    return sorted(out)


def test_scan_dropping_the_record_mid_trash_is_repaired(lib: Library, tree: Path) -> None:
    """A scan that ran between the move and the record change removes nothing for good."""
    (rec,) = scanned(lib, tree, "a.jpg")
    ops = lib.trash_ops()
    intent = ops._intent("trash", rec, _b(tree / "a.jpg"), b"", rec["ino"])
    dst_dir = tree / ".nas-trash" / rec["uuid"]
    dst_dir.mkdir(parents=True)
    set_field(intent, "dst", _b(dst_dir / "a.jpg"))
    ops._put_intent(intent)
    os.rename(tree / "a.jpg", dst_dir / "a.jpg")  # step 2 done, then the process "died"
    lib.scan([tree])  # recovery runs first, so the scan sees a trashed record
    assert lib.get(rec["uuid"])["is_trash"] is True
    with lib.env.read() as txn:
        assert txn.get(P_INTENT + rec["uuid"].encode()) is None
    assert lib.doctor(repair=False)["clean"]


def _search(data_dir: Path, *args: str) -> list[str]:
    proc = run_cli(data_dir, "search", *args, "--json")
    assert proc.returncode in (0, 1), proc.stderr
    return [o["uuid"] for o in map(orjson.loads, proc.stdout.splitlines()) if "uuid" in o]


def test_search_in_another_process_follows_every_step(tree: Path, data_dir: Path) -> None:
    write(tree / "holiday beach.jpg", b"a")
    run_cli(data_dir, "scan", str(tree), check=True)
    (uuid,) = _search(data_dir, "holiday")
    run_cli(data_dir, "trash", uuid, check=True)
    assert _search(data_dir, "holiday") == []
    assert _search(data_dir, "holiday", "--trash", "true") == [uuid]
    run_cli(data_dir, "restore", uuid, check=True)
    assert _search(data_dir, "beach") == [uuid]
    run_cli(data_dir, "delete", uuid, check=True)
    assert _search(data_dir, "holiday") == _search(data_dir, "holiday", "--trash", "true") == []
