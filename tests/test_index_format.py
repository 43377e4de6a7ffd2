"""The segment format: docs/format.md agrees with the code; round trips; damage detection."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvmedia.errors import DamagedError
from kvmedia.index import format as F
from kvmedia.index import manifest as M
from kvmedia.index.builder import build_segment
from kvmedia.index.docs import DocRow
from kvmedia.index.segment import Segment

DOC = Path(__file__).resolve().parent.parent / "docs" / "format.md"


def test_doc_constants_match_code() -> None:
    text = DOC.read_text()
    consts = dict(re.findall(r"^\| `(\w+)`\s*\| `([^`]*)`", text, re.M))
    assert consts["MAGIC"] == F.MAGIC.decode()
    assert consts["END_MAGIC"] == F.END_MAGIC.decode()
    assert consts["FORMAT_VERSION"] == str(F.FORMAT_VERSION)
    assert consts["HEADER"] == F.HEADER.format
    assert consts["SECTION"] == F.SECTION.format
    assert consts["FOOTER"] == F.FOOTER.format
    assert consts["ALIGN"] == str(F.ALIGN)
    sections = {name: int(num) for num, name in
                re.findall(r"^\| (\d+)\s+\| `(\w+)`", text, re.M)}
    assert sections == F.SECTION_IDS
    assert M.MANIFEST_MAGIC.decode().strip() in text


def _rows(n: int) -> list[DocRow]:
    return [DocRow(f"00000000-0000-5000-8000-{i:012d}", f"File{i}.jpg".encode(),
                   b"/mnt/a" if i % 2 else b"/mnt/b", f"file{i}.jpg",
                   "/mnt/a" if i % 2 else "/mnt/b", i * 10, i, 3, False, "jpg", float("nan"),
                   0, 0) for i in range(n)]


def test_round_trip(tmp_path: Path) -> None:
    path = str(tmp_path / "s.kvs")
    build_segment(_rows(50), path)
    seg = Segment(path, "s.kvs")
    assert seg.n == 50
    assert seg.uuid(0) == "00000000-0000-5000-8000-000000000049"  # newest first
    assert list(seg.mtime[:3]) == [490, 480, 470]
    i = seg.names.find(b"file7")
    assert i >= 0 and list(seg.names.postings_range(i, i + 1)) == [42]
    assert sorted(seg.lookup(["00000000-0000-5000-8000-000000000007"])) == [42]
    assert seg.raw_dir(0) == b"/mnt/a"


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty", "garbage"])
def test_damage_is_detected(tmp_path: Path, damage: str) -> None:
    path = str(tmp_path / "s.kvs")
    size = build_segment(_rows(200), path)
    with open(path, "r+b") as fh:
        if damage == "truncate":
            fh.truncate(size - 100)
        elif damage == "flip":
            fh.seek(size // 2)
            b = fh.read(1)
            fh.seek(size // 2)
            fh.write(bytes([b[0] ^ 0x40]))
        elif damage == "empty":
            fh.truncate(0)
        else:
            fh.write(os.urandom(64))
    with pytest.raises(DamagedError):
        Segment(path, "s.kvs")


def test_manifest_round_trip_and_damage(tmp_path: Path) -> None:
    man = M.Manifest(3, [M.SegmentEntry("seg-000003.kvs", 10, 999)])
    M.write_manifest(str(tmp_path), man)
    assert M.read_manifest(str(tmp_path)) == man
    raw = (tmp_path / M.MANIFEST).read_bytes()
    (tmp_path / M.MANIFEST).write_bytes(raw.replace(b'"docs":10', b'"docs":11'))
    with pytest.raises(DamagedError):
        M.read_manifest(str(tmp_path))


def test_dead_bitmap_round_trip(tmp_path: Path) -> None:
    dead = np.zeros(13, dtype=bool)
    dead[[0, 5, 12]] = True
    xxh = M.write_dead(str(tmp_path / "d"), dead)
    assert (M.read_dead(str(tmp_path / "d"), 13, xxh) == dead).all()
    with pytest.raises(DamagedError):
        M.read_dead(str(tmp_path / "d"), 13, xxh + 1)


@settings(max_examples=150, deadline=None)
@given(text=st.binary(max_size=300).map(lambda b: bytes(b"ab\n"[x % 3] for x in b)),
       needle=st.text(alphabet="ab", min_size=1, max_size=4),
       loop_max=st.sampled_from([1, 2, 7, 2048]))
def test_find_all_equals_brute_force(tmp_path_factory: pytest.TempPathFactory, text: bytes,
                                     needle: str, loop_max: int) -> None:
    """Every occurrence, overlapping ones included, whether found by the find loop, the
    vectorised compare, or a mix (FIND_LOOP_MAX decides where one hands over)."""
    path = str(tmp_path_factory.mktemp("find") / "seg")
    w = F.SegmentWriter(path, 0)
    w.add(F.NAME_TEXT, text)
    w.finish()
    f = F.SegmentFile(path)
    try:
        f.FIND_LOOP_MAX = loop_max
        nb = needle.encode()
        expected = [i for i in range(len(text)) if text.startswith(nb, i)]
        assert f.find_all(F.NAME_TEXT, nb).tolist() == expected
    finally:
        f.close()


def test_lookup_steps_over_hash_collisions(tmp_path: Path) -> None:
    """Two uuids filed under one hash value: lookup checks the raw uuid and moves on."""
    import xxhash

    rows = _rows(3)
    path = str(tmp_path / "seg")
    build_segment(rows, path)
    seg = Segment(path, "seg")
    a, b = seg.uuid(0), seg.uuid(1)
    h = xxhash.xxh64_intdigest(a.encode())
    seg.uuid_hash = np.array([h, h, h + 1], dtype=np.uint64)
    seg.uuid_hash_doc = np.array([1, 0, 2], dtype=np.uint32)  # b's entry comes first
    assert seg.lookup([a]).tolist() == [0]
    assert seg.lookup([a, a]).tolist() == [0, 0]
    assert seg.lookup([b]).tolist() == []  # filed under the wrong hash: not found


def test_more_extensions_than_a_u16_holds(tmp_path: Path) -> None:
    """70,000 distinct extensions (numbered parts, hostile trees) widen DOC_EXT to u32 and
    every doc keeps its own extension."""
    n = 70_000
    rows = [DocRow(f"00000000-0000-5000-8000-{i:012d}", f"part.{i}".encode(), b"/mnt/a",
                   f"part.{i}", "/mnt/a", i, 1, 4, False, str(i), float("nan"), 0, 0)
            for i in range(n)]
    path = str(tmp_path / "s.kvs")
    build_segment(rows, path)
    seg = Segment(path, "s.kvs")
    assert seg.ext.dtype == np.uint32
    docs = seg.lookup([rows[i].uuid for i in (0, 65_535, 65_536, n - 1)])
    by_doc = {int(d): seg.uuid(int(d)) for d in docs}
    for doc, uuid in by_doc.items():
        assert seg.exts[int(seg.ext[doc])] == str(int(uuid[-12:]))
    build_segment(rows[:10], path)
    assert Segment(path, "s.kvs").ext.dtype == np.uint16
