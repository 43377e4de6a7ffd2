"""Ids kept in `user.kvmedia.uuid`: a deleted data dir rebuilds with the same uuids, a copy
made with its xattrs becomes a new item with `copied_from`. Real xattrs on the test FS."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from kvtest import run_cli, write

from kvmedia import Library
from kvmedia.persistids import XATTR_UUID, read_ids, supported


@pytest.fixture
def xtree(tree: Path) -> Path:
    if not supported(os.fsencode(tree)):
        pytest.skip("the test filesystem does not store user xattrs")
    return tree


def uuids(lib: Library) -> dict[bytes, str]:
    from kvmedia.pathbytes import get_field

    return {get_field(r, "path"): r["uuid"] for r in lib.list_media()}


def test_rebuilt_data_dir_gets_the_same_uuids(tmp_path: Path, xtree: Path) -> None:
    write(xtree / "a.jpg", b"a")
    write(os.fsencode(xtree) + b"/sub/b\xff.mp4", b"bb")  # a non-UTF-8 name
    lib = Library.open(tmp_path / "d1")
    lib.scan([xtree], persist_ids="xattr")
    first = uuids(lib)
    for path, uuid in first.items():
        assert read_ids(path)[0] == uuid
    assert lib.scan([xtree], persist_ids="xattr")[0].unchanged == 2  # ctime stored after write
    os.rename(xtree / "a.jpg", xtree / "renamed.jpg")  # a rename moves the ctime
    lib.scan([xtree], persist_ids="xattr")
    moved = uuids(lib)
    lib.close()
    shutil.rmtree(tmp_path / "d1")

    lib = Library.open(tmp_path / "d1")
    lib.scan([xtree], persist_ids="xattr")
    assert uuids(lib) == moved and set(moved.values()) == set(first.values())
    lib.close()


def test_copy_with_xattrs_becomes_a_new_item(tmp_path: Path, xtree: Path) -> None:
    write(xtree / "orig.jpg", b"photo")
    lib = Library.open(tmp_path / "d")
    lib.scan([xtree], persist_ids="xattr")
    orig = uuids(lib)[os.fsencode(xtree / "orig.jpg")]
    other = tmp_path / "vol2"
    other.mkdir()
    subprocess.run(["cp", "-a", str(xtree / "orig.jpg"), str(other / "copy.jpg")], check=True)
    assert read_ids(os.fsencode(other / "copy.jpg"))[0] == orig  # the xattr travelled
    lib.scan([other], persist_ids="xattr")
    copy = lib.find_by_path(str(other / "copy.jpg"))
    assert copy["uuid"] != orig and copy["copied_from"] == orig
    assert read_ids(os.fsencode(other / "copy.jpg"))[0] == copy["uuid"]  # rewritten for it
    assert lib.find_by_path(str(xtree / "orig.jpg"))["uuid"] == orig
    lib.close()


def test_off_by_default_and_backfill(tmp_path: Path, xtree: Path) -> None:
    write(xtree / "x.png", b"x")
    lib = Library.open(tmp_path / "d")
    lib.scan([xtree])
    path = os.fsencode(xtree / "x.png")
    with pytest.raises(OSError):
        os.getxattr(path, XATTR_UUID)
    assert lib.persist_ids() == {"written": 1, "present": 0, "failed": 0}
    uuid = lib.find_by_path(str(xtree / "x.png"))["uuid"]
    assert read_ids(path)[0] == uuid
    assert lib.scan([xtree])[0].unchanged == 1  # the record took the new ctime
    lib.close()


def _mount_ramfs(where: Path) -> bool:
    """ramfs stores no user xattrs; mounting one needs root (skip otherwise)."""
    where.mkdir()
    proc = subprocess.run(["mount", "-t", "ramfs", "kvmedia-test", str(where)],
                          capture_output=True)
    return proc.returncode == 0


def test_unsupported_filesystem_is_reported_once(tmp_path: Path, tree: Path) -> None:
    vol = tmp_path / "ramfs"
    if not _mount_ramfs(vol):
        pytest.skip("cannot mount a ramfs here (not root?): no filesystem without user xattrs")
    try:
        assert not supported(os.fsencode(vol))
        for i in range(3):
            write(vol / f"f{i}.jpg", b"x")
        proc = run_cli(tmp_path / "d", "scan", "--persist-ids", "xattr", str(vol), check=True)
        assert proc.stderr.count(b"does not store user xattrs") == 1
        assert b"3 added" in proc.stdout
    finally:
        subprocess.run(["umount", str(vol)], capture_output=True)
