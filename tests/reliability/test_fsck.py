"""`kvmedia fsck`: clean on a sound library, every kind of damage found (exit 6), repaired
(exit 0, "repaired"), and clean again afterwards. Real CLI subprocesses on real libraries."""

from __future__ import annotations

import json
import os
from pathlib import Path

import orjson
from rel_helpers import make_tree, run

from kvmedia import Library
from kvmedia.index import manifest as M
from kvmedia.pathbytes import get_field, set_field
from kvmedia.store import keys as K
from kvmedia.trash import P_INTENT
from kvmedia.vectors import keys as V


def _fsck(data_dir: Path, *args: str) -> tuple[int, dict]:
    proc = run(data_dir, "fsck", "--json", *args)
    return proc.returncode, json.loads(proc.stdout.splitlines()[-1])


def _library(tree: Path, data_dir: Path, n: int = 30) -> None:
    make_tree(tree, n)
    with Library.open(data_dir) as lib:
        lib.scan([tree])
        lib.rebuild_index()


def _damage_then_repair(data_dir: Path, area: str) -> dict:
    code, report = _fsck(data_dir)
    assert code == 6 and report["verdict"] == "damaged"
    assert any(p.startswith(area + ":") for p in report["problems"]), report
    code, report = _fsck(data_dir, "--repair")
    assert code == 0 and report["verdict"] == "repaired", report
    code, report = _fsck(data_dir)
    assert code == 0 and report["verdict"] == "clean", report
    return report


def test_clean_library(tree: Path, data_dir: Path) -> None:
    _library(tree, data_dir)
    code, report = _fsck(data_dir)
    assert code == 0 and report["verdict"] == "clean"
    assert report["records"] == report["index_docs"] == 30
    proc = run(data_dir, "fsck")
    assert proc.returncode == 0 and proc.stdout.strip().endswith(b"clean")


def test_empty_data_dir_is_clean(data_dir: Path) -> None:
    code, report = _fsck(data_dir)
    assert code == 0 and report["verdict"] == "clean"


def test_missing_path_key(tree: Path, data_dir: Path) -> None:
    _library(tree, data_dir)
    with Library.open(data_dir) as lib:
        rec = lib.list_media()[0]
        lib.env.write(lambda t: t.delete(K.path_key(get_field(rec, "path"))))
    _damage_then_repair(data_dir, "records")


def test_orphan_path_key(tree: Path, data_dir: Path) -> None:
    _library(tree, data_dir)
    with Library.open(data_dir) as lib:
        with lib.env.read() as txn:
            value = txn.get(K.path_key(get_field(lib.list_media()[0], "path")))
        lib.env.write(lambda t: t.put(K.path_key(b"/nowhere/x.jpg"), value))
    _damage_then_repair(data_dir, "records")


def test_delta_missing_a_record(tree: Path, data_dir: Path) -> None:
    """A record the index does not hold (delta entry lost) is found and rebuilt."""
    make_tree(tree, 10)
    with Library.open(data_dir) as lib:
        lib.scan([tree])
        lib.rebuild_index()
        (tree / "new beach.jpg").write_bytes(b"n")
        lib.scan([tree])
        uuid = lib.find_by_path(str(tree / "new beach.jpg"))["uuid"]
        lib.env.write(lambda t: t.delete(b"sidx:d:" + uuid.encode()))
    report = _damage_then_repair(data_dir, "index")
    assert report["index_docs"] == 11


def test_stale_segment_row(tree: Path, data_dir: Path) -> None:
    """A change whose delta entry was lost leaves the segment's old row visible: found."""
    _library(tree, data_dir, 10)
    with Library.open(data_dir) as lib:
        rec = lib.list_media()[0]
        path = get_field(rec, "path")
        os.rename(path, path + b".moved.jpg")
        lib.scan([tree])
        lib.env.write(lambda t: t.delete(b"sidx:d:" + rec["uuid"].encode()))
    report = _damage_then_repair(data_dir, "index")
    assert report["index_docs"] == 10


def test_manifest_damaged(tree: Path, data_dir: Path) -> None:
    _library(tree, data_dir)
    path = data_dir / M.DIR_NAME / M.MANIFEST
    raw = bytearray(path.read_bytes())
    raw[30] ^= 0x04
    path.write_bytes(bytes(raw))
    _damage_then_repair(data_dir, "index")


def test_segment_missing(tree: Path, data_dir: Path) -> None:
    _library(tree, data_dir)
    seg = next((data_dir / M.DIR_NAME).glob("seg-*.kvs"))
    seg.unlink()
    _damage_then_repair(data_dir, "index")


def test_vector_ids(tree: Path, data_dir: Path) -> None:
    """A vid whose reverse key disagrees is damage; a vid of a deleted record is not."""
    _library(tree, data_dir, 5)
    with Library.open(data_dir) as lib:
        uuid = lib.list_media()[0]["uuid"]
        value = V.VidValue(1, b"\0" * 16, uuid, "m").pack()
        gone = "00000000-0000-4000-8000-000000000000"

        def fn(t):
            t.put(V.vid_key(uuid), value)
            t.put(V.vuuid_key(1), value[:-1] + b"x")
            t.put(V.vid_key(gone), V.VidValue(2, b"\0" * 16, gone, "m").pack())
            t.put(V.vuuid_key(2), V.VidValue(2, b"\0" * 16, gone, "m").pack())
            t.put(V.K_VNEXT, b"3")

        lib.env.write(fn)
    code, report = _fsck(data_dir)
    assert code == 6 and report["stale_vector_ids"] == 1
    assert [p for p in report["problems"] if p.startswith("vectors:")]
    with Library.open(data_dir) as lib:
        lib.env.write(lambda t: t.put(V.vuuid_key(1), value))
    code, report = _fsck(data_dir)
    assert code == 0 and report["stale_vector_ids"] == 1
    code, report = _fsck(data_dir, "--repair")
    code, report = _fsck(data_dir)
    assert code == 0 and report["stale_vector_ids"] == 0


def test_vector_file_damaged(tree: Path, data_dir: Path) -> None:
    from kvmedia.vectors.snapshot import write_snapshot

    _library(tree, data_dir, 3)
    path = data_dir / "vectors" / "m.kvv"
    write_snapshot(str(path), {"model": "m", "dim": 2, "kind": "numpy", "count": 0}, b"")
    assert _fsck(data_dir)[0] == 0
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 1
    path.write_bytes(bytes(raw))
    _damage_then_repair(data_dir, "vectors")
    assert not path.exists()


def test_state_json(tree: Path, data_dir: Path) -> None:
    _library(tree, data_dir, 3)
    (data_dir / "state.json").write_bytes(b'{"pid": 1}')
    os.chmod(data_dir / "state.json", 0o600)
    assert _fsck(data_dir)[0] == 0
    (data_dir / "state.json").write_bytes(b'{"pid": 1, "runn')
    _damage_then_repair(data_dir, "state")


def test_pending_intent_of_dead_process(tree: Path, data_dir: Path) -> None:
    """An intent whose process died (nothing moved yet) is reported, and rolled back."""
    _library(tree, data_dir, 3)
    with Library.open(data_dir) as lib:
        rec = lib.list_media()[0]
        path = get_field(rec, "path")
        intent = {"op": "trash", "uuid": rec["uuid"], "ino": rec.get("ino"), "record": rec,
                  "pid": 999999, "at": "2020-01-01T00:00:00Z"}
        set_field(intent, "src", path)
        set_field(intent, "dst", path + b".gone")
        lib.env.write(lambda t: t.put(P_INTENT + rec["uuid"].encode(), orjson.dumps(intent)))
    _damage_then_repair(data_dir, "intents")
    with Library.open(data_dir) as lib:
        assert not lib.get(rec["uuid"]).get("is_trash")


def test_loose_modes(tree: Path, data_dir: Path) -> None:
    _library(tree, data_dir, 3)
    os.chmod(data_dir / M.DIR_NAME / M.MANIFEST, 0o644)
    os.chmod(data_dir / M.DIR_NAME, 0o755)
    os.symlink("/etc/passwd", data_dir / "planted")  # never chmod'ed through
    mode = os.stat("/etc/passwd").st_mode
    _damage_then_repair(data_dir, "modes")
    assert os.stat(data_dir / M.DIR_NAME / M.MANIFEST).st_mode & 0o777 == 0o600
    assert os.stat(data_dir / M.DIR_NAME).st_mode & 0o777 == 0o700
    assert os.stat("/etc/passwd").st_mode == mode
