"""Buckets against a brute-force oracle over the records, on a real tree."""

from __future__ import annotations

import os
import random
from pathlib import Path

import orjson
from hypothesis import given
from hypothesis import strategies as st
from kvtest import run_cli, write

from kvmedia import Library
from kvmedia.buckets import bucket_id, fnv1a_32
from kvmedia.pathbytes import get_field


def test_fnv1a_known_vectors() -> None:
    # Reference values of the FNV-1a 32-bit specification.
    assert fnv1a_32(b"") == 0x811C9DC5
    assert fnv1a_32(b"a") == 0xE40C292C
    assert fnv1a_32(b"foobar") == 0xBF9CF968
    assert bucket_id(b"a") == str(0xE40C292C)


@given(st.binary(max_size=64))
def test_fnv1a_matches_definition(data: bytes) -> None:
    h = 2166136261
    for byte in data:
        h = ((h ^ byte) * 16777619) % 2**32
    assert fnv1a_32(data) == h


def oracle(lib: Library, media_type: str | None) -> list[dict]:
    groups: dict[bytes, list[dict]] = {}
    with lib.env.read() as txn:
        for rec in lib.store.iter_records(txn):
            if rec.get("is_trash") or (media_type and rec["type"] != media_type):
                continue
            groups.setdefault(os.path.dirname(get_field(rec, "path")), []).append(rec)
    out = []
    for directory, recs in groups.items():
        recs.sort(key=lambda r: (r["mtime_ns"], r["uuid"]), reverse=True)
        out.append((-len(recs), os.path.basename(directory).decode("utf-8", "surrogateescape")
                    .casefold(), directory, [r["uuid"] for r in recs[:4]]))
    out.sort(key=lambda t: t[:3])
    return [{"path": d, "count": -n, "items": items} for n, _name, d, items in out]


def test_buckets_equal_oracle(lib: Library, tree: Path) -> None:
    rng = random.Random(7)
    dirs = ["Camera", "camera2", "Music/Album A", "Music/Album B", "Vids", "a/b/c", "Ảnh"]
    exts = ["jpg", "png", "mp3", "flac", "mp4", "txt"]
    for i in range(160):
        path = tree / rng.choice(dirs) / f"f{i:03d}.{rng.choice(exts)}"
        write(path, b"x" * rng.randrange(5))
        t = 1_600_000_000 + rng.randrange(10_000)
        os.utime(path, ns=(t * 10**9, t * 10**9 + rng.randrange(10**9)))
    write(_bad := os.fsencode(tree) + b"/bad\xffdir/x.jpg", b"1")
    lib.scan([tree])
    # Trashed items leave their bucket.
    victims = [r["uuid"] for r in lib.list_media(media_type="image", limit=5)]
    assert all(r.ok for r in lib.trash(victims))
    for media_type in (None, "image", "audio", "video", "other"):
        got = lib.buckets(media_type)
        want = oracle(lib, media_type)
        assert [(get_field(b, "path"), b["count"], [i["uuid"] for i in b["items"]])
                for b in got] == [(w["path"], w["count"], w["items"]) for w in want]
        assert all(b["id"] == str(fnv1a_32(get_field(b, "path"))) for b in got)
    assert lib.buckets("all") == lib.buckets(None)


def test_buckets_cli(tree: Path, data_dir: Path) -> None:
    for name in ("p/a.jpg", "p/b.jpg", "q/c.mp4"):
        write(tree / name, b"x")
    run_cli(data_dir, "scan", str(tree), check=True)
    rows = [orjson.loads(x) for x in run_cli(data_dir, "buckets", "--json",
                                             check=True).stdout.splitlines()]
    assert [(r["name"], r["count"]) for r in rows] == [("p", 2), ("q", 1)]
    assert run_cli(data_dir, "buckets", "--type", "audio").returncode == 1
