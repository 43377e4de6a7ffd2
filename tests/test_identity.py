"""Identity: the PlainNAS-compatible UUID, filesystem UUIDs from mountinfo, and a file keeping
its uuid through renames, moves and chmods while a new file never inherits one."""

from __future__ import annotations

import os
import uuid as uuidlib
from pathlib import Path

import pytest
from kvtest import write

from kvmedia import Library
from kvmedia.identity import (
    NAMESPACE,
    FsUuidResolver,
    _unescape,
    read_mounts,
    read_uuid_links,
    uuid_for_hardlink,
    uuid_from_triplet,
)


def test_uuid_test_vector() -> None:
    assert uuid_from_triplet("1234-ABCD", 42, 1700000000) == "ee770097-6c93-5d0b-996b-a7d03040f456"


def test_uuid_is_rfc4122_v5_over_the_triplet() -> None:
    assert NAMESPACE.bytes == b"media-nas-id\0\0\0\0"
    u = uuidlib.UUID(uuid_from_triplet("fs", 1, 2))
    assert u.version == 5 and u.variant == uuidlib.RFC_4122
    assert str(u) == str(uuidlib.uuid5(NAMESPACE, "fs:1:2"))
    assert uuid_from_triplet("fs", 1, 2) != uuid_from_triplet("fs", 12, 2)
    assert uuid_for_hardlink("fs", 1, 2, b"/a") != uuid_for_hardlink("fs", 1, 2, b"/b")


MOUNTINFO = (
    "22 1 0:21 / /proc rw,relatime - proc proc rw\n"
    "27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"
    "40 27 8:1 / /mnt/my\\040disk rw,relatime shared:5 master:2 - ext4 /dev/sda1 rw\n"
    "41 40 8:2 / /mnt/my\\040disk/inner rw - vfat /dev/sda2 rw\n"
    "42 27 8:3 / /mnt/tab\\011nl\\012back\\134slash rw - xfs /dev/sdb\\0401 rw\n"
    "43 27 0:50 / /mnt/usb1 rw - exfat /dev/sdc1 rw\n"
    "44 27 0:51 / /mnt/usb10 rw - exfat /dev/sdd1 rw\n"
    "this line is garbage\n"
)


def test_unescape_octal() -> None:
    assert _unescape("/a\\040b") == b"/a b"
    assert _unescape("/x\\134y\\011z\\012") == b"/x\\y\tz\n"
    assert _unescape("/plain") == b"/plain"


def test_mountinfo_parsing(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_bytes(MOUNTINFO.encode() + b"45 27 0:52 / /mnt/caf\xe9 rw - ext4 /dev/sde1 rw\n")
    mounts = {m.mount_point: m for m in read_mounts(str(info))}
    assert mounts[b"/mnt/my disk"].fstype == "ext4"
    assert mounts[b"/mnt/my disk"].dev == os.makedev(8, 1)
    assert mounts[b"/mnt/my disk/inner"].source == "/dev/sda2"
    assert mounts[b"/mnt/tab\tnl\nback\\slash"].source == "/dev/sdb 1"
    assert mounts[b"/mnt/caf\xe9"].dev == os.makedev(0, 52), "non-UTF-8 mount points kept"
    assert len(mounts) == 8  # the garbage line is skipped


def test_missing_mountinfo_is_empty(tmp_path: Path) -> None:
    assert read_mounts(str(tmp_path / "nope")) == []
    assert read_uuid_links(str(tmp_path / "nope")) == {}


def test_longest_mount_prefix_and_boundaries(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_text(MOUNTINFO)
    r = FsUuidResolver(str(info), str(tmp_path / "no-by-uuid"))
    assert r.mount_for(b"/mnt/my disk/inner/a.jpg").mount_point == b"/mnt/my disk/inner"
    assert r.mount_for(b"/mnt/my disk/innerx/a.jpg").mount_point == b"/mnt/my disk"
    assert r.mount_for(b"/mnt/usb10/a.jpg").mount_point == b"/mnt/usb10"
    assert r.mount_for(b"/mnt/usb1/a.jpg").mount_point == b"/mnt/usb1"
    assert r.mount_for(b"/mnt/usb100/a.jpg").mount_point == b"/"
    # With the device known, a file on the parent fs under a nested mount point is matched
    # to its own device's mount.
    assert r.mount_for(b"/mnt/my disk/inner/x", os.makedev(8, 1)).mount_point == b"/mnt/my disk"


def test_fs_uuid_from_by_uuid_links(tmp_path: Path) -> None:
    """/dev/disk/by-uuid maps block devices to UUIDs, by st_dev or by the mount's source."""
    by_uuid = tmp_path / "by-uuid"
    by_uuid.mkdir()
    os.symlink("/dev/null", by_uuid / "ABCD-1234")
    null_rdev = os.stat("/dev/null").st_rdev
    info = tmp_path / "mountinfo"
    info.write_text(
        f"1 0 {os.major(null_rdev)}:{os.minor(null_rdev)} / /mnt/a rw - ext4 /dev/xyz rw\n"
        "2 0 0:77 / /mnt/b rw - ext4 /dev/null rw\n"
        "3 0 0:78 / /mnt/c rw - nfs server:/export rw\n"
    )
    r = FsUuidResolver(str(info), str(by_uuid))
    assert r.fs_uuid(b"/mnt/a/f", null_rdev) == "ABCD-1234"
    assert r.fs_uuid(b"/mnt/b/f", os.makedev(0, 77)) == "ABCD-1234"
    nfs = r.fs_uuid(b"/mnt/c/f", os.makedev(0, 78))
    assert nfs.startswith("nfs-")
    # Stable: a second resolver (another process, after a reboot) says the same.
    assert FsUuidResolver(str(info), str(by_uuid)).fs_uuid(b"/mnt/c/f", os.makedev(0, 78)) == nfs
    assert r.fs_uuid(b"/elsewhere", os.makedev(9, 9)) == "dev-9-9"


# -- identity through real scans -------------------------------------------------------------

def uuid_at(lib: Library, path: Path) -> str:
    rec = lib.find_by_path(bytes(path))
    assert rec is not None, path
    return rec["uuid"]


def paths(lib: Library) -> set[bytes]:
    from kvmedia.pathbytes import get_field

    return {get_field(r, "path") for r in lib.list_media(sort="name")}


def test_first_scan_uses_the_plainnas_uuid(lib: Library, tree: Path) -> None:
    f = write(tree / "a.jpg")
    lib.scan([tree])
    rec = lib.find_by_path(bytes(f))
    st = os.stat(f)
    assert rec["uuid"] == uuid_from_triplet(rec["fs_uuid"], st.st_ino, st.st_ctime_ns // 10**9)
    assert rec["ino"] == st.st_ino and rec["mtime_ns"] == st.st_mtime_ns


def test_rename_and_move_keep_the_uuid(lib: Library, tree: Path) -> None:
    a = write(tree / "z" / "a.jpg", b"12345")
    lib.scan([tree])
    u = uuid_at(lib, a)
    b = tree / "z" / "b.jpg"
    os.rename(a, b)
    lib.scan([tree])
    assert uuid_at(lib, b) == u
    (tree / "a").mkdir()
    c = tree / "a" / "c.jpg"  # walked before the old place: the merge sees the new path first
    os.rename(b, c)
    s = lib.scan([tree])[0]
    assert uuid_at(lib, c) == u
    assert (s.moved, s.added, s.removed) == (1, 0, 0)
    assert paths(lib) == {bytes(c)}
    d = tree / "zz" / "d.jpg"  # walked after the old place
    d.parent.mkdir()
    os.rename(c, d)
    lib.scan([tree])
    assert uuid_at(lib, d) == u and paths(lib) == {bytes(d)}
    assert lib.doctor(repair=False)["clean"]


def test_chmod_and_rename_after_chmod_keep_the_uuid(lib: Library, tree: Path) -> None:
    a = write(tree / "a.mp3")
    lib.scan([tree])
    u = uuid_at(lib, a)
    os.chmod(a, 0o600)
    s = lib.scan([tree])[0]
    assert uuid_at(lib, a) == u and s.updated == 1
    os.chmod(a, 0o644)
    b = tree / "b.mp3"
    os.rename(a, b)
    lib.scan([tree])
    assert uuid_at(lib, b) == u
    assert lib.count() == 1


def test_swapped_names_follow_their_inodes(lib: Library, tree: Path) -> None:
    x, y = write(tree / "x.jpg", b"xx"), write(tree / "y.jpg", b"yyy")
    lib.scan([tree])
    ux, uy = uuid_at(lib, x), uuid_at(lib, y)
    os.rename(x, tree / "t")
    os.rename(y, x)
    os.rename(tree / "t", y)
    lib.scan([tree])
    assert uuid_at(lib, x) == uy and uuid_at(lib, y) == ux
    assert lib.count() == 2 and lib.doctor(repair=False)["clean"]


def _reuse_inode(victim: Path, new: Path, data: bytes) -> bool:
    """Delete `victim` and create `new` until the new file gets the victim's inode."""
    ino = os.stat(victim).st_ino
    os.unlink(victim)
    for i in range(50):
        write(new, data)
        if os.stat(new).st_ino == ino:
            return True
        os.rename(new, new.with_name(f".keep{i}"))  # hold that inode, try again
    return False


def test_inode_reused_by_a_new_file_gets_a_new_uuid(lib: Library, tree: Path) -> None:
    a = write(tree / "a.jpg", b"old")
    lib.scan([tree])
    ua = uuid_at(lib, a)
    b = tree / "b.jpg"
    if not _reuse_inode(a, b, b"new content"):
        pytest.skip("this filesystem did not reuse the inode")
    s = lib.scan([tree])[0]
    assert uuid_at(lib, b) != ua
    assert (s.added, s.removed, s.moved) == (1, 1, 0)
    assert lib.get(ua) is None
    assert lib.doctor(repair=False)["clean"]
    # And it stays put: a rescan changes nothing.
    ub = uuid_at(lib, b)
    s = lib.scan([tree])[0]
    assert (s.unchanged, s.added, s.updated) == (1, 0, 0) and uuid_at(lib, b) == ub


def test_inode_reused_at_another_deleted_files_path(lib: Library, tree: Path) -> None:
    a, b = write(tree / "a.jpg", b"aa"), write(tree / "b.jpg", b"bbb")
    lib.scan([tree])
    ua, ub = uuid_at(lib, a), uuid_at(lib, b)
    os.unlink(b)
    if not _reuse_inode(a, b, b"brand new"):
        pytest.skip("this filesystem did not reuse the inode")
    lib.scan([tree])
    assert uuid_at(lib, b) not in (ua, ub)
    assert lib.count() == 1 and lib.doctor(repair=False)["clean"]


def test_hardlinks_get_one_record_per_name(lib: Library, tree: Path) -> None:
    a = write(tree / "a.jpg", b"data")
    b = tree / "b.jpg"
    os.link(a, b)
    lib.scan([tree])
    ua, ub = uuid_at(lib, a), uuid_at(lib, b)
    assert ua != ub and lib.count() == 2
    s = lib.scan([tree])[0]
    assert s.unchanged == 2 and (s.added, s.updated, s.moved) == (0, 0, 0)
    os.unlink(a)
    lib.scan([tree])
    assert uuid_at(lib, b) == ub and lib.count() == 1
    assert lib.doctor(repair=False)["clean"]


def test_never_two_records_for_one_file(lib: Library, tree: Path) -> None:
    """Renames mixed with new files in one interval: one record per file, all uuids unique."""
    files = [write(tree / f"d{i % 3}" / f"f{i}.jpg", b"x" * (i + 1)) for i in range(12)]
    lib.scan([tree])
    before = {p.name: uuid_at(lib, p) for p in files}
    for i, p in enumerate(files[:6]):
        os.rename(p, tree / f"d{(i + 1) % 3}" / f"r{i}.jpg")
    for i in range(6, 9):
        files[i].unlink()
        write(tree / f"d{i % 3}" / f"n{i}.jpg", b"y" * (100 + i))
    lib.scan([tree])
    recs = lib.list_media(sort="name")
    on_disk = {bytes(p) for p in tree.rglob("*.jpg")}
    assert {r["path"].encode() for r in recs} == on_disk
    assert len({r["uuid"] for r in recs}) == len(recs) == len(on_disk)
    for i in range(6):
        assert uuid_at(lib, tree / f"d{(i + 1) % 3}" / f"r{i}.jpg") == before[f"f{i}.jpg"]
    for i in range(6, 9):
        assert uuid_at(lib, tree / f"d{i % 3}" / f"n{i}.jpg") not in before.values()
    assert lib.doctor(repair=False)["clean"]


@pytest.mark.parametrize("gone", ["a.jpg", "b.jpg"])
def test_removing_either_hardlink_keeps_the_others_fid_key(lib: Library, tree: Path,
                                                           gone: str) -> None:
    """Two names of one inode share its fid key; whichever record goes, the key stays."""
    a = write(tree / "a.jpg", b"data")
    os.link(a, tree / "b.jpg")
    lib.scan([tree])
    kept = tree / ("b.jpg" if gone == "a.jpg" else "a.jpg")
    uk = uuid_at(lib, kept)
    os.unlink(tree / gone)
    lib.scan([tree])
    assert uuid_at(lib, kept) == uk and lib.count() == 1
    assert lib.doctor(repair=False)["clean"]


def test_inode_reused_in_the_same_second_then_changed_before_a_full_scan(
        lib: Library, tree: Path) -> None:
    """A new file takes a deleted file's inode within its ctime second (the same triplet,
    so the same fid key) and is recorded by the watcher's path upsert, which never sees the
    deleted file; then it changes again. The deleted file's record (removed only by the next
    complete scan) must not be left without the fid key the newcomer's update gave up."""
    for _attempt in range(5):
        a = write(tree / "a.jpg", b"old")
        lib.scan([tree])
        ua = uuid_at(lib, a)
        ctime_s = lib.get(ua)["ctime"]
        b = tree / "b.jpg"
        if not _reuse_inode(a, b, b"new content"):
            pytest.skip("this filesystem did not reuse the inode")
        if os.stat(b).st_ctime_ns // 10**9 == ctime_s:
            break
        b.unlink()  # crossed a second boundary: try again
    else:
        pytest.skip("no inode reuse within one ctime second")
    lib.upsert_paths([b])
    assert lib.doctor(repair=False)["clean"]
    ub = uuid_at(lib, b)
    assert ub != ua
    deadline = ctime_s + 1
    while os.stat(b).st_ctime_ns // 10**9 <= deadline - 1:
        os.chmod(b, 0o640)  # a new ctime second: the fid key of b moves
        os.chmod(b, 0o644)
    lib.upsert_paths([b])
    assert lib.doctor(repair=False)["clean"]
    lib.scan([tree])
    assert lib.get(ua) is None
    assert uuid_at(lib, b) == ub and lib.count() == 1
    assert lib.doctor(repair=False)["clean"]
