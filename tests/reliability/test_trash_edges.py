"""Trash edge cases through the CLI, each ending with rel_helpers.assert_consistent: restore
onto a taken path (never overwrites), trash across file systems (each volume's own
.nas-trash), 100 same-name files trashed within a second, permanent delete after the trash
copy was swapped (only regular files inside that volume's .nas-trash, with the recorded
inode, are unlinked), restore after a folder on the way became a symlink (never followed).

tests/test_trash.py covers the library-level basics of each (one case apiece); these add the
variants: taken by a folder or a symlink, two roots and a nested mount, same names from
different folders and from one path, hardlinked / symlinked / slot-swapped trash copies,
symlinks inside the volume and onto another file system."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
from rel_helpers import assert_consistent, assert_search_correct, cli_env, fs_files, records

from kvmedia import Library
from kvmedia.errors import EXIT_NOT_FOUND, EXIT_USAGE
from kvmedia.fsck import fsck
from kvmedia.pathbytes import get_field

TIMEOUT = 120
VICTIM = b"victim: must stay as it is"


def kv(data_dir: Path, *args: str | bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "kvmedia", *args], env=cli_env(data_dir),
                          capture_output=True, timeout=TIMEOUT)


def ok(proc: subprocess.CompletedProcess[bytes]) -> list[dict]:
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return [orjson.loads(x) for x in proc.stdout.splitlines() if x.startswith(b"{")]


def refused(proc: subprocess.CompletedProcess[bytes], *codes: int) -> dict:
    """A per-item refusal: a typed JSON error, an exit code from `codes`, no traceback."""
    assert b"Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode in codes, (proc.returncode, proc.stderr)
    (err,) = [orjson.loads(x) for x in proc.stderr.splitlines() if x.startswith(b"{")]
    assert err["type"] == "error"
    return err


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def rec_of(data_dir: Path, uuid: str) -> dict:
    with Library.open(data_dir, readonly=True) as lib:
        rec = lib.get(uuid)
    assert rec is not None
    return rec


def uuid_at(data_dir: Path, path: Path | bytes) -> str:
    with Library.open(data_dir, readonly=True) as lib:
        return lib.resolve(os.fsencode(path))["uuid"]


Mount = Callable[[Path, str], Path]


@pytest.fixture
def tmpfs() -> Iterator[Mount]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted: list[Path] = []

    def mount(where: Path, source: str = "kvtrash") -> Path:
        where.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", source, str(where)],
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


# -- restore onto a taken path ------------------------------------------------------------------

def test_restore_onto_taken_paths_never_overwrites(tree: Path, tmp_path: Path, data_dir: Path,
                                                   figures) -> None:
    """Documented (kvmedia restore --help): a taken path restores as `name (restored).ext`,
    then `(restored 2)`...; whatever took the name (file, folder, symlink) is left as it is."""
    outside = write(tmp_path / "outside" / "v.jpg", VICTIM)
    names = {"file": "a.jpg", "folder": "b.jpg", "symlink": "c.jpg", "dangling": "d.jpg",
             "twice": "e.jpg"}
    for i, name in enumerate(names.values()):
        write(tree / "x" / name, b"original %d" % i)
    ok(kv(data_dir, "scan", str(tree)))
    uuids = {k: uuid_at(data_dir, tree / "x" / n) for k, n in names.items()}
    ok(kv(data_dir, "trash", *uuids.values()))
    write(tree / "x" / "a.jpg", b"newcomer")
    (tree / "x" / "b.jpg").mkdir()
    write(tree / "x" / "b.jpg" / "inside.jpg", b"in folder")
    os.symlink(outside, tree / "x" / "c.jpg")
    os.symlink(tmp_path / "outside" / "nothing.jpg", tree / "x" / "d.jpg")
    write(tree / "x" / "e.jpg", b"e1")
    write(tree / "x" / "e (restored).jpg", b"e2")
    ok(kv(data_dir, "scan", str(tree)))
    out = ok(kv(data_dir, "restore", *uuids.values(), "--json"))
    got = {o["uuid"]: os.path.basename(os.fsencode(o["path"])) for o in out}
    assert got == {uuids["file"]: b"a (restored).jpg", uuids["folder"]: b"b (restored).jpg",
                   uuids["symlink"]: b"c (restored).jpg",
                   uuids["dangling"]: b"d (restored).jpg",
                   uuids["twice"]: b"e (restored 2).jpg"}
    figures.add("trash", "restores onto taken paths", len(got))
    assert (tree / "x" / "a.jpg").read_bytes() == b"newcomer"
    assert (tree / "x" / "b.jpg" / "inside.jpg").read_bytes() == b"in folder"
    assert os.readlink(tree / "x" / "c.jpg") == str(outside) and outside.read_bytes() == VICTIM
    assert not (tmp_path / "outside" / "nothing.jpg").exists()
    assert (tree / "x" / "e.jpg").read_bytes() == b"e1"
    assert (tree / "x" / "e (restored).jpg").read_bytes() == b"e2"
    for i, (kind, name) in enumerate(names.items()):
        stem, ext = name.split(".")
        suffix = " (restored 2)" if kind == "twice" else " (restored)"
        assert (tree / "x" / f"{stem}{suffix}.{ext}").read_bytes() == b"original %d" % i
    for link in ("c.jpg", "d.jpg"):
        os.unlink(tree / "x" / link)
    assert_consistent(data_dir, tree)


# -- across file systems ---------------------------------------------------------------------

def test_each_volume_has_its_own_trash(tree: Path, tmp_path: Path, data_dir: Path,
                                       tmpfs: Mount, figures) -> None:
    """Two scan roots on two file systems, and a third file system mounted inside the first
    root: a file always goes to the .nas-trash of the file system it is on, never across."""
    other = tmpfs(tmp_path / "other", "kvother")
    nested = tmpfs(tree / "usb", "kvnested")
    files = {"disk": write(tree / "photos" / "a.jpg", b"disk"),
             "other": write(other / "music" / "a.jpg", b"other"),
             "nested": write(nested / "clips" / "a.jpg", b"nested")}
    volumes = {"disk": tree, "other": other, "nested": nested}
    ok(kv(data_dir, "scan", str(tree), str(other)))
    uuids = {k: uuid_at(data_dir, p) for k, p in files.items()}
    out = ok(kv(data_dir, "trash", *(str(p) for p in files.values()), "--json"))
    assert len(out) == 3
    for kind, uuid in uuids.items():
        tpath = get_field(rec_of(data_dir, uuid), "path")
        vol = os.fsencode(volumes[kind])
        assert tpath == vol + b"/.nas-trash/" + uuid.encode() + b"/a.jpg", (kind, tpath)
        assert os.stat(tpath).st_dev == os.stat(vol).st_dev
        figures.add("trash", "cross-filesystem trash moves")
    assert sorted(os.listdir(tree / ".nas-trash")) == [uuids["disk"]]
    assert sorted(os.listdir(other / ".nas-trash")) == [uuids["other"]]
    assert sorted(os.listdir(nested / ".nas-trash")) == [uuids["nested"]]
    ok(kv(data_dir, "restore", *uuids.values()))
    for kind, path in files.items():
        assert path.read_bytes() == kind.encode()
    ok(kv(data_dir, "trash", str(files["other"])))
    ok(kv(data_dir, "delete", uuids["other"]))
    assert not files["other"].exists() and os.listdir(other / ".nas-trash") == []
    with Library.open(data_dir) as lib:  # assert_consistent, for two roots at once
        assert fsck(lib)["clean"]
        lib.scan([tree, other])
        paths = sorted(get_field(r, "path") for r in records(lib))
        assert paths == sorted(fs_files(tree) | fs_files(other))
        assert fsck(lib)["clean"]
        assert_search_correct(lib)


# -- many same names -------------------------------------------------------------------------

def test_hundred_same_name_files_trashed_in_one_second(tree: Path, data_dir: Path,
                                                       figures) -> None:
    """One slot per uuid: 100 `IMG_0001.JPG` from 100 folders, trashed by one command, stay
    100 distinct trash files, and each restores to its own folder with its own bytes."""
    files = [write(tree / f"f{i:03d}" / "IMG_0001.JPG", b"photo %d" % i) for i in range(100)]
    ok(kv(data_dir, "scan", str(tree)))
    out = ok(kv(data_dir, "trash", *(str(p) for p in files), "--json"))
    assert len(out) == 100
    tpaths = {o["uuid"]: os.fsencode(o["path"]) for o in out}
    assert len(set(tpaths.values())) == 100
    with Library.open(data_dir, readonly=True) as lib:
        seconds = {r["deleted_at"][:19] for r in lib.trash_ops().trashed()}
        assert lib.count(trash=True) == 100
    figures.add("trash", "same-name files trashed", 100)
    figures.max("trash", "distinct deleted_at seconds for 100 trashes", len(seconds))
    assert not any(f.exists() for f in files)
    # Restore by original path, in reverse order: each lands in its own folder.
    ok(kv(data_dir, "restore", *(str(p) for p in reversed(files))))
    for i, f in enumerate(files):
        assert f.read_bytes() == b"photo %d" % i
    assert os.listdir(tree / ".nas-trash") == []
    assert_consistent(data_dir, tree)


def test_same_path_trashed_many_times(tree: Path, data_dir: Path, figures) -> None:
    """20 successive files at ONE path, each trashed: all 20 kept apart; restoring them all
    fills the name and then `(restored)`, `(restored 2)`, ... with every version's bytes."""
    target = tree / "inbox" / "scan.pdf"
    uuids = []
    with Library.open(data_dir) as lib:
        for i in range(20):
            write(target, b"version %d" % i)
            lib.scan([tree])
            uuids.append(lib.resolve(os.fsencode(target))["uuid"])
            (res,) = lib.trash([uuids[-1]])
            assert res.ok, res.error
    assert len(set(uuids)) == 20
    figures.add("trash", "same-name files trashed", 20)
    ok(kv(data_dir, "restore", *uuids))
    contents = sorted(p.read_bytes() for p in (tree / "inbox").iterdir())
    assert contents == sorted(b"version %d" % i for i in range(20))
    assert (tree / "inbox" / "scan.pdf").read_bytes() == b"version 0"
    assert (tree / "inbox" / "scan (restored 19).pdf").exists()
    assert_consistent(data_dir, tree)


# -- swapped trash copies ----------------------------------------------------------------------

SWAPS = ["symlink-outside", "symlink-other-volume", "hardlink", "slot-symlink",
         "trash-dir-symlink", "fifo"]


@pytest.mark.parametrize("swap", SWAPS)
def test_delete_of_a_swapped_trash_copy(tree: Path, tmp_path: Path, data_dir: Path, swap: str,
                                        tmpfs: Mount, figures) -> None:
    """Only the regular file with the recorded inode inside that volume's .nas-trash is ever
    unlinked: whatever was swapped in is refused and left as it is, and so is its target."""
    outside = write(tmp_path / "outside" / "a.jpg", VICTIM)
    other = tmpfs(tmp_path / "other", "kvother") if swap == "symlink-other-volume" else None
    if other is not None:
        write(other / "a.jpg", VICTIM)
    write(tree / "d" / "a.jpg", b"real")
    write(tree / "d" / "keep.jpg", b"keep")
    ok(kv(data_dir, "scan", str(tree)))
    uuid = uuid_at(data_dir, tree / "d" / "a.jpg")
    ok(kv(data_dir, "trash", uuid))
    tpath = Path(os.fsdecode(get_field(rec_of(data_dir, uuid), "path")))
    slot, trash_dir = tpath.parent, tpath.parent.parent
    aside = tmp_path / "aside"
    os.rename(trash_dir, aside)  # keep the real copy safe; put it back at the end
    slot_aside = aside / slot.name
    if swap in ("slot-symlink", "trash-dir-symlink"):
        fake = tmp_path / "fake-trash"
        write(fake / slot.name / "a.jpg", VICTIM)
        if swap == "slot-symlink":
            trash_dir.mkdir()
            os.symlink(fake / slot.name, slot)
        else:
            os.symlink(fake, trash_dir)
        victim = fake / slot.name / "a.jpg"
    else:
        slot.mkdir(parents=True)
        if swap == "symlink-outside":
            os.symlink(outside, tpath)
            victim = outside
        elif swap == "symlink-other-volume":
            assert other is not None
            os.symlink(other / "a.jpg", tpath)
            victim = other / "a.jpg"
        elif swap == "hardlink":  # a regular file, but another inode than the trashed one
            os.link(outside, tpath)
            victim = outside
        else:
            os.mkfifo(tpath)
            victim = tpath
    for args in (["delete", uuid, "--json"], ["trash", "empty", "--json"],
                 ["restore", uuid, "--json"]):
        figures.add("trash", "swapped trash copies tried")
        refused(kv(data_dir, *args), EXIT_USAGE, EXIT_NOT_FOUND)
        if swap == "fifo":
            assert os.path.exists(victim)
        else:
            assert victim.read_bytes() == VICTIM, args
        assert rec_of(data_dir, uuid)["is_trash"] is True
    figures.add("trash", "victims touched", 0)
    # Undo the swap: the real copy back in place, and the delete now goes through.
    if swap == "trash-dir-symlink":
        os.unlink(trash_dir)
    else:
        if swap == "slot-symlink":
            os.unlink(slot)
        else:
            os.unlink(tpath)
            os.rmdir(slot)
        os.rmdir(trash_dir)
    os.rename(aside, trash_dir)
    assert (slot_aside.name == slot.name) and tpath.read_bytes() == b"real"
    ok(kv(data_dir, "delete", uuid))
    assert not tpath.exists() and (tree / "d" / "keep.jpg").read_bytes() == b"keep"
    assert victim.read_bytes() == VICTIM if swap != "fifo" else True
    assert_consistent(data_dir, tree)


# -- a folder on the way became a symlink ------------------------------------------------------

CHANGES = ["parent-to-outside", "parent-inside-volume", "grandparent-inside-volume",
           "parent-other-volume"]


@pytest.mark.parametrize("change", CHANGES)
def test_restore_when_a_folder_became_a_symlink(tree: Path, tmp_path: Path, data_dir: Path,
                                                change: str, tmpfs: Mount, figures) -> None:
    """The restore is refused (the copy stays in the trash, the record trashed) and nothing
    appears where the link points; once the folder is real again, the restore works."""
    write(tree / "g" / "p" / "a.jpg", b"real")
    write(tree / "elsewhere" / "other.jpg", b"other")
    ok(kv(data_dir, "scan", str(tree)))
    uuid = uuid_at(data_dir, tree / "g" / "p" / "a.jpg")
    ok(kv(data_dir, "trash", uuid))
    tpath = get_field(rec_of(data_dir, uuid), "path")
    if change == "parent-to-outside":
        target = tmp_path / "outside"
        target.mkdir()
        link = tree / "g" / "p"
    elif change == "parent-inside-volume":
        target, link = tree / "elsewhere", tree / "g" / "p"
    elif change == "grandparent-inside-volume":
        target, link = tree / "elsewhere", tree / "g"
        (target / "p").mkdir()
    else:
        target, link = tmpfs(tmp_path / "other", "kvother"), tree / "g" / "p"
    before = sorted(os.listdir(target))
    os.rename(link, tmp_path / "moved-away")
    os.symlink(target, link)
    figures.add("trash", "restores through symlinked folders tried")
    refused(kv(data_dir, "restore", uuid, "--json"), EXIT_USAGE)
    assert sorted(os.listdir(target)) == before
    if change == "grandparent-inside-volume":
        assert os.listdir(target / "p") == []
    assert os.path.isfile(tpath) and rec_of(data_dir, uuid)["is_trash"] is True
    figures.add("trash", "escapes", 0)
    os.unlink(link)
    os.rename(tmp_path / "moved-away", link)
    ok(kv(data_dir, "restore", uuid))
    assert (tree / "g" / "p" / "a.jpg").read_bytes() == b"real"
    if change == "grandparent-inside-volume":
        os.rmdir(target / "p")
    assert_consistent(data_dir, tree)
    with Library.open(data_dir, readonly=True) as lib:
        assert len(records(lib)) == 2
