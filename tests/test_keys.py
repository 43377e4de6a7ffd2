"""Key encodings: LMDB byte order of every `media:type:` family equals Python's sorted().

The oracle is the plain tuple order each kind promises ((mtime_ns, uuid), (size, uuid),
(folded name, uuid)); the store is a real LMDB environment written through RecordWriter.
"""

from __future__ import annotations

import os
import tempfile
import unicodedata
import uuid as uuidlib
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvmedia import Library
from kvmedia.pathbytes import get_field, set_field
from kvmedia.store import keys as K
from kvmedia.store.recordstore import record_fid_key, record_path_value, record_type_keys

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

TYPES = ("audio", "video", "image", "other")

# Names: valid UTF-8 (incl. case and composed/decomposed variants), raw bytes that are not
# UTF-8, names that are prefixes of each other, and names longer than NAME_KEY_MAX.
_fixed_names = st.sampled_from([
    b"a", b"ab", b"abc", b"AB", b"Ab", b"ab ", b"a b", "é".encode(), "e\u0301".encode(),
    "É".encode(), b"\xff", b"a\xff", b"a\xfe\xff", b"\xe9t\xe9", b"z" * 239, b"z" * 240,
    b"z" * 241, b"z" * 240 + b"a", b"z" * 240 + b"b", "ß".encode(), b"ss", b"SS", b"~", b"\x7f",
    "日本".encode(), b"a:b", b"a:", b"0", b"00",
])
_text_names = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/\0"),
                      min_size=1, max_size=12).map(lambda s: s.encode("utf-8"))
_byte_names = st.binary(min_size=1, max_size=12).filter(lambda b: b"/" not in b and b"\0" not in b)
names = st.one_of(_fixed_names, _text_names, _byte_names)

mtimes = st.one_of(
    st.sampled_from([0, -1, 1, -(1 << 63), (1 << 63) - 1, 1_700_000_000_123_456_789,
                     -86_400_000_000_000]),
    st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1),
)
# Per-file sizes up to 2**57 keep the per-type byte totals of 25 records inside the signed
# 64-bit stats counter; the pure key tests below go up to 2**63 - 1.
HUGE = 1 << 57
sizes = st.one_of(st.sampled_from([0, 1, 9, 10, HUGE, 1 << 40]),
                  st.integers(min_value=0, max_value=HUGE))


@st.composite
def record_sets(draw: Any) -> list[dict[str, Any]]:
    n = draw(st.integers(min_value=0, max_value=25))
    # A small pool of values so ties (equal names, mtimes, sizes) are common.
    name_pool = draw(st.lists(names, min_size=1, max_size=6))
    mtime_pool = draw(st.lists(mtimes, min_size=1, max_size=4))
    size_pool = draw(st.lists(sizes, min_size=1, max_size=4))
    uuids = draw(st.lists(st.uuids(), min_size=n, max_size=n, unique=True))
    out = []
    for i in range(n):
        name = draw(st.sampled_from(name_pool))
        rec = make_record(
            str(uuids[i]), b"/vol/d%d/" % i + name, draw(st.sampled_from(mtime_pool)),
            draw(st.sampled_from(size_pool)), draw(st.sampled_from(TYPES)),
            trash=draw(st.booleans()) if i % 3 == 0 else False,
        )
        out.append(rec)
    return out


def make_record(uuid: str, path: bytes, mtime_ns: int, size: int, media_type: str,
                trash: bool = False, ino: int = 1, fs_uuid: str = "fs-1") -> dict[str, Any]:
    rec: dict[str, Any] = {
        "uuid": uuid, "fs_uuid": fs_uuid, "ino": ino, "ctime": 0, "ctime_ns": 0,
        "mtime_ns": mtime_ns, "mtime": mtime_ns / 1e9, "size": size, "type": media_type,
        "is_trash": trash,
    }
    set_field(rec, "path", path)
    set_field(rec, "name", os.path.basename(path))
    return rec


def oracle_name(name: bytes) -> bytes:
    """The documented name order: case-folded NFC UTF-8, invalid bytes verbatim, 240 bytes."""
    text = name.decode("utf-8", "surrogateescape").casefold()
    return unicodedata.normalize("NFC", text).encode("utf-8", "surrogateescape")[:240]


def oracle_key(kind: str, rec: dict[str, Any]) -> tuple[Any, str]:
    base = kind.removesuffix("desc")
    if base == "mod":
        return rec["mtime_ns"], rec["uuid"]
    if base == "size":
        return rec["size"], rec["uuid"]
    return oracle_name(get_field(rec, "name") or b""), rec["uuid"]


def fresh_library(tmp: str) -> Library:
    return Library.open(tmp)


def put_all(lib: Library, recs: list[dict[str, Any]]) -> None:
    def fn(txn: Any) -> None:
        w = lib.store.writer(txn)
        for rec in recs:
            w.put(rec, lib.store.get(txn, rec["uuid"]))
        w.finish()

    lib.env.write(fn)


def raw_prefix_uuids(lib: Library, prefix: bytes) -> list[str]:
    with lib.env.read() as txn:
        return [K.uuid_from_type_key(k) for k, _ in lib.store.iter_prefix(txn, prefix)]


@SETTINGS
@given(record_sets())
def test_prefix_iteration_equals_sorted(recs: list[dict[str, Any]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        lib = fresh_library(tmp)
        try:
            put_all(lib, recs)
            for media_type in (*TYPES, K.ALL):
                for trash in (False, True):
                    chosen = [r for r in recs if bool(r["is_trash"]) == trash
                              and media_type in (K.ALL, r["type"])]
                    for kind in K.KINDS:
                        want = [r["uuid"] for r in sorted(
                            chosen, key=lambda r, k=kind: oracle_key(k, r),
                            reverse=kind.endswith("desc"))]
                        got = raw_prefix_uuids(lib, K.type_prefix(media_type, trash, kind))
                        assert got == want, (media_type, trash, kind)
                    asc = raw_prefix_uuids(lib, K.type_prefix(media_type, trash, "name"))
                    desc = raw_prefix_uuids(lib, K.type_prefix(media_type, trash, "namedesc"))
                    assert desc == asc[::-1]
            # The listing API serves the same order, with offset/limit as plain slicing.
            full = [r["uuid"] for r in lib.list_media(sort="sizedesc")]
            assert full == raw_prefix_uuids(lib, K.type_prefix(K.ALL, False, "sizedesc"))
            assert [r["uuid"] for r in lib.list_media(sort="sizedesc", offset=2, limit=3)] \
                == full[2:5]
            assert lib.count() == len(full)
        finally:
            lib.close()


@SETTINGS
@given(st.lists(names, min_size=2, max_size=8), st.lists(st.uuids(), min_size=2, max_size=2))
def test_sort_key_bytes_order_matches_tuple_order(name_list: list[bytes], uu: list[Any]) -> None:
    """Pure key level: for any two records, key byte order == oracle order, desc mirrored."""
    big = (1 << 63) - 1
    for i, a in enumerate(name_list):
        for b in name_list:
            ra = make_record(str(uu[0]), b"/v/" + a, -i, big - i, "other")
            rb = make_record(str(uu[1]), b"/v/" + b, i, big, "other")
            for kind in K.KINDS:
                ka = K.type_key("other", False, kind, a, -i, big - i, ra["uuid"])
                kb = K.type_key("other", False, kind, b, i, big, rb["uuid"])
                want = oracle_key(kind, ra) < oracle_key(kind, rb)
                assert (ka < kb) == (want if not kind.endswith("desc") else not want)


@SETTINGS
@given(st.uuids().map(str), st.integers(0, (1 << 64) - 1), st.integers(0, (1 << 64) - 1),
       st.integers(-(1 << 63), (1 << 63) - 1), st.integers(-(1 << 63), (1 << 63) - 1),
       st.integers(0, 255))
def test_path_value_round_trip(uuid: str, ino: int, size: int, mtime_ns: int, ctime_ns: int,
                               flags: int) -> None:
    pv = K.PathValue(uuid, ino, size, mtime_ns, ctime_ns, flags)
    raw = pv.pack()
    assert raw[:K.UUID_LEN] == uuid.encode()
    assert K.PathValue.unpack(raw) == pv


def test_path_value_bare_uuid_layout() -> None:
    """A PlainNAS-style value (just the uuid) reads as a stamp that never equals a real file."""
    u = str(uuidlib.uuid4())
    assert K.PathValue.unpack(u.encode()) == K.PathValue(u, 0, 0, 0, 0, 0)


@SETTINGS
@given(st.integers(-(1 << 63), (1 << 63) - 1), st.integers(-(1 << 63), (1 << 63) - 1))
def test_stats_round_trip(count: int, total: int) -> None:
    assert K.unpack_stats(K.pack_stats(count, total)) == (count, total)


def test_stats_missing_is_zero() -> None:
    assert K.unpack_stats(None) == (0, 0)
    assert K.unpack_stats(b"") == (0, 0)


path_bytes = st.lists(
    st.binary(min_size=1, max_size=60).filter(lambda b: b"/" not in b and b"\0" not in b),
    min_size=1, max_size=20,
).map(lambda parts: b"/" + b"/".join(parts))


@SETTINGS
@given(st.lists(path_bytes, min_size=1, max_size=10, unique=True))
def test_path_key_distinct_and_bounded(paths: list[bytes]) -> None:
    keys = [K.path_key(p) for p in paths]
    assert len(set(keys)) == len(paths)
    for p, k in zip(paths, keys, strict=True):
        assert len(k) <= 511, "LMDB keys are at most 511 bytes"
        assert k.startswith(K.P_PATH)
        if len(p) <= K.PATH_KEY_MAX:
            assert K.path_from_key(k) == p
        else:
            assert K.path_from_key(k) is None
            assert k[len(K.P_PATH):].startswith(p[:K.PATH_KEY_MAX])


def test_long_paths_sharing_a_prefix_get_distinct_keys() -> None:
    base = b"/" + b"d" * 420
    a, b = base + b"/a", base + b"/b"
    assert K.path_key(a) != K.path_key(b)
    assert K.path_key(a) == K.path_key(a)
    short = b"/" + b"d" * (K.PATH_KEY_MAX - 1)
    assert K.path_from_key(K.path_key(short)) == short


def test_long_path_records_in_lmdb(tmp_path: Any) -> None:
    """Records with paths longer than an LMDB key are stored, found and kept apart."""
    lib = Library.open(tmp_path / "lib")
    try:
        base = b"/vol/" + b"x" * 600
        recs = [make_record(str(uuidlib.uuid4()), base + b"/%d.mp4" % i, i, i, "video")
                for i in range(3)]
        put_all(lib, recs)
        for rec in recs:
            assert lib.find_by_path(get_field(rec, "path"))["uuid"] == rec["uuid"]
        assert lib.doctor(repair=False)["clean"]
    finally:
        lib.close()


def test_fid_prefix_keeps_inodes_apart() -> None:
    assert not K.fid_key("fs", 421, 5).startswith(K.fid_prefix("fs", 42))
    assert K.fid_key("fs", 42, 5).startswith(K.fid_prefix("fs", 42))


@given(st.uuids().map(str))
def test_complement_uuid_is_an_order_reversing_involution(u: str) -> None:
    c = K.complement_uuid(u)
    assert K.complement_uuid(c) == u
    assert len(c) == len(u) and c.count("-") == 4


@SETTINGS
@given(st.lists(st.uuids().map(str), min_size=2, max_size=10, unique=True))
def test_complement_reverses_order(us: list[str]) -> None:
    assert sorted(us, key=K.complement_uuid) == sorted(us, reverse=True)


@SETTINGS
@given(names, mtimes, sizes, st.uuids().map(str), st.sampled_from((*TYPES, K.ALL)),
       st.booleans(), st.sampled_from(K.KINDS))
def test_uuid_from_type_key(name: bytes, mtime_ns: int, size: int, uuid: str, media_type: str,
                            trash: bool, kind: str) -> None:
    key = K.type_key(media_type, trash, kind, name, mtime_ns, size, uuid)
    assert key.startswith(K.type_prefix(media_type, trash, kind))
    assert K.uuid_from_type_key(key) == uuid


# -- every write keeps exactly the keys of the records it leaves ---------------------------

ops = st.lists(
    st.tuples(
        st.sampled_from(["put", "put", "put", "delete"]),
        st.integers(0, 4),  # which of five uuids
        st.tuples(names, st.sampled_from(TYPES), st.booleans(), st.integers(0, 3),
                  st.integers(0, 3), st.integers(1, 3), st.sampled_from(["fs-a", "fs-b"])),
    ),
    max_size=25,
)


def expected_keys(recs: dict[str, dict[str, Any]]) -> dict[bytes, bytes]:
    out: dict[bytes, bytes] = {}
    stats: dict[bytes, list[int]] = {}
    for rec in recs.values():
        out[K.uuid_key(rec["uuid"])] = orjson.dumps(rec)
        out[K.path_key(get_field(rec, "path") or b"")] = record_path_value(rec)
        fid = record_fid_key(rec)
        assert fid is not None
        out[fid] = rec["uuid"].encode()
        for key in record_type_keys(rec):
            out[key] = b""
        for media_type in (rec["type"], K.ALL):
            slot = stats.setdefault(K.stats_key(media_type, rec["is_trash"]), [0, 0])
            slot[0] += 1
            slot[1] += rec["size"]
    for key, (count, total) in stats.items():
        out[key] = K.pack_stats(count, total)
    return out


@SETTINGS
@given(ops)
def test_writes_leave_no_stale_keys(steps: list[Any]) -> None:
    """After any put/delete sequence (path, type, trash, identity changes) the database holds
    exactly the keys derived from the surviving records, and stats equal a recount."""
    uuids = [str(uuidlib.UUID(int=i + 1)) for i in range(5)]
    model: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        lib = fresh_library(tmp)
        try:
            for op, idx, (name, mtype, trash, mt, sz, ino, fs) in steps:
                uuid = uuids[idx]
                if op == "delete":
                    if uuid in model:
                        old = model.pop(uuid)

                        def delete(txn: Any, old: dict[str, Any] = old) -> None:
                            w = lib.store.writer(txn)
                            w.delete(old)
                            w.finish()

                        lib.env.write(delete)
                    continue
                # Paths are unique per uuid (one file, one path); names vary freely.
                rec = make_record(uuid, b"/vol/%d/" % idx + name, mt, sz, mtype, trash,
                                  ino=ino * 10 + idx, fs_uuid=fs)
                old = model.get(uuid)
                model[uuid] = rec

                def put(txn: Any, rec: dict[str, Any] = rec,
                        old: dict[str, Any] | None = old) -> None:
                    w = lib.store.writer(txn)
                    w.put(rec, old)
                    w.finish()

                lib.env.write(put)
            want = expected_keys(model)
            with lib.env.read() as txn:
                have = {k: v for k, v in txn.cursor()
                        if k.startswith((b"media:", )) and not k.startswith(K.P_ROOT)}
            # Stats keys that dropped to zero may stay as (0, 0).
            have = {k: v for k, v in have.items()
                    if not (k.startswith(K.P_STATS) and K.unpack_stats(v) == (0, 0))}
            assert have == want
            assert lib.doctor(repair=False)["clean"]
        finally:
            lib.close()


@pytest.mark.parametrize("kind", K.KINDS)
def test_sort_key_rejects_nothing_real(kind: str) -> None:
    """Extremes of every kind encode to fixed-width, prefix-free keys."""
    lo = K.sort_key(kind, b"a", -(1 << 63), 0)
    hi = K.sort_key(kind, b"b", (1 << 63) - 1, (1 << 63) - 1)
    if kind.startswith(("mod", "size")):
        assert len(lo) == len(hi) == 20
    assert (lo < hi) == (not kind.endswith("desc"))
