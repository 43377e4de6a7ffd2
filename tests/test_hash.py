"""Content hashes (checked against xxhash/hashlib directly), reuse, and duplicate sets."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import orjson
import xxhash
from kvtest import run_cli, write

from kvmedia import Library
from kvmedia.hashing import hash_file, valid_hash
from kvmedia.pathbytes import get_field


def _b(p: Path) -> bytes:
    return os.fsencode(p)


def test_hash_values_and_reuse(lib: Library, tree: Path) -> None:
    big = os.urandom(3 * (1 << 20) + 17)  # several read chunks
    write(tree / "big.mp4", big)
    write(tree / "small.jpg", b"abc")
    lib.scan([tree])
    first = lib.hash_media()
    assert (first.total, first.hashed, first.reused) == (2, 2, 0)
    rec = lib.resolve(_b(tree / "big.mp4"))
    assert rec["content_hash"] == "xxh3_128:" + xxhash.xxh3_128_hexdigest(big)
    assert valid_hash(rec) == rec["content_hash"]
    again = lib.hash_media()
    assert (again.hashed, again.reused) == (0, 2)
    # Changed content (size+mtime): the old hash goes stale at the rescan, then is redone.
    write(tree / "small.jpg", b"abcd")
    lib.scan([tree])
    assert valid_hash(lib.resolve(_b(tree / "small.jpg"))) is None
    third = lib.hash_media()
    assert (third.hashed, third.reused) == (1, 1)
    assert lib.resolve(_b(tree / "small.jpg"))["content_hash"].endswith(
        xxhash.xxh3_128_hexdigest(b"abcd"))
    sha = lib.hash_media([_b(tree / "small.jpg")], algo="sha256")
    assert sha.hashed == 1
    assert lib.resolve(_b(tree / "small.jpg"))["content_hash"] == (
        "sha256:" + hashlib.sha256(b"abcd").hexdigest())
    assert lib.doctor(repair=False)["clean"]


def test_hash_file_refuses_symlinks(tmp_path: Path) -> None:
    write(tmp_path / "real", b"x")
    os.symlink(tmp_path / "real", tmp_path / "link")
    digest, size, _ = hash_file(_b(tmp_path / "real"), "sha256")
    assert size == 1 and digest == "sha256:" + hashlib.sha256(b"x").hexdigest()
    try:
        hash_file(_b(tmp_path / "link"))
    except Exception as exc:  # noqa: BLE001
        assert "cannot read" in str(exc)
    else:
        raise AssertionError("a symlink was followed")


def test_dupes_against_oracle(lib: Library, tree: Path) -> None:
    contents = {
        "a/1.jpg": b"same-content", "b/2.jpg": b"same-content", "c/3.jpg": b"same-content",
        "a/4.mp3": b"other-conten",  # same size, different bytes: not a dupe
        "x.mp4": b"v" * 1000, "y/x.mp4": b"v" * 1000,
        "unique.png": b"lonely",
        "e1": b"", "e2": b"",  # empty files are not reported (min size 1)
    }
    for name, data in contents.items():
        write(tree / name, data)
    lib.scan([tree])
    sets = lib.dupes()
    got = [(s["wasted_bytes"], sorted(get_field(f, "path") for f in s["files"])) for s in sets]
    assert got == [
        (1000, sorted([_b(tree / "x.mp4"), _b(tree / "y/x.mp4")])),
        (24, sorted(_b(tree / n) for n in ("a/1.jpg", "b/2.jpg", "c/3.jpg"))),
    ]
    # Only same-size files were read.
    assert "content_hash" not in lib.resolve(_b(tree / "unique.png"))
    # A trashed copy no longer counts.
    assert lib.trash([_b(tree / "y/x.mp4")])[0].ok
    assert [s["count"] for s in lib.dupes()] == [3]


def test_cli_hash_and_dupes(tree: Path, data_dir: Path) -> None:
    write(tree / "a.jpg", b"dup")
    write(tree / "b.jpg", b"dup")
    run_cli(data_dir, "scan", str(tree), check=True)
    assert run_cli(data_dir, "hash").returncode == 2  # neither --all nor refs
    summary = orjson.loads(run_cli(data_dir, "hash", "--all", "--json", check=True).stdout)
    assert summary["hashed"] == 2
    rows = [orjson.loads(x) for x in run_cli(data_dir, "dupes", "--json", "--no-hash",
                                             check=True).stdout.splitlines()]
    assert [(r["count"], r["wasted_bytes"]) for r in rows] == [(2, 3)]


def test_scan_with_hash(tree: Path, tmp_path: Path, data_dir: Path) -> None:
    write(tree / "a.jpg", b"dup")
    write(tmp_path / "other/b.jpg", b"dup")
    run_cli(data_dir, "scan", str(tmp_path / "other"), check=True)
    lines = run_cli(data_dir, "scan", "--hash", "--json", str(tree), check=True).stdout
    hashed = orjson.loads(lines.splitlines()[-1])
    assert (hashed["type"], hashed["hashed"], hashed["total"]) == ("hash", 1, 1)
    again = orjson.loads(run_cli(data_dir, "scan", "--hash", "--json", str(tree),
                                 check=True).stdout.splitlines()[-1])
    assert (again["hashed"], again["reused"]) == (0, 1)
