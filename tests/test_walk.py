"""The walker: path-key byte order (what the merge-join scan relies on), deep trees, special
files, and `excludes()` agreeing with what the walk skips."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvmedia.store import keys as K
from kvmedia.walk import FileEntry, KeepPrefix, Walker, WalkRules, Warning_

SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

# Names chosen to stress the order: "." and "-" sort before "/", "0" after it; raw bytes
# above 0x7f; names that are prefixes of others.
name_st = st.sampled_from([b"a", b"a.b", b"a-b", b"a0", b"ab", b"A", b"\xff", b"\xc3\xa9",
                           b"a b", b"z", b".h", b"@eaDir", b"x.jpg", b"cache", b"k.tmp"])
tree_st = st.lists(st.lists(name_st, min_size=1, max_size=4), min_size=1, max_size=25)


def build(root: bytes, shapes: list[list[bytes]]) -> set[bytes]:
    """Create files at the given relative paths (skipping ones that clash with a dir/file)."""
    files: set[bytes] = set()
    for parts in shapes:
        path = os.path.join(root, *parts)
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if os.path.isdir(path):
                continue
            with open(path, "wb") as fh:
                fh.write(b"x")
            files.add(path)
        except (FileExistsError, NotADirectoryError):
            continue
    return files


def walk_files(root: bytes, rules: WalkRules | None = None) -> list[bytes]:
    return [i.path for i in Walker(root, rules) if isinstance(i, FileEntry)]


@SETTINGS
@given(tree_st)
def test_walk_order_is_path_key_order(shapes: list[list[bytes]]) -> None:
    tmp = tempfile.mkdtemp(prefix="kvm-walk-").encode()
    try:
        root = os.path.join(tmp, b"r")
        os.mkdir(root)
        files = build(root, shapes)
        got = walk_files(root, WalkRules(skip_hidden=False))
        visible = {f for f in files if b"/@eaDir" not in f}
        assert got == sorted(visible), "walk order == byte order of the paths"
        assert [K.path_key(p) for p in got] == sorted(K.path_key(p) for p in got)
    finally:
        shutil.rmtree(tmp)


@SETTINGS
@given(tree_st, st.sampled_from([b"", b"*.tmp\n", b"cache/\n", b"a*\n!ab\n", b"/z\n"]),
       st.lists(st.sampled_from(["*.jpg", "a0/", "A"]), max_size=2), st.booleans())
def test_excludes_agrees_with_the_walk(shapes: list[list[bytes]], ignore: bytes,
                                       exclude: list[str], nomedia: bool) -> None:
    """Every file on disk is either walked or excluded, never both."""
    tmp = tempfile.mkdtemp(prefix="kvm-walk-").encode()
    try:
        root = os.path.join(tmp, b"r")
        os.mkdir(root)
        files = build(root, shapes)
        if ignore:
            with open(os.path.join(root, b".kvmediaignore"), "wb") as fh:
                fh.write(ignore)
        if nomedia and os.path.isdir(os.path.join(root, b"a")):
            open(os.path.join(root, b"a", b".nomedia"), "wb").close()
        walker = Walker(root, WalkRules(exclude=exclude))
        walked = set(walk_files(root, WalkRules(exclude=exclude)))
        for f in files:
            assert (f in walked) != walker.excludes(f), f
    finally:
        shutil.rmtree(tmp)


def test_deep_tree_does_not_hit_the_recursion_limit(tmp_path: Path) -> None:
    deep = bytes(tmp_path)
    for _ in range(1000):  # os.makedirs and pathlib recurse themselves
        deep += b"/d"
        os.mkdir(deep)
    try:
        with open(deep + b"/bottom.jpg", "wb") as fh:
            fh.write(b"x")
        assert walk_files(bytes(tmp_path)) == [deep + b"/bottom.jpg"]
    finally:  # shutil.rmtree (and pytest's cleanup) would recurse 1000 deep
        os.unlink(deep + b"/bottom.jpg")
        while deep != bytes(tmp_path):
            os.rmdir(deep)
            deep = os.path.dirname(deep)


def test_a_deep_walk_keeps_at_most_one_directory_open(tmp_path: Path) -> None:
    """Files are stat'ed relative to their open directory; descending closes it first, so a
    tree 300 deep with files on every level never holds more than one descriptor."""
    deep = bytes(tmp_path)
    made = []
    for i in range(300):
        for name in (b"a.jpg", b"z.jpg"):  # one before and one after the subdirectory
            with open(deep + b"/" + name, "wb") as fh:
                fh.write(b"x")
            made.append(deep + b"/" + name)
        deep += b"/d%d" % i
        os.mkdir(deep)
    before = len(os.listdir("/proc/self/fd"))
    most = 0
    seen = []
    for item in Walker(bytes(tmp_path), WalkRules()):
        most = max(most, len(os.listdir("/proc/self/fd")) - before)
        if isinstance(item, FileEntry):
            seen.append(item.path)
    assert sorted(seen) == sorted(made)
    assert most <= 2  # the walk's own directory, plus the one /proc listing opens
    for path in made:  # rmtree would recurse 300 deep
        os.unlink(path)
    while deep != bytes(tmp_path):
        os.rmdir(deep)
        deep = os.path.dirname(deep)


def test_special_files_and_symlinks(tmp_path: Path) -> None:
    (tmp_path / "f.jpg").write_bytes(b"x")
    os.mkfifo(tmp_path / "fifo")
    os.symlink(tmp_path / "f.jpg", tmp_path / "l.jpg")
    os.symlink(tmp_path, tmp_path / "loop")
    walker = Walker(bytes(tmp_path))
    items = list(walker)
    assert [i.path for i in items if isinstance(i, FileEntry)] == [bytes(tmp_path / "f.jpg")]
    assert [i.path for i in items if isinstance(i, Warning_)] == [bytes(tmp_path / "fifo")]
    assert walker.counters.symlinks == 2 and walker.counters.special == 1
    entry = next(i for i in items if isinstance(i, FileEntry))
    st = os.stat(tmp_path / "f.jpg")
    assert (entry.ino, entry.size, entry.mtime_ns, entry.ctime_ns) == (
        st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def test_missing_root_yields_keep_prefix(tmp_path: Path) -> None:
    items = list(Walker(bytes(tmp_path / "gone")))
    assert items == [KeepPrefix(bytes(tmp_path / "gone") + b"/",
                                "directory vanished during the scan")]


def test_include_rules_respect_path_boundaries() -> None:
    rules = WalkRules(include=[b"/mnt/usb1"])
    assert rules.allows_file(b"/mnt/usb1/a.jpg")
    assert not rules.allows_file(b"/mnt/usb10/a.jpg")
    assert rules.allows_dir(b"/mnt") and rules.allows_dir(b"/mnt/usb1/x")
    assert not rules.allows_dir(b"/mnt/usb10")
    assert WalkRules().allows_file(b"/anything")
